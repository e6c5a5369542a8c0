"""Unlearning methods. Importing this package registers every method."""
from ppp.unlearn import reference  # noqa: F401  (registers original / retrain / bad)
from ppp.unlearn.context import UnlearnContext
from ppp.unlearn.registry import METHODS

__all__ = ["METHODS", "UnlearnContext"]
