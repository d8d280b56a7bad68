"""Sensitive columns (the graph's ``sensitive``: passwords, card numbers, PINs) shown masked.

Every output that shows row values — ``inspect query`` (its DuckDB views), ``inspect diff``,
the load's decisions templates, ``--json`` results, ``--interactive`` questions and the
message of a value the target refuses (:class:`bundler.refusals.ValueRefused`) — shows a
sensitive value as :data:`MASK` (NULL stays NULL) unless ``--show-sensitive`` was given.
Comparisons still see the real values: a changed PIN is reported as changed, masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from bundler.secure import current

if TYPE_CHECKING:
    from bundler.graph import Graph

MASK = "********"


def masking() -> bool:
    """Whether sensitive values are masked in this process (not with ``--show-sensitive``)."""
    return not current().show_sensitive


@cache
def _shipped() -> dict[str, frozenset[str]]:
    """The sensitive columns of each table, over every shipped graph."""
    from bundler.graph import GRAPHS_DIR, graph_for_release

    found: dict[str, set[str]] = {}
    for path in sorted(GRAPHS_DIR.glob("*.json")):
        for name, spec in graph_for_release(path.stem).tables.items():
            found.setdefault(name, set()).update(spec.sensitive)
    return {name: frozenset(cols) for name, cols in found.items()}


def sensitive_columns(table: str, graph: Graph | None = None) -> frozenset[str]:
    """The sensitive columns of ``table``: as ``graph`` declares them, else as any shipped graph does."""
    if graph is not None and table in graph.tables:
        return frozenset(graph.tables[table].sensitive) | _shipped().get(table, frozenset())
    return _shipped().get(table, frozenset())


def shown(value: Any) -> Any:
    """A sensitive value as output shows it."""
    return value if value is None or not masking() else MASK


def masked_row(table: str, row: Mapping[str, Any], graph: Graph | None = None) -> dict[str, Any]:
    """``row`` with its sensitive values masked (unless ``--show-sensitive``)."""
    hidden = sensitive_columns(table, graph) if masking() else frozenset()
    return {c: (shown(v) if c in hidden else v) for c, v in row.items()}


def masked_select(table: str, columns: list[str], graph: Graph | None, source: str, prefix: str = "") -> str:
    """``SELECT {prefix}* FROM source`` for DuckDB, sensitive columns replaced by the mask."""
    from bundler.inspect.query import literal, qident

    hidden = [c for c in columns if c in sensitive_columns(table, graph)] if masking() else []
    if not hidden:
        return f"SELECT {prefix}* FROM {source}"
    replace = ", ".join(
        f"CASE WHEN {qident(c)} IS NULL THEN NULL ELSE {literal(MASK)} END AS {qident(c)}" for c in hidden
    )
    return f"SELECT {prefix}* REPLACE ({replace}) FROM {source}"
