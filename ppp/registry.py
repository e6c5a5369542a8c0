"""A tiny name -> factory registry, in the spirit of timm's @register_model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ppp.errors import choose

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = fn
            return fn

        return add

    def get(self, name: str) -> T:
        choose(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)
