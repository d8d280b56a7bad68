"""``reverse undo``, on the target: lift the Exported status a reverse export set, when the
reverse load cannot go on (the source refused it, or the customer is to stay)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.context import system_graph
from bundler.db import begin_write
from bundler.errors import RootError
from bundler.keys import describe
from bundler.marking import read_marks, restore_rows
from bundler.reverse.common import REVERSE_KIND, ROOT_KIND


@dataclass
class ReverseUndoResult:
    bundle_id: str
    customer: str
    restored_rows: int

    def summary(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id, "customer": self.customer, "restored_rows": self.restored_rows}

    def lines(self) -> list[str]:
        return [
            f"reverse export {self.bundle_id} undone: {self.customer} is active in the target again "
            f"({self.restored_rows} row(s) got their status back); the reverse bundle must not be loaded"
        ]


def _applied(source: sa.Engine, bundle_id: str) -> bool:
    loads = tracking.loads_table
    with source.connect() as connection:
        if not sa.inspect(connection).has_table(loads.name):
            return False
        row = connection.execute(
            sa.select(loads.c.outcome).where(loads.c.bundle_id == bundle_id, loads.c.kind == REVERSE_KIND)
        ).first()
    return row is not None and row.outcome == "loaded"


def reverse_undo(
    target_engine: sa.Engine,
    customer: str | int,
    *,
    source: sa.Engine | None = None,
    spec: str | Path | None = None,
) -> ReverseUndoResult:
    """Give every row the customer's last reverse export marked its status back, in one transaction.

    Refuses when no finished reverse export of the customer is on record, and (given the
    source) when the source has applied that reverse bundle already.
    """
    from bundler.reverse.export import _find_root

    with begin_write(target_engine) as connection:
        graph, _ = system_graph(connection, spec)
        root = _find_root(connection, graph, customer)
        exports = tracking.exports_table
        name = f"{ROOT_KIND} {describe(root.key)}"
        row = connection.execute(
            sa.select(exports.c.bundle_id)
            .where(exports.c.root_table == root.spec.name, exports.c.root_pk == str(root.pk))
            .where(exports.c.kind == REVERSE_KIND, exports.c.status == "done")
            .order_by(exports.c.started_at.desc())
        ).first()
        if row is None:
            raise RootError(
                f"{name} has no finished reverse export in this target: nothing to undo",
                hint="bundler reverse undo lifts what bundler reverse export marked",
            )
        bundle_id = str(row.bundle_id)
        if source is not None and _applied(source, bundle_id):
            raise RootError(
                f"reverse bundle {bundle_id} was applied to the source already: {name} is active there",
                hint="to bring it back to the target, migrate it again (bundler migrate)",
            )
        marks = read_marks(connection, graph, bundle_id)
        restore_rows(connection, graph, bundle_id, marks)
        connection.execute(
            sa.update(exports)
            .where(exports.c.bundle_id == bundle_id)
            .values(status="restored", finished_at=tracking.now(), message="undone by bundler reverse undo")
        )
    return ReverseUndoResult(bundle_id, name, marks.count)
