"""One small registry type behind every ``register_*`` decorator of fedkd.

Also the engine registry itself: :mod:`fedkd.engines` (the federation layer) fills it with
the built-in engines, and :mod:`fedkd.validation` checks ``engine`` names against it
without importing the layer above it. Any import of fedkd runs ``fedkd/__init__.py``,
which imports :mod:`fedkd.engines`, so the built-ins are always registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """Name -> implementation map with a decorator to add entries.

    Parameters
    ----------
    kind : str
        What the entries are ("loss", "fusion", ...), used in error messages.

    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` and return it unchanged."""

        def decorator(obj: T) -> T:
            self[name] = obj
            return obj

        return decorator

    def allowed(self) -> str:
        """Registered names, sorted and comma-separated."""
        return ", ".join(sorted(self))

    def lookup(self, name: str) -> T:
        """The entry ``name``; ``KeyError`` naming what is allowed otherwise."""
        if name not in self:
            raise KeyError(f"unknown {self.kind} '{name}'; allowed: {self.allowed()}")
        return self[name]


ENGINE_REGISTRY: Registry[Callable[..., Any]] = Registry("engine")
"""Grid factories ``fn(client_app, cfg, run_config) -> Grid`` by ``engine`` name."""
