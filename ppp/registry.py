"""A tiny name -> factory registry, in the spirit of timm's @register_model; an entry may carry the typed
schema (`ppp.schema`) of its config section."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ppp.errors import choose

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._schemas: dict[str, type] = {}

    def register(self, name: str, schema: type | None = None) -> Callable[[T], T]:
        """Register under `name`, with the typed schema (`ppp.schema`) of the config section it reads."""

        def add(fn: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = fn
            if schema is not None:
                self._schemas[name] = schema
            return fn

        return add

    def get(self, name: str) -> T:
        choose(self.kind, name, self._entries)
        return self._entries[name]

    def schema(self, name: str) -> type:
        """The schema registered with `name` (a ConfigError listing the valid names when unknown)."""
        choose(self.kind, name, self._entries)
        if name not in self._schemas:
            raise KeyError(f"{self.kind} '{name}' has no schema")
        return self._schemas[name]

    def names(self) -> list[str]:
        return sorted(self._entries)
