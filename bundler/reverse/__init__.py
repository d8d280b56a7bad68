"""Retrop: carry a customer's usage and balances back from the target to the source.

The names are loaded on first use, so ``bundler --help`` (which imports the commands)
stays free of SQLAlchemy and Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bundler.reverse.reverse import (
        LIMITS,
        ReverseExportResult,
        ReverseLoadResult,
        reverse_export,
        reverse_load,
    )

__all__ = ["LIMITS", "ReverseExportResult", "ReverseLoadResult", "reverse_export", "reverse_load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("bundler.reverse.reverse"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
