"""A foreign schema end to end: graph inferred from the catalog, edited, then export →
load → re-export exact on and across SQLite, PostgreSQL and MariaDB, and migrate --spec."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler import tracking
from bundler.bundle import open_bundle
from bundler.cli import main
from bundler.errors import SpecError
from bundler.export import ExportOptions, export_root
from bundler.graph import parse_graph
from bundler.graphtools.infer import infer_graph
from bundler.load import load_bundle
from tests.foreign import library

NOW = datetime(2026, 11, 15, 12, 0, 0)
NEXT = {"sqlite": "postgresql", "postgresql": "mysql", "mysql": "sqlite"}


def _graph(engine: sa.Engine, path: Path) -> Path:
    inferred = infer_graph(engine, system="library", release="l1", roots={"member": "members"})
    tables = inferred.doc["tables"]
    assert tables["branches"]["scope"] == "prerequisite"
    assert tables["titles"]["natural_key"] == ["isbn"] and tables["titles"]["scope"] == "shared"
    assert tables["loans"]["scope"] == "owned" and tables["loan_lines"]["scope"] == "owned"
    assert all(t["doc"].startswith("REVIEW: ") for t in tables.values())
    path.write_text(json.dumps(library.edit(inferred.doc)))
    return path


def _rows(path: Path, table: str) -> list[dict[str, Any]]:
    bundle = open_bundle(path)
    return pq.read_table(bundle.table_path(table)).to_pylist() if table in bundle.tables() else []


def _ledger(engine: sa.Engine, bundle_id: str) -> dict[str, dict[str, str]]:
    ledger = tracking.ledger_table
    out: dict[str, dict[str, str]] = {}
    with engine.connect() as conn:
        for table, source, target in conn.execute(
            sa.select(ledger.c.table_name, ledger.c.source_pk, ledger.c.target_pk).where(
                ledger.c.bundle_id == bundle_id
            )
        ):
            out.setdefault(table, {})[source] = target
    return out


KEYS = {  # table -> its id column and the references to carried tables
    "titles": ("title_id", {}),
    "members": ("member_id", {}),
    "loans": ("loan_id", {"member_id": "members"}),
    "loan_lines": ("line_id", {"loan_id": "loans", "title_id": "titles"}),
}


def _same_after_mapping(first: Path, second: Path, ids: dict[str, dict[str, str]]) -> None:
    """Every row of ``first``, ids mapped through the ledger, is in ``second``: value by value."""
    for table, (pk, refs) in KEYS.items():
        mapped = []
        for row in _rows(first, table):
            row[pk] = int(ids[table][str(row[pk])])
            for col, target in refs.items():
                row[col] = int(ids[target][str(row[col])])
            mapped.append(row)
        again = _rows(second, table)
        assert sorted(mapped, key=lambda r, c=pk: r[c]) == sorted(again, key=lambda r, c=pk: r[c]), table
        schema_a = pq.read_schema(open_bundle(first).table_path(table))
        assert schema_a.equals(pq.read_schema(open_bundle(second).table_path(table)), check_metadata=False)


def test_round_trip_on_and_across_databases(new_db: Any, dialect: str, tmp_path: Path) -> None:
    source = library.build(new_db(dialect), dialect)
    spec = _graph(source, tmp_path / "library.json")
    options = ExportOptions(xdrs="all", now=NOW)
    first = export_root(source, "member", "C-17", tmp_path / "a", spec=spec, options=options)
    members = _rows(first.path, "members")
    assert [(m["card_no"], m["joined_at"], m["deposit"], m["vip"]) for m in members] == [
        ("C-17", library.JOINED[0], library.BIG, True)
    ]
    assert members[0]["photo"] == b"\x01\x02" and members[0]["prefs"] == '{"night": true}'
    assert sorted(r["loaned_at"] for r in _rows(first.path, "loans")) == library.LOANED[:2]
    assert sorted(r["line_id"] for r in _rows(first.path, "loan_lines")) == [1000, 1001, 1002]
    titles = {r["isbn"]: r for r in _rows(first.path, "titles")}
    assert (
        titles["978-83-240-0000-1"]["price"] == library.BIG
        and titles["978-83-240-0000-1"]["weight_kg"] == 1 / 3
    )
    assert titles["978-0-13-468599-1"]["meta"] == '{"lang": "pl",  "tags": ["epic"]}'
    assert not first.manifest.marked  # no status column: nothing was marked
    with pytest.raises(Exception, match="was exported already by bundle"):
        export_root(source, "member", "C-17", tmp_path / "a", spec=spec, options=options)

    other = NEXT[dialect]
    target = library.create_empty(new_db(other), other)
    load_bundle(target, first.path, spec=spec)
    again = export_root(target, "member", "C-17", tmp_path / "b", spec=spec, options=options)
    _same_after_mapping(first.path, again.path, _ledger(target, first.bundle_id))

    # a fresh copy (not claimed) of a root the target has: the load records refuse it
    copy = export_root(
        source,
        "member",
        "C-17",
        tmp_path / "c",
        spec=spec,
        options=ExportOptions(xdrs="all", now=NOW, mark=False),
    )
    with pytest.raises(Exception, match="was loaded already by bundle"):
        load_bundle(target, copy.path, spec=spec)


def test_graph_types_and_usage_trees_are_checked() -> None:
    doc = json.loads((Path(__file__).parent / "library.graph.json").read_text())
    graph = parse_graph(copy.deepcopy(doc))
    assert graph.usage_parent(graph.table("loan_lines")) == graph.table("loan_lines").ref_by_column["loan_id"]
    assert graph.all_kinds() == ["member"]
    wide = copy.deepcopy(doc)
    wide["tables"]["titles"]["columns"][3]["type"] = "decimal(39,10)"
    with pytest.raises(
        SpecError, match="titles.price: column type 'decimal\\(39,10\\)': decimals take 1 to 38 digits"
    ):
        parse_graph(wide)
    orphan = copy.deepcopy(doc)
    orphan["tables"]["loans"].pop("time_column")
    with pytest.raises(SpecError, match="loans: a usage table needs a time column"):
        parse_graph(orphan)


def test_migrate_with_spec_and_the_graph_checked_against_the_database(new_db: Any, tmp_path: Path) -> None:
    source = library.build(new_db("sqlite"), "sqlite")
    spec = _graph(source, tmp_path / "library.json")
    target_url = new_db("sqlite")
    library.create_empty(target_url, "sqlite")
    runner = CliRunner()
    src_url = str(source.url)
    common = ["--source", src_url, "--target", target_url, "--spec", str(spec), "--xdrs", "all"]
    result = runner.invoke(main, ["migrate", *common, "--all", "--bundles", str(tmp_path / "b"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["done"] == 2 and summary["failed"] == 0
    member_bundles = sorted(str(p) for p in (tmp_path / "b").glob("member-*.bundle"))
    result = runner.invoke(main, ["inspect", "summary", member_bundles[0]])
    assert result.exit_code == 0 and "kind" in result.stdout
    assert "marked Exported" not in result.stdout  # no status column: no mark is claimed
    with sa.create_engine(target_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM loan_lines").scalar() == 4
    result = runner.invoke(
        main,
        ["export", "--source", src_url, "--spec", str(spec), "--root", "member=C-18", "--out", str(tmp_path)],
    )
    assert result.exit_code == 1 and "was exported already by bundle" in result.stderr
    # the target's copy of a member goes with its usage tree (lines before their loans)
    result = runner.invoke(
        main,
        ["clean", "--db", target_url, "--side", "target", "--spec", str(spec), "--root", "member=C-17", "-y"],
    )
    assert result.exit_code == 0, result.output
    with sa.create_engine(target_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM loan_lines").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM loans").scalar() == 1

    # a graph naming columns the database lacks: all of them named, before anything is done
    doc = json.loads(spec.read_text())
    doc["tables"]["members"]["columns"].append({"name": "state", "type": "string", "nullable": False})
    doc["tables"]["members"]["status"] = {"column": "state", "active": "a", "exported": "x", "terminated": []}
    doc["tables"]["loans"]["columns"].append({"name": "at", "type": "timestamp[us]", "nullable": False})
    doc["tables"]["loans"]["time_column"] = "at"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    result = runner.invoke(main, ["graph", "check", "--spec", str(bad), "--db", src_url])
    assert result.exit_code == 1
    assert "lacks: members.state (status column) is missing" in result.stdout
    assert "lacks: loans.at (time column) is missing" in result.stdout
    with pytest.raises(
        SpecError, match=r"loans.at \(time column\) is missing; members.state \(status column\) is missing"
    ):
        export_root(source, "member", "C-18", tmp_path / "x", spec=bad, options=ExportOptions(mark=False))
