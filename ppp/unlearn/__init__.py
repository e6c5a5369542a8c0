"""Unlearning methods. Importing this package registers every method."""

from ppp.unlearn import baselines, clip_side, cliperase, dampening, ppp_method, reference  # noqa: F401  (registers the methods)
from ppp.unlearn.context import UnlearnContext
from ppp.unlearn.registry import METHODS

__all__ = ["METHODS", "UnlearnContext"]
