"""Unlearning methods. Importing this package registers every method."""

from ppp.methods import (  # noqa: F401  (registers the methods)
    baselines,
    clip_side,
    cliperase,
    dampening,
    fisher_forgetting,
    ppp_method,
    recent_baselines,
    reference,
)
from ppp.methods.context import UnlearnContext
from ppp.methods.registry import METHODS

__all__ = ["METHODS", "UnlearnContext"]
