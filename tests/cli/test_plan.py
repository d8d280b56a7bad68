"""Plan before acting: list, migrate --plan (nothing changes), --all with vendors, --max-failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from bundler import tracking
from bundler.cli import main
from bundler.lineup.lineup import lineup_table
from tests.export import fixture


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(table.name):
            return 0
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_list_plan_and_max_failures(new_db: Any, tmp_path: Path) -> None:
    source_url, target_url = new_db("sqlite"), new_db("sqlite")
    source = fixture.build(source_url)
    target = fixture.build_target(target_url, "r2")
    with target.begin() as conn:
        conn.execute(sa.text("DELETE FROM services WHERE name = 'Data'"))
    runner = CliRunner()

    listed = runner.invoke(main, ["list", "--source", source_url, "--json"])
    assert listed.exit_code == 0, listed.output
    roots = json.loads(listed.stdout)
    kinds = [r["kind"] for r in roots]
    assert kinds.index("vendor") < kinds.index("customer") and "reseller" in kinds
    acme = next(r for r in roots if r["root"] == {"name": "acme"})
    assert acme["status"] == "O" and acme["rows"] > 1 and acme["tables"]["accounts"] == 3

    bundles = tmp_path / "bundles"
    args = [
        "migrate",
        "--source",
        source_url,
        "--target",
        target_url,
        "--bundles",
        str(bundles),
        "--all",
        "--xdrs",
        "all",
    ]
    planned = runner.invoke(main, [*args, "--plan", "--json"])
    assert planned.exit_code == 5, planned.output
    plan = json.loads(planned.stdout)
    assert [r["kind"] for r in plan["roots"]][:2] == ["vendor", "vendor"]  # --all brings vendors, first
    missing = plan["missing_prerequisites"]
    assert [(m["table"], m["key"]) for m in missing] == [("services", "name='Data'")]
    assert len(missing[0]["needed_by"]) >= 1 and "never created by a load" in missing[0]["brought_by"]
    assert all(r["bytes"] > 0 for r in plan["roots"] if not r["problem"])
    gone = next(r for r in plan["roots"] if r["root"] == {"name": "gone"})  # Exported by somebody else
    assert "already Exported" in gone["problem"]
    # nothing was marked, recorded or written
    assert count(source, tracking.exports_table) == 0 and count(target, lineup_table) == 0
    assert count(target, tracking.loads_table) == 0 and not bundles.exists()
    assert fixture_statuses_unchanged(source)

    stopped = runner.invoke(main, [*args, "--max-failures", "1", "--json"])
    assert stopped.exit_code == 1
    summary = json.loads(stopped.stdout)
    assert summary["stopped_early"] and summary["failed"] == 1


def fixture_statuses_unchanged(source: sa.Engine) -> bool:
    with source.connect() as conn:
        return (
            conn.execute(sa.text("SELECT bill_status FROM customers WHERE name = 'acme'")).scalar_one() == "O"
        )
