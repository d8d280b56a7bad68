"""Compare two bundles row by row, after id mapping and the declared translation.

A bundle exported from the source (A) is translated to the target's release; a bundle
exported again from the target after loading A (B) is compared with it. Every id is
replaced by an identity both sides agree on: a row carried by the bundle becomes the
target id the ledger gave it (A) or has (B); a row named by natural key (a prerequisite)
becomes that key.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from bundler.bundle import open_bundle
from bundler.graph import Graph, graph_for_release
from bundler.keys import key_text, key_value
from bundler.ledger import entries as ledger_entries
from bundler.load.translate import translator_for


def _ledger(target: sa.Engine, bundle_id: str) -> dict[str, dict[str, str]]:
    maps: dict[str, dict[str, str]] = defaultdict(dict)
    with target.connect() as conn:
        for table, source, target_pk, _ in ledger_entries(conn, bundle_id):
            maps[table][source] = target_pk
    return maps


def canonical_rows(
    path: Any, graph: Graph, ids: dict[str, dict[str, str]] | None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the bundle in ``graph``'s release, ids replaced by shared identities."""
    bundle = open_bundle(path)
    manifest = bundle.manifest
    translator = translator_for(graph_for_release(manifest.graph.release), graph)
    prereq: dict[str, dict[str, str]] = {}
    for table, entry in manifest.prerequisites.items():
        t, _ = translator.translate_key(table, {})
        prereq[t] = {str(r.value): key_text(translator.translate_key(table, r.key)[1]) for r in entry.rows}
    carried = set(translator.tables(bundle.tables()))

    def ident(table: str, value: Any) -> Any:
        if value is None:
            return None
        if table in carried:
            text = str(value)
            return ("row", table, ids[table].get(text, f"unmapped:{text}") if ids is not None else text)
        return ("key", table, prereq.get(table, {}).get(str(value), f"unknown:{value}"))

    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in sorted(carried):
        spec = graph.table(table)
        rows = []
        for batch in translator.batches(bundle, table):
            for row in batch.to_pylist():
                values = []
                for col in spec.column_names:
                    ref = spec.ref_by_column.get(col)
                    if ref is not None:
                        values.append((col, ident(ref.table, row[col])))
                    elif col == spec.surrogate:
                        values.append((col, ident(table, row[col])))
                    else:
                        values.append((col, key_value(row[col])))
                rows.append(tuple(values))
        out[table] = sorted(rows, key=repr)
    return out


def differences(first: Any, target: sa.Engine, again: Any, graph: Graph) -> list[str]:
    """What differs between bundle ``first`` (loaded into ``target``) and ``again`` (exported from it)."""
    first_id = open_bundle(first).bundle_id
    a = canonical_rows(first, graph, _ledger(target, first_id))
    b = canonical_rows(again, graph, None)
    problems = []
    for table in sorted(set(a) | set(b)):
        rows_a, rows_b = a.get(table, []), b.get(table, [])
        if rows_a != rows_b:
            only_a = [r for r in rows_a if r not in rows_b]
            only_b = [r for r in rows_b if r not in rows_a]
            problems.append(
                f"{table}: {len(only_a)} row(s) only in the first, {len(only_b)} only in the second; "
                f"first: {only_a[:1]} second: {only_b[:1]}"
            )
    return problems
