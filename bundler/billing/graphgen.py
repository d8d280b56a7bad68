"""Write the entity graph of each reference release from the annotations in its schema.

The schema (:mod:`bundler.billing.schema`) is the single place where the reference
system is described; ``bundle_spec/graphs/<release>.json`` is generated from it and
committed, because the engine reads only the JSON. A test keeps the two in step.

    python -m bundler.billing.graphgen          # rewrite bundle_spec/graphs/r1.json, r2.json
    python -m bundler.billing.graphgen --check  # exit 1 when a committed graph is stale
"""

from __future__ import annotations

import json
import sys
from typing import Any

from sqlalchemy import Integer, MetaData, Table

from bundler.billing.schema import CUSTOMER_TYPES, RELEASES, build_metadata
from bundler.graph import GRAPHS_DIR
from bundler.graphtools.types import graph_type

SYSTEM = "reference-billing"


def _type_name(sa_type: Any) -> str:
    return graph_type(sa_type)


def _pk_kind(table: Table) -> str:
    pk = list(table.primary_key.columns)
    if len(pk) > 1:
        return "composite"
    col = pk[0]
    return "surrogate" if isinstance(col.type, Integer) and "ref" not in col.info else "natural"


def _table_doc(table: Table) -> dict[str, Any]:
    info = table.info
    columns = []
    references = []
    for col in table.columns:
        entry: dict[str, Any] = {
            "name": col.name,
            "type": _type_name(col.type),
            "nullable": bool(col.nullable),
        }
        if col.server_default is not None:
            entry["default"] = str(col.server_default.arg)  # type: ignore[attr-defined]
        columns.append(entry)
        if "ref" in col.info:
            target_table, target_column = col.info["ref"].split(".")
            references.append(
                {
                    "column": col.name,
                    "table": target_table,
                    "target_column": target_column,
                    "nullable": bool(col.nullable),
                    "owner": bool(col.info.get("owner")),
                    "constraint": bool(col.foreign_keys),
                }
            )
    doc: dict[str, Any] = {}
    if info.get("doc"):
        doc["doc"] = info["doc"]
    doc.update(
        pk=[c.name for c in table.primary_key.columns],
        pk_kind=_pk_kind(table),
        scope=info["scope"],
        natural_key=list(info["natural_key"]),
        columns=columns,
        references=references,
    )
    for key in (
        "time_column",
        "charge",
        "sensitive",
        "status",
        "billing_period",
        "balance",
        "binding",
        "amount",
    ):
        if key in info:
            doc[key] = info[key]
    return doc


def _entities() -> dict[str, Any]:
    """What ``bundler clean`` can be asked to remove; a distributor is a customer too, as in export."""
    kinds = CUSTOMER_TYPES

    def named(table: str, pk: str, name: str = "name", **where: list[int]) -> dict[str, Any]:
        entry: dict[str, Any] = {"table": table, "lookup": [pk, name]}
        if where:
            entry["where"] = where
        return entry

    return {
        "customer": named("customers", "i_customer", i_customer_type=[kinds["retail"], kinds["distributor"]]),
        "distributor": named("customers", "i_customer", i_customer_type=[kinds["distributor"]]),
        "reseller": named("customers", "i_customer", i_customer_type=[kinds["reseller"]]),
        "vendor": named("vendors", "i_vendor"),
        "product": named("products", "i_product"),
        "tariff": named("tariffs", "i_tariff"),
        "access_level": named("access_levels", "i_acl"),
        "did_number": named("did_numbers", "i_did_number", "number"),
        "sim_card": named("sim_cards", "i_sim_card", "icc_id"),
        "cpe": named("cpe_inventory", "i_cpe", "mac"),
    }


def graph_document(release: str) -> dict[str, Any]:
    md: MetaData = build_metadata(release)
    lookup = ["i_customer", "name"]
    return {
        "$schema": "../graph.schema.json",
        "graph_version": 1,
        "system": SYSTEM,
        "release": release,
        "description": f"Entity graph of the reference billing system, release {release}. "
        "Generated from bundler/billing/schema.py by `python -m bundler.billing.graphgen`.",
        "roots": {
            "customer": {
                "table": "customers",
                "lookup": lookup,
                "where": {"i_customer_type": [CUSTOMER_TYPES["retail"], CUSTOMER_TYPES["distributor"]]},
                "all": 3,
            },
            "reseller": {
                "table": "customers",
                "lookup": lookup,
                "where": {"i_customer_type": [CUSTOMER_TYPES["reseller"]]},
                "all": 2,
            },
            "vendor": {"table": "vendors", "lookup": ["i_vendor", "name"], "all": 1},
        },
        "entities": _entities(),
        "tables": {name: _table_doc(table) for name, table in md.tables.items()},
    }


def render(release: str) -> str:
    return json.dumps(graph_document(release), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for release in RELEASES:
        path = GRAPHS_DIR / f"{release}.json"
        text = render(release)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(
            f"stale entity graph(s): {', '.join(stale)}; run python -m bundler.billing.graphgen",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
