"""Recordings sync: ``bundler recordings sync`` keeps the source's call recordings on the target.

The names are loaded on first use, so ``bundler --help`` stays free of SQLAlchemy and Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bundler.recordings.store import Store, StoreError, open_store
    from bundler.recordings.sync import (
        Failure,
        FileColumns,
        MirrorPlan,
        PassReport,
        TableReport,
        mirror_plans,
        run_every,
        stop_on_signals,
        sync_recordings,
    )

__all__ = [
    "Failure",
    "FileColumns",
    "MirrorPlan",
    "PassReport",
    "Store",
    "StoreError",
    "TableReport",
    "mirror_plans",
    "open_store",
    "run_every",
    "stop_on_signals",
    "sync_recordings",
]
_STORE = {"Store", "StoreError", "open_store"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        module = "bundler.recordings.store" if name in _STORE else "bundler.recordings.sync"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
