"""The checks a reverse transfer makes on the source, shared by ``reverse load`` and by
``reverse export`` (which makes them before it marks anything in the target)."""

from __future__ import annotations

import sqlalchemy as sa

from bundler import tracking
from bundler.errors import RootError
from bundler.graph import Graph
from bundler.keys import describe
from bundler.manifest import RootRef
from bundler.reverse.common import REVERSE_KIND, REVERSED, ROOT_KIND
from bundler.sql import table_clause


def check_root_row(connection: sa.Connection, graph: Graph, root: RootRef) -> None:
    """Refuse a customer the source no longer has, has terminated, or has taken back."""
    spec = graph.table(root.table)
    t = table_clause(spec)
    pk = spec.from_text(spec.pk[0], str(root.source_pk))
    row = connection.execute(sa.select(t).where(t.c[spec.pk[0]] == pk)).mappings().first()
    name = f"{ROOT_KIND} {describe(root.natural_key)}"
    if row is None:
        raise RootError(
            f"{name} ({spec.pk[0]}={pk}) is no longer in the source",
            hint="it cannot be returned; settle it by hand",
        )
    status = spec.status
    if status is not None:
        value = row[status.column]
        if value in status.terminated:
            raise RootError(
                f"{name} was terminated in the source ({status.column} = {value!r}): "
                "a customer terminated in the source cannot be restored",
                hint="settle its usage and balance by hand, or reopen it in the source first",
            )
        if value != status.exported:
            raise RootError(
                f"{name} is not Exported in the source ({status.column} = {value!r})",
                hint="the source has taken it back already (a restored export?); nothing to return",
            )


def check_export_record(
    connection: sa.Connection, root: RootRef, export_id: str, system_id: str, bundle_id: str
) -> None:
    """Refuse an export this source did not make, or one already reversed."""
    exports, loads = tracking.exports_table, tracking.loads_table
    row = connection.execute(sa.select(exports).where(exports.c.bundle_id == export_id)).first()
    if row is None or row.root_table != root.table or row.root_pk != str(root.source_pk):
        raise RootError(
            f"reverse bundle {bundle_id} is not for this source system: it returns "
            f"{ROOT_KIND} {describe(root.natural_key)} of export {export_id}, which this source "
            f"({system_id}) did not make",
            hint="apply it to the source the customer was exported from",
        )
    if row.status == REVERSED:
        other = connection.execute(
            sa.select(loads.c.bundle_id).where(
                loads.c.depends_on == export_id,
                loads.c.kind == REVERSE_KIND,
                loads.c.bundle_id != bundle_id,
            )
        ).first()
        by = f" by reverse bundle {other.bundle_id}" if other else ""
        raise RootError(
            f"export {export_id} was already reversed{by}", hint="a customer is returned once per export"
        )
