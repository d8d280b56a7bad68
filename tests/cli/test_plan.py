"""Plan before acting: list, migrate --plan (nothing changes), --all with vendors, --max-failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler import tracking
from bundler.cli import main
from bundler.export import export_root
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
    assert all(isinstance(r["root"], dict) for r in summary["per_root"])  # objects, not JSON in a string
    [group] = summary["failures_by_cause"]
    assert group["count"] == 1 and group["roots"][0]["root"] in ({"name": "gone"}, {"name": "acme"})
    check_report(summary)


def check_report(summary: dict[str, Any]) -> None:
    """The run's report: its data, its log, and its charts drawn by a real browser, offline."""
    report = summary["report"]
    data = json.loads(Path(report["json"]).read_text())
    done = [r for r in data["roots"] if r["state"] == "done"]
    assert done and all(r["end_s"] > r["start_s"] >= 0 for r in done)
    assert sum(t["rows"] for t in data["tables"].values()) == summary["rows"] > 0
    assert data["throughput"][-1]["rows"] == summary["rows"]
    assert data["failures"] == summary["failures_by_cause"]
    log = Path(report["log"]).read_text()
    assert "start lineup" in log and "FAILED" in log
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        assert not os.environ.get("BUNDLER_TEST_REQUIRE_SERVERS"), "chromium is missing: make chromium"
        pytest.skip("chromium is not installed (make chromium)")
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--proxy-server=127.0.0.1:9",
            "--virtual-time-budget=15000",
            "--dump-dom",
            Path(report["html"]).as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    # plotly draws each chart as SVG when its inline script runs: 6 charts, none left empty
    assert dom.count('class="main-svg"') >= 12 and dom.count('class="plot-container plotly"') == 6
    assert 'class="trace bars"' in dom and "scatterlayer" in dom


def fixture_statuses_unchanged(source: sa.Engine) -> bool:
    with source.connect() as conn:
        return (
            conn.execute(sa.text("SELECT bill_status FROM customers WHERE name = 'acme'")).scalar_one() == "O"
        )


def every_count(engine: sa.Engine) -> dict[str, int]:
    """Every table of the database (the bundler_* ones too) with its row count."""
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {
            name: int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one())
            for name in sorted(names)
        }


def test_plan_writes_nothing_anywhere(dialect: str, new_db: Any, tmp_path: Path) -> None:
    """migrate --plan, export --plan and load --plan leave both databases as they were: the
    same tables (no bundler_* table created), each with the same rows — on a target that has
    never been loaded into (not even a bundler_* table), and on one that has."""
    source_url, target_url = new_db(dialect), new_db(dialect)
    source = fixture.build(source_url)
    target = fixture.build_target(target_url, "r2")
    for engine in (source, target):  # as `db init` leaves them: only bundler_system
        with engine.begin() as conn:
            for name in sa.inspect(conn).get_table_names():
                if name.startswith("bundler_") and name != "bundler_system":
                    conn.execute(sa.text(f"DROP TABLE {name}"))
    runner = CliRunner()
    migrate = ["migrate", "--source", source_url, "--target", target_url, "--bundles", str(tmp_path / "b")]

    def unchanged(*args: str) -> None:
        before = every_count(source), every_count(target)
        result = runner.invoke(main, [*args, "--plan", "--json"])
        assert result.exit_code in (0, 1, 5), result.output  # 1: a root refused, 5: not ready
        after = every_count(source), every_count(target)
        changed = [
            (side, name, b.get(name), a.get(name))
            for side, b, a in zip(("source", "target"), before, after, strict=True)
            for name in sorted(set(b) | set(a))
            if b.get(name) != a.get(name)
        ]
        assert changed == [], (args, changed)

    unchanged(*migrate, "--all", "--xdrs", "all")
    unchanged("export", "--source", source_url, "--customer", "acme", "--out", str(tmp_path / "e"))
    bundle = str(export_root(source, "customer", "bravo", tmp_path).path)
    unchanged("load", "--target", target_url, bundle)
    assert runner.invoke(main, ["load", "--target", target_url, bundle]).exit_code == 0
    unchanged(*migrate, "--customer", "acme", "--customer", "bravo")
