"""Unlearning methods by name: each is `method(system, ctx, cfg) -> (system, diagnostics)`.

A method may change `system` in place, and returns its own diagnostics (a flat dict of numbers,
lists or strings) instead of writing into shared state, so that runs in one process stay independent.
"""

from ppp.registry import Registry
from ppp.schema import schema, setting


@schema
class MethodSettings:
    """Every method's section: `method.name`; a method's schema (registered with it) adds its keys."""

    name: str = setting()


METHODS: Registry = Registry("method")
