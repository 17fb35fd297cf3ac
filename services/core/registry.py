"""Registered names: the one way HeadForge maps a name in a config or request (a guidance backend, a
scene kind, a recipe stage, a face backend) to the code behind it.

    BACKENDS = Registry("guidance backend")
    BACKENDS.register("diffusers", "services.guidance.backbones.diffusers_loader:load_diffusers_backbone")
    @STAGES.register("optimise")                                                          # eager
    def optimise(ctx, params): ...

A lazy entry ("module:attribute") is imported on first get(), so a process loads only what it uses
(a guidance server without Triton never imports tritonclient). Adding an entry is one module plus one
registration line.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

from services.common.errors import InvalidArgument

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects (or lazily, "module:attribute" paths) of one kind, `what` naming it in errors."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str | None = None) -> Any:
        """register(name, obj_or_path), or @register(name) on a function or class. ValueError for a
        name registered twice (two modules claiming one name is a bug, not a choice)."""
        def add(obj):
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        if target is None:
            return add
        return add(target)

    def get(self, name: str, *, field: str | None = None) -> T:
        """The object; InvalidArgument(field or the kind's name) listing the known names when unknown."""
        if name not in self._entries:
            raise InvalidArgument(field or self.what.replace(" ", "_"),
                                  f"unknown {self.what} {name!r}; known: {self.names()}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attr)
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def items(self) -> list[tuple[str, T]]:
        """Every entry resolved (imports the lazy ones)."""
        return [(name, self.get(name)) for name in self.names()]

