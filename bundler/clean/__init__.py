"""Clean: remove exactly what was transferred, from the target (by its ledger) or the source.

The names are loaded on first use, so ``bundler --help`` (which imports the command)
stays free of SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bundler.clean.clean import (
        CleanPlan,
        CleanRefused,
        CleanRequest,
        CleanResult,
        KeptRow,
        Selected,
        clean_now,
        plan_clean,
        run_clean,
    )

__all__ = [
    "CleanPlan",
    "CleanRefused",
    "CleanRequest",
    "CleanResult",
    "KeptRow",
    "Selected",
    "clean_now",
    "plan_clean",
    "run_clean",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("bundler.clean.clean"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
