"""What recordings sync mirrors: the ``mirror`` tables of the entity graph, checked.

Every table of scope ``mirror`` in the target's graph (also ``mirror`` in the source's) is
mirrored, with its natural key as the recording's identity, its time column as the order
of arrival, and three columns that describe its file (:class:`FileColumns`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bundler.errors import SpecError
from bundler.graph import Graph, Scope, TableSpec

__all__ = ["FileColumns", "MirrorPlan", "mirror_plans"]


@dataclass(frozen=True)
class FileColumns:
    """The columns of a mirror table that describe its file (a documented convention)."""

    name: str = "file_name"
    size: str = "file_size"
    sha256: str = "sha256"


@dataclass(frozen=True)
class MirrorPlan:
    """One mirrored table: its identity, its time column, what is copied, where its file is."""

    table: str
    identity: tuple[str, ...]
    time_column: str
    columns: tuple[str, ...]
    files: FileColumns


def mirror_plans(
    source_graph: Graph, target_graph: Graph, files: FileColumns | None = None
) -> list[MirrorPlan]:
    """The mirror tables of the target's graph, checked against the source's graph."""
    files = files or FileColumns()
    plans = [
        _plan_for(spec, source_graph, target_graph, files)
        for spec in sorted(target_graph.in_scope(Scope.MIRROR), key=lambda t: t.name)
    ]
    if not plans:
        raise SpecError(
            f"the entity graph {target_graph.path} has no table of scope 'mirror': nothing to sync"
        )
    return plans


def _plan_for(spec: TableSpec, source_graph: Graph, target_graph: Graph, files: FileColumns) -> MirrorPlan:
    """The plan of one mirror table of the target's graph, or a SpecError saying what is wrong."""
    where = f"mirror table {spec.name} of the entity graph {target_graph.path}"
    _check_target_table(spec, where, files)
    source = source_graph.tables.get(spec.name)
    if source is None or source.scope is not Scope.MIRROR:
        raise SpecError(f"{where} is not a mirror table in the source's graph {source_graph.path}")
    columns = tuple(c for c in spec.column_names if c != spec.surrogate)
    lacking = [c for c in columns if c not in source.column_names]
    if lacking:
        raise SpecError(
            f"{where}: the source's {spec.name} lacks column(s) {', '.join(lacking)}",
            hint="recordings sync copies rows as they are; both releases need the same columns",
        )
    assert spec.time_column  # checked by _check_target_table
    return MirrorPlan(spec.name, spec.natural_key, spec.time_column, columns, files)


def _check_target_table(spec: TableSpec, where: str, files: FileColumns) -> None:
    """The target's table has an identity, a time column and the file columns."""
    if not spec.natural_key:
        raise SpecError(f"{where} has no natural key (the recording's identity)")
    if not spec.time_column:
        raise SpecError(f"{where} has no time column (the order recordings arrive in)")
    file_columns = (files.name, files.size, files.sha256)
    missing = [c for c in file_columns if c not in spec.column_names]
    if missing:
        raise SpecError(
            f"{where} lacks the file column(s) {', '.join(missing)}",
            hint="a mirror table describes its file in columns file_name, file_size and sha256 "
            "(or pass other names as FileColumns)",
        )
