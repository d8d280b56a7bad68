"""The lineup: migrate, resume, failures, two phases, stop, and several processes on one lineup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from bundler import tracking
from bundler.cli import main
from bundler.export import ExportOptions, export_root
from bundler.lineup import LineupOptions, RootSelector, run_lineup
from bundler.lineup.lineup import lineup_table
from bundler.progress import RecordingProgress
from tests.export import fixture
from tests.export.fixture import NOW

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING = [
    RootSelector("vendor", ("Carrier Ä", "Carrier B")),
    RootSelector("reseller", all=True),
    RootSelector("customer", all=True),
]


def add_customers(engine: sa.Engine, n: int, first_id: int = 1000) -> list[str]:
    """``n`` more small retail customers with one account each."""
    names = [f"extra-{i:03d}" for i in range(n)]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (i_customer, name, i_customer_type, iso_4217, i_taxation_method, "
                "i_billing_period, bill_status, balance, creation_date) "
                "VALUES (:i, :name, 1, 'USD', 1, 4, 'O', :balance, :created)"
            ),
            [
                {"i": first_id + i, "name": name, "balance": "1.50000", "created": NOW}
                for i, name in enumerate(names)
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO accounts (i_account, id, i_customer, i_product, iso_4217, billing_model, bill_status, "
                "balance, opening_balance, activation_date, blocked) "
                "VALUES (:i, :id, :c, 2, 'USD', 1, 'O', :z, :z, :d, 'N')"
            ),
            [
                {
                    "i": first_id + i,
                    "id": f"{name}-1",
                    "c": first_id + i,
                    "z": "0.00000",
                    "d": date(2026, 1, 1),
                }
                for i, name in enumerate(names)
            ],
        )
    return names


def statuses(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT name, bill_status FROM customers")).all())  # type: ignore[arg-type]


def loads_per_root(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tracking.loads_table.c.root_key)).scalars().all()
    counted: dict[str, int] = {}
    for key in rows:
        counted[key] = counted.get(key, 0) + 1
    return counted


def test_migrate_everything(new_db: Any, dialect: str, tmp_path: Path) -> None:
    source = fixture.build(new_db(dialect))
    target = fixture.build_target(new_db(dialect), "r2")
    progress = RecordingProgress()
    result = run_lineup(
        source, target, EVERYTHING, LineupOptions(tmp_path, now=NOW), workers=2, progress=progress
    )
    done = sorted(json.loads(o.root_key)["name"] for o in result.done)
    assert done == ["Carrier B", "Carrier Ä", "acme", "bravo", "distri", "reseller-r"]
    # "gone" was Exported by somebody else before: refused, listed, and the rest went on
    assert [(o.root_key, o.message[:41]) for o in result.failed] == [
        ('{"name":"gone"}', "export: customer name='gone' is already E")
    ]
    assert all(o.downtime_s and o.downtime_s > 0 for o in result.done)
    summary = result.summary()
    assert summary["downtime_s"]["max"] >= summary["downtime_s"]["p50"] > 0
    assert any("6 done" in note for note in progress.notes())
    assert loads_per_root(target) == {
        json.dumps({"name": n}, separators=(",", ":"), ensure_ascii=False): 1 for n in done
    }
    after = statuses(source)
    assert {
        n: after[n] for n in ("acme", "bravo", "distri", "reseller-r", "sub-reseller-r2")
    } == dict.fromkeys(("acme", "bravo", "distri", "reseller-r", "sub-reseller-r2"), "E")
    # a re-run skips what the target holds
    again = run_lineup(source, target, EVERYTHING, LineupOptions(tmp_path, now=NOW))
    assert again.done == [] and again.skipped == 6


def test_failed_load_restores_the_source_and_a_rerun_finishes(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    target = fixture.build_target(new_db("sqlite"), "r2")
    with target.begin() as conn:
        conn.execute(sa.text("DELETE FROM services WHERE name = 'Data'"))
    before = statuses(source)
    selection = [RootSelector("vendor", ("Carrier Ä",)), RootSelector("customer", ("acme", "bravo"))]
    result = run_lineup(source, target, selection, LineupOptions(tmp_path, now=NOW))
    assert [json.loads(o.root_key)["name"] for o in result.failed] == ["acme"]
    failure = result.failed[0]
    assert "services name='Data'" in (failure.message or "") and "bundle kept" in (failure.message or "")
    assert statuses(source)["acme"] == before["acme"] == "O"  # restored
    assert (tmp_path / f"{failure.bundle_id}.bundle").exists()
    with target.begin() as conn:
        conn.execute(sa.text("INSERT INTO services (i_service, name, unit) VALUES (102, 'Data', 'byte')"))
    retry = run_lineup(source, target, selection, LineupOptions(tmp_path, now=NOW))
    assert [json.loads(o.root_key)["name"] for o in retry.done] == ["acme"] and retry.skipped == 2


def test_resume_after_a_crash_between_export_and_load(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    target = fixture.build_target(new_db("sqlite"), "r2")
    run_lineup(source, target, [RootSelector("vendor", ("Carrier Ä",))], LineupOptions(tmp_path, now=NOW))
    # a worker exported acme, claimed in the lineup, then died before loading
    exported = export_root(source, "customer", "acme", tmp_path, options=ExportOptions(now=NOW))
    run_lineup(source, target, [RootSelector("customer", ("bravo",))], LineupOptions(tmp_path, now=NOW))
    with target.begin() as conn:
        system = conn.execute(sa.select(lineup_table.c.source_system)).scalars().first()
        conn.execute(
            lineup_table.insert().values(
                source_system=system,
                kind="customer",
                root_pk="4",
                phase="full",
                position=99,
                root_key='{"name":"acme"}',
                state="claimed",
                worker=f"{os.uname().nodename}:999999:1",
                claimed_at=tracking.now(),
                attempts=1,
            )
        )
    result = run_lineup(
        source, target, [RootSelector("customer", ("acme",))], LineupOptions(tmp_path, now=NOW)
    )
    assert [o.bundle_id for o in result.done] == [exported.bundle_id]  # loaded, not exported again
    with source.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM bundler_exports WHERE root_pk = '4'")).scalar() == 1


def test_two_phases(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    target = fixture.build_target(new_db("sqlite"), "r2")
    run_lineup(source, target, [RootSelector("vendor", ("Carrier Ä",))], LineupOptions(tmp_path, now=NOW))
    first = run_lineup(
        source, target, [RootSelector("customer", ("acme",))], LineupOptions(tmp_path, xdrs="none", now=NOW)
    )
    assert len(first.done) == 1
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM xdrs")).scalar() == 0
    second = run_lineup(
        source,
        target,
        [RootSelector("customer", ("acme",))],
        LineupOptions(tmp_path, xdrs="all", usage_only=True, now=NOW),
    )
    assert len(second.done) == 1 and second.done[0].bundle_id.startswith("usage-")
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM xdrs")).scalar() == 5


def test_stop_finishes_roots_in_flight_and_claims_nothing_new(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    names = add_customers(source, 6)
    target = fixture.build_target(new_db("sqlite"), "r2")
    stop = threading.Event()

    class StopAfterFirst(RecordingProgress):
        def note(self, message: str) -> None:
            super().note(message)
            stop.set()

    result = run_lineup(
        source,
        target,
        [RootSelector("customer", tuple(names))],
        LineupOptions(tmp_path, now=NOW),
        stop=stop,
        progress=StopAfterFirst(),
    )
    assert result.stopped and len(result.done) == 1
    after = statuses(source)
    assert sorted(after[n] for n in names) == ["E"] + ["O"] * 5  # none half way
    finish = run_lineup(
        source, target, [RootSelector("customer", tuple(names))], LineupOptions(tmp_path, now=NOW)
    )
    assert len(finish.done) == 5 and finish.skipped == 1


def test_several_processes_share_one_lineup(new_db: Any, dialect: str, tmp_path: Path) -> None:
    source_url, target_url = new_db(dialect), new_db(dialect)
    source = fixture.build(source_url)
    names = add_customers(source, 24)
    fixture.build_target(target_url, "r2")
    command = [
        sys.executable,
        "-m",
        "bundler",
        "migrate",
        "--source",
        source_url,
        "--target",
        target_url,
        "--bundles",
        str(tmp_path),
        "--xdrs",
        "all",
        "--json",
        "--workers",
        "2",
        *[arg for name in names for arg in ("--customer", name)],
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    migrated = [o["root"] for out, _ in outputs for o in json.loads(out)["per_root"] if o["state"] == "done"]
    assert sorted(migrated) == sorted(
        json.dumps({"name": n}, separators=(",", ":")) for n in names
    )  # exactly once
    target = sa.create_engine(target_url) if dialect != "sqlite" else fixture_engine(target_url)
    assert loads_per_root(target) == {json.dumps({"name": n}, separators=(",", ":")): 1 for n in names}
    target.dispose()


def fixture_engine(url: str) -> sa.Engine:
    from bundler.db import connect

    return connect(url)


def test_cli(new_db: Any, tmp_path: Path) -> None:
    source_url, target_url = new_db("sqlite"), new_db("sqlite")
    fixture.build(source_url)
    fixture.build_target(target_url, "r2")
    runner = CliRunner()
    args = ["migrate", "--source", source_url, "--target", target_url, "--bundles", str(tmp_path)]
    ok = runner.invoke(main, [*args, "--vendor", "Carrier Ä", "--customer", "acme"])
    assert ok.exit_code == 0, ok.output
    assert "2 root(s) migrated, 0 failed" in ok.stdout and "downtime per root: p50" in ok.stdout
    failed = runner.invoke(main, [*args, "--all", "--json"])
    assert failed.exit_code == 1
    summary = json.loads(failed.stdout)
    assert summary["failures"] == [
        {"root": "name='gone'", "kind": "customer", "reason": summary["failures"][0]["reason"]}
    ]
    assert "1 of" in failed.stderr
    usage = runner.invoke(main, [*args, "--where", "1=1"])
    assert usage.exit_code == 2
