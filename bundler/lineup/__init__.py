"""The lineup: ``bundler migrate``.

The names are loaded on first use, so ``bundler --help`` (which imports the commands)
stays free of SQLAlchemy and Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bundler.lineup.lineup import (
        LineupOptions,
        LineupResult,
        RootOutcome,
        RootSelector,
        run_lineup,
    )

__all__ = [
    "LineupOptions",
    "LineupResult",
    "RootOutcome",
    "RootSelector",
    "run_lineup",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("bundler.lineup.lineup"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
