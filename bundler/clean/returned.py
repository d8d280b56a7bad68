"""The stale copy of a root a reverse transfer returned: removed from the target before the
root is loaded again, inside that load's transaction.

After ``reverse export`` and ``reverse load`` the root lives in the source again; its copy in
the target stays Exported and is stale. A new export of the root brings everything back
(the usage it made on the target included, now that the source has it), so the load that
brings it first removes the copy: the root's whole owned closure in the target (the rows
loads created, the rows made on the target since, and the usage of all of them), with the
ledger rows that name them. Shared rows stay: the new load reuses them through the ledger.
A row outside the copy that still references it (another customer's CPE on one of its
accounts) stops the load, named, with nothing changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.clean.describe import kept_rows
from bundler.clean.execute import execute
from bundler.clean.model import CleanPlan, CleanRequest, Selected
from bundler.clean.plan import CleanSet
from bundler.clean.side import CleanScope
from bundler.clean.target import TargetSide
from bundler.errors import BundlerError
from bundler.graph import Graph, TableSpec
from bundler.keys import Key, describe
from bundler.progress import Progress
from bundler.sql import Closure, match_keys

REVERSE_KIND = "reverse"  # bundler_exports.kind of a reverse export (bundler.reverse.common)


@dataclass(frozen=True)
class ReturnedCopy:
    """A root of the target that a finished reverse export returned to its source."""

    spec: TableSpec
    pk: Any
    key: Key
    reverse_bundle: str


class _ReturnedSide(TargetSide):
    """The target side, for a returned copy: every row of its closure goes, all its usage too."""

    def transferred(self, spec: TableSpec, bundles: frozenset[str]) -> sa.ColumnElement[bool]:
        return sa.true()

    def returned_scope(self, copy: ReturnedCopy) -> CleanScope:
        loads = tracking.loads_table
        own = set(
            self.conn.execute(
                sa.select(loads.c.bundle_id).where(
                    loads.c.root_table == copy.spec.name,
                    loads.c.root_target_pk == str(copy.pk),
                    loads.c.kind != REVERSE_KIND,
                )
            ).scalars()
        )
        bundles = self._with_dependents(own)
        self._created(bundles)  # which load created each row: the loads all of whose rows go are forgotten
        closure = Closure(self.conn, self.graph, follow_shared=False)
        closure.add(copy.spec.name, closure.fetch(copy.spec, copy.spec.pk[0], [copy.pk]))
        what = f"{copy.spec.name} {describe(copy.key)} ({copy.spec.pk[0]} {copy.pk}), returned by {copy.reverse_bundle}"
        scope = CleanScope(what, bundles, closure, created=None)
        self._grow(scope)
        self.named.add((copy.spec.name, (copy.pk,)))
        return scope


def returned_copy(connection: sa.Connection, graph: Graph, table: str, key: Key) -> ReturnedCopy | None:
    """The target's row with natural key ``key`` in ``table``, if a finished reverse export returned it."""
    spec = graph.table(table)
    if len(spec.pk) != 1 or not sa.inspect(connection).has_table(tracking.exports_table.name):
        return None
    found = match_keys(connection, graph, spec, spec.pk[0], [key])
    if len(found) != 1:
        return None
    (pk,) = found.values()
    exports = tracking.exports_table
    row = connection.execute(
        sa.select(exports.c.bundle_id)
        .where(exports.c.root_table == spec.name, exports.c.root_pk == str(pk))
        .where(exports.c.kind == REVERSE_KIND, exports.c.status == "done")
        .order_by(exports.c.started_at.desc())
    ).first()
    if row is None:
        return None
    return ReturnedCopy(spec, pk, key, str(row.bundle_id))


def remove_returned(
    connection: sa.Connection, graph: Graph, copy: ReturnedCopy, progress: Progress
) -> dict[str, int]:
    """Remove the stale copy on ``connection`` (the caller's transaction); rows removed per table.

    Refuses (BundlerError, nothing removed by it) when rows outside the copy still use it.
    """
    side = _ReturnedSide(connection, graph)
    side.scopes.append(side.returned_scope(copy))
    cleanset = CleanSet(side)
    cleanset.merge()
    cleanset.settle()
    counts = cleanset.counts()
    closes, partly = side.closes(cleanset, counts)
    kept = kept_rows(cleanset)
    if kept:
        raise BundlerError(
            f"{copy.spec.name} {describe(copy.key)} is in the target already, returned to the source by "
            f"{copy.reverse_bundle}; its stale copy cannot be removed: "
            + "; ".join(k.line() for k in kept[:5])
            + ("; …" if len(kept) > 5 else ""),
            hint="remove or move what still uses it in the target, then load the bundle again",
        )
    plan = CleanPlan(
        request=CleanRequest(side="target"),
        side="target",
        side_reason="a returned copy",
        database=connection.engine.url.render_as_string(hide_password=True),
        release=graph.release,
        selected=[Selected(s.what, tuple(sorted(s.bundles))) for s in side.scopes],
        tables=counts,
        unlink=cleanset.unlinks(),
        kept=kept,
        closes=closes,
        partly=partly,
    )
    deleted, _, _ = execute(cleanset, plan, progress)
    connection.execute(
        sa.update(tracking.exports_table)
        .where(tracking.exports_table.c.bundle_id == copy.reverse_bundle)
        .values(
            message=f"its copy in the target was removed by a new load on {tracking.now():%Y-%m-%d %H:%M:%S}"
        )
    )
    return {t: n for t, n in deleted.items() if n}
