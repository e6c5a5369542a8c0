"""Unlearning methods by name: each is `method(system, ctx, cfg) -> system`."""
from ppp.registry import Registry

METHODS: Registry = Registry("method")
