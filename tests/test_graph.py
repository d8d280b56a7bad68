"""The entity graphs: they validate, match the schema of their release, and refuse bad graphs."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bundler.billing import graphgen
from bundler.billing.schema import RELEASES, build_metadata
from bundler.errors import SpecError
from bundler.graph import GRAPHS_DIR, graph_for_release, parse_graph


@pytest.mark.parametrize("release", RELEASES)
def test_every_table_and_reference_of_the_release_is_in_its_graph(release: str) -> None:
    graph = graph_for_release(release)
    md = build_metadata(release)
    assert set(graph.tables) == set(md.tables)
    for table in md.tables.values():
        spec = graph.table(table.name)
        assert spec.column_names == tuple(c.name for c in table.columns)
        assert spec.pk == tuple(c.name for c in table.primary_key.columns)
        declared = {(r.column, r.table, r.target_column) for r in spec.references}
        for fk in table.foreign_keys:
            assert (fk.parent.name, fk.column.table.name, fk.column.name) in declared, (
                f"{table.name}.{fk.parent.name}"
            )
        for column in table.columns:
            if "ref" in column.info:
                target, target_column = column.info["ref"].split(".")
                assert (column.name, target, target_column) in declared
        for col in spec.columns:
            assert col.nullable == bool(table.c[col.name].nullable)


@pytest.mark.parametrize("release", RELEASES)
def test_committed_graph_is_the_generated_one(release: str) -> None:
    assert (GRAPHS_DIR / f"{release}.json").read_text() == graphgen.render(release)


@pytest.mark.parametrize("release", RELEASES)
def test_shipped_graph_validates_against_the_graph_schema(release: str) -> None:
    """graph_for_release trusts the shipped files; this is where they are checked."""
    doc = json.loads((GRAPHS_DIR / f"{release}.json").read_text())
    parse_graph(doc, path=f"{release}.json")  # raises SpecError on any schema violation
    broken = copy.deepcopy(doc)
    del broken["tables"]["xdrs"]["pk"]
    with pytest.raises(SpecError, match="does not validate"):
        parse_graph(broken, path=f"{release}.json")


def test_graph_facts_the_engine_relies_on() -> None:
    graph = graph_for_release("r1")
    assert graph.deferred == {("customers", "i_default_site")}
    assert graph.table("xdrs").scope == "usage" and graph.table("xdrs").time_column == "bill_time"
    assert not graph.table("xdrs").ref_by_column["i_account"].constraint  # declared without a foreign key
    assert graph.table("currencies").pk_kind == "natural"
    assert graph.table("hunt_group_members").pk_kind == "composite"
    order = graph.dependency_order
    assert order.index("customer_sites") > order.index("customers")
    assert order.index("rates") > order.index("tariffs") > order.index("currencies")
    assert {spec.name for spec, _ in graph.owned_children["customers"]} >= {
        "accounts",
        "customers",
        "invoices",
    }
    assert "customer_contacts" in graph_for_release("r2").tables


def _doc() -> dict[str, Any]:
    return json.loads((GRAPHS_DIR / "r1.json").read_text())


def test_a_not_null_cycle_is_refused() -> None:
    doc = _doc()
    for ref in doc["tables"]["customers"]["references"]:
        if ref["column"] == "i_default_site":
            ref["nullable"] = False
    with pytest.raises(SpecError, match="cycle of NOT NULL references among: customer_sites, customers"):
        parse_graph(doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["tables"]["accounts"]["references"][0].update(table="nope"),
            "references unknown table 'nope'",
        ),
        (
            lambda d: d["tables"]["accounts"].update(natural_key=["missing"]),
            "column 'missing' is not among its columns",
        ),
        (lambda d: d["tables"]["xdrs"].pop("time_column"), "xdrs: a usage table needs a time column"),
        (
            lambda d: d["tables"]["accounts"].update(scope="owned-ish"),
            "does not validate at tables/accounts/scope",
        ),
        (lambda d: d["roots"]["customer"].update(table="ghosts"), "root customer: unknown table 'ghosts'"),
        (
            lambda d: d["tables"]["customers"]["status"].update(column="bill_state"),
            "customers: status column 'bill_state' is not among its columns",
        ),
        (
            lambda d: d["tables"]["customers"]["billing_period"].update(column="period"),
            "customers: billing period column 'period' is not among its columns",
        ),
        (
            lambda d: d["roots"]["customer"].update(lookup=["name", "nickname"]),
            "root customer: customers has no column 'nickname'",
        ),
    ],
)
def test_a_broken_graph_is_refused_by_name(change: Any, message: str) -> None:
    doc = copy.deepcopy(_doc())
    change(doc)
    with pytest.raises(SpecError, match=message):
        parse_graph(doc, path="broken.json")
