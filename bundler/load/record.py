"""After the write: the root made active, the load recorded in ``bundler_loads``, and (once
committed) the shared rows it mapped told to the run's cache."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.keys import key_text
from bundler.load.cache import TargetCache
from bundler.load.state import LoadState, source_value
from bundler.sql import table_clause


def activate(state: LoadState) -> Any:
    """The root's new target key; an exported root (not of a usage bundle) is made active again."""
    root = state.manifest.root
    if root is None:
        return None
    table, _ = state.tr.translate_key(root.table, {})
    spec = state.graph.table(table)
    target_pk = state.idmap(table).get(source_value(spec, spec.pk[0], root.source_pk))
    if state.manifest.kind == "usage" or target_pk is None:
        return target_pk
    if spec.status is not None:
        t = table_clause(spec)
        state.conn.execute(
            sa.update(t)
            .where(t.c[spec.pk[0]] == target_pk, t.c[spec.status.column] == spec.status.exported)
            .values({spec.status.column: spec.status.active})
        )
    return target_pk


def record(state: LoadState, root_target_pk: Any) -> None:
    """The load's row in ``bundler_loads``."""
    manifest = state.manifest
    root = manifest.root
    state.conn.execute(
        tracking.loads_table.insert().values(
            bundle_id=state.bundle_id,
            kind=manifest.kind,
            root_table=root.table if root else None,
            root_source_pk=str(root.source_pk) if root else None,
            root_target_pk=str(root_target_pk) if root_target_pk is not None else None,
            root_key=key_text(root.natural_key)[:255] if root else None,
            source_system=manifest.source.system_id,
            manifest_sha256=state.bundle.manifest_sha256,
            depends_on=manifest.depends_on[0] if manifest.depends_on else None,
            loaded_at=tracking.now(),
            outcome="loaded",
            rows_created=sum(p.created for p in state.plans.values()),
            rows_reused=sum(p.reused for p in state.plans.values()),
        )
    )


def remember_shared(state: LoadState, cache: TargetCache) -> None:
    """Tell ``cache`` the target row of every shared row this (committed) load created or reused."""
    system = state.manifest.source.system_id
    for table, actions in state.actions.items():
        if len(state.graph.table(table).pk) != 1:
            continue
        idmap = state.idmap(table)
        pairs = {str(src): str(idmap.get(src)) for src in actions if idmap.get(src) is not None}
        cache.remember(system, table, pairs)
