"""Recordings sync: ``bundler recordings sync`` keeps the source's call recordings on the target."""

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
