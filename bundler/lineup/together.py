"""A unit of the lineup: roots that reference each other, migrated together.

The lineup's order (:mod:`bundler.lineup.order`) puts roots whose rows point at each other
in one unit, claimed whole by one worker. :func:`migrate_unit` exports each of them
(marking it Exported), then loads their bundles in one transaction
(:func:`bundler.load.together.load_together`): the references the first leaves open are set
by the later ones before the commit. If the load fails, every root of the unit gets its
status back in the source and keeps its bundle for the retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from bundler.errors import BundlerError
from bundler.export.layers import Layers
from bundler.graph import Graph
from bundler.lineup.root import (
    LineupOptions,
    RootOutcome,
    _Ready,
    describe_key,
    export_for_load,
    full_collections_held,
    load_failed,
    loaded_outcome,
)
from bundler.load import TargetCache
from bundler.load.together import load_together
from bundler.progress import Progress
from bundler.recover import crash_progress


def migrate_unit(
    source: sa.Engine,
    target: sa.Engine,
    source_system: str,
    rows: Sequence[Any],
    options: LineupOptions,
    progress: Progress,
    cache: TargetCache | None = None,
    graph: Graph | None = None,
    layers: Layers | None = None,
) -> list[RootOutcome]:
    """Export the roots of one unit (lineup rows), load them in one transaction; an outcome
    per root, in the order of ``rows``."""
    with full_collections_held():
        prepared: list[_Ready | RootOutcome] = [
            export_for_load(source, target, source_system, row, options, progress, graph, layers)
            for row in rows
        ]
        ready = [p for p in prepared if isinstance(p, _Ready)]
        if not ready:
            return [p for p in prepared if isinstance(p, RootOutcome)]
        names = ", ".join(f"{r.base['kind']} {describe_key(r.base['root_key'])}" for r in ready)
        progress.note(f"loading {names} in one transaction: their rows reference each other")
        try:
            loaded = load_together(
                target,
                [r.path for r in ready],
                written=[r.written for r in ready],
                decisions=options.decisions,
                spec=options.target_spec,
                progress=crash_progress(progress, "load"),
                cache=cache,
            )
        except BundlerError as exc:
            loaded = None
            outcomes = {id(r): load_failed(source, r, exc, options) for r in ready}
    if loaded is not None:  # after the commit, outside the hold: the checks loaded_outcome runs
        outcomes = {
            id(r): loaded_outcome(r, result, options) for r, result in zip(ready, loaded, strict=True)
        }
    return [outcomes[id(p)] if isinstance(p, _Ready) else p for p in prepared]


__all__ = ["migrate_unit"]
