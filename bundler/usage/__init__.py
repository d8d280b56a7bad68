"""Late usage: carry the usage that reaches the source after a root was migrated, each row once.

:func:`catch_up` runs one pass over every migrated root (``bundler migrate --usage``);
:func:`follow` repeats passes until stopped (``bundler usage sync --every SECONDS``).

The names are loaded on first use, so ``bundler --help`` (which imports the commands)
stays free of SQLAlchemy and Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bundler.usage.catchup import CatchUpResult, RootUsage, catch_up, follow

__all__ = ["CatchUpResult", "RootUsage", "catch_up", "follow"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("bundler.usage.catchup"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
