"""Load: import bundles into the target.

The names are loaded on first use, so ``bundler --help`` (which imports the commands)
stays free of SQLAlchemy and Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bundler.load.load import (
        LoadResult,
        TablePlan,
        TargetCache,
        load_bundle,
    )

__all__ = [
    "LoadResult",
    "TablePlan",
    "TargetCache",
    "load_bundle",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("bundler.load.load"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
