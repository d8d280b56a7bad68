"""Exactness: export from r1, load into r2, export again, compare value by value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bundler.export import ExportOptions, export_root
from bundler.graph import graph_for_release
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import NOW
from tests.load.compare import differences

PAIRS = [
    ("sqlite", "sqlite"),
    ("postgresql", "postgresql"),
    ("mysql", "mysql"),
    ("mysql", "postgresql"),
    ("postgresql", "sqlite"),
]


@pytest.mark.parametrize(("source_dialect", "target_dialect"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_round_trip_is_exact(new_db: Any, tmp_path: Path, source_dialect: str, target_dialect: str) -> None:
    source = fixture.build(new_db(source_dialect))
    target = fixture.build_target(new_db(target_dialect), "r2")
    options = ExportOptions(now=NOW, xdrs="all")
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "a", options=options)
    first = export_root(source, "customer", "acme", tmp_path / "a", options=options)
    load_bundle(target, vendor.path)
    result = load_bundle(target, first.path)
    assert result.outcome == "loaded"
    again = export_root(
        target, "customer", "acme", tmp_path / "b", options=ExportOptions(now=NOW, xdrs="all", mark=False)
    )
    assert again.manifest.graph.release == "r2"
    assert differences(first.path, target, again.path, graph_for_release("r2")) == []
    # the split table and the new column came out of the translation, not from nowhere
    assert again.manifest.tables["customer_contacts"].rows == 1
    assert again.manifest.tables["xdrs"].rows == 5


def test_same_release_round_trip(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    target = fixture.build_target(new_db("sqlite"), "r1")
    options = ExportOptions(now=NOW, xdrs="all")
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "a", options=options)
    reseller = export_root(source, "reseller", "reseller-r", tmp_path / "a", options=options)
    load_bundle(target, vendor.path)
    load_bundle(target, reseller.path)
    again = export_root(
        target,
        "reseller",
        "reseller-r",
        tmp_path / "b",
        options=ExportOptions(now=NOW, xdrs="all", mark=False),
    )
    assert differences(reseller.path, target, again.path, graph_for_release("r1")) == []


def test_the_comparison_sees_a_single_changed_value(new_db: Any, tmp_path: Path) -> None:
    """Guard against a comparison that cannot fail: one digit changed in the target is found."""
    import sqlalchemy as sa

    source = fixture.build(new_db("sqlite"))
    target = fixture.build_target(new_db("sqlite"), "r2")
    options = ExportOptions(now=NOW, xdrs="all")
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp_path / "a", options=options).path)
    first = export_root(source, "customer", "acme", tmp_path / "a", options=options)
    load_bundle(target, first.path)
    with target.begin() as conn:
        conn.execute(sa.text("UPDATE xdrs SET charged_amount = '0.01235' WHERE call_id = 'call-1'"))
    again = export_root(
        target, "customer", "acme", tmp_path / "b", options=ExportOptions(now=NOW, xdrs="all", mark=False)
    )
    problems = differences(first.path, target, again.path, graph_for_release("r2"))
    assert len(problems) == 1 and problems[0].startswith("xdrs: 1 row(s) only in the first")
    assert "0.01234" in problems[0] and "0.01235" in problems[0]
