"""Unlearning methods. Importing this package registers every method."""

from ppp.methods import baselines, clip_side, cliperase, dampening, ppp_method, recent_baselines, reference  # noqa: F401  (registers the methods)
from ppp.methods.context import UnlearnContext
from ppp.methods.registry import METHODS

__all__ = ["METHODS", "UnlearnContext"]
