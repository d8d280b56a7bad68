"""The lineup: migrate, resume, failures, two phases, stop, and several processes on one lineup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler import tracking
from bundler.bundle import open_bundle
from bundler.cli import main
from bundler.errors import BundlerError
from bundler.export import ExportOptions, export_root
from bundler.graph import graph_for_release
from bundler.lineup import LineupOptions, RootSelector, run_lineup
from bundler.lineup.lineup import lineup_table
from bundler.lineup.queue import kind_order, kind_tiers, retrying
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


def assign_dids(engine: sa.Engine, names: list[str]) -> None:
    """Give each customer's first account a DID number of vendor Carrier Ä: their loads need the
    vendor in the target first."""
    with engine.begin() as conn:
        accounts = conn.execute(
            sa.text("SELECT i_account FROM accounts WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": [f"{n}-1" for n in names]},
        ).scalars()
        conn.execute(
            sa.text(
                "INSERT INTO did_assignments (i_did_assignment, i_account, i_did_number, assigned_from) "
                "VALUES (:i, :a, :d, :t)"
            ),
            [
                {"i": 1000 + i, "a": a, "d": 1 + i % 2, "t": datetime(2025, 6, 1) + timedelta(minutes=i)}
                for i, a in enumerate(accounts)
            ],
        )


def statuses(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT name, bill_status FROM customers")).all())  # type: ignore[arg-type]


def loads_per_root(engine: sa.Engine) -> dict[str, int]:
    """Loads per root; the configuration loads (configuration first, once per run) apart."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tracking.loads_table.c.kind, tracking.loads_table.c.root_key)).all()
    counted: dict[str, int] = {}
    for kind, key in rows:
        if kind == "config":
            assert key is None
            continue
        counted[key] = counted.get(key, 0) + 1
    return counted


def config_loads(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        loads = tracking.loads_table
        return int(conn.execute(sa.select(sa.func.count()).where(loads.c.kind == "config")).scalar_one())


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
    assert config_loads(target) == 1  # configuration first, once
    # the roots' bundles refer to that layer for the configuration it carried
    customer_bundles = [o.bundle_id for o in result.done if o.kind == "customer"]
    assert customer_bundles and all(
        any(o.source_bundles for o in open_bundle(tmp_path / f"{b}.bundle").manifest.prerequisites.values())
        for b in customer_bundles
    )
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
            if "Exported in the source" in message:  # the first root is marked: it is in flight
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


@pytest.mark.slow
def test_several_processes_share_one_lineup(new_db: Any, dialect: str, tmp_path: Path) -> None:
    source_url, target_url = new_db(dialect), new_db(dialect)
    source = fixture.build(source_url)
    names = add_customers(source, 12)
    assign_dids(source, names)
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
        "--vendor",
        "Carrier Ä",
        *[arg for name in names for arg in ("--customer", name)],
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        for _ in range(2)  # two runs of two worker processes each
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    migrated = [
        json.dumps(o["root"], separators=(",", ":"), ensure_ascii=False)
        for out, _ in outputs
        for o in json.loads(out)["per_root"]
        if o["state"] == "done"
    ]
    everyone = [
        json.dumps({"name": n}, separators=(",", ":"), ensure_ascii=False) for n in ["Carrier Ä", *names]
    ]
    assert sorted(migrated) == sorted(everyone)  # exactly once, and never before the vendor
    target = sa.create_engine(target_url) if dialect != "sqlite" else fixture_engine(target_url)
    assert loads_per_root(target) == dict.fromkeys(everyone, 1)
    assert_barrier(target)
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
        {"root": {"name": "gone"}, "kind": "customer", "reason": summary["failures"][0]["reason"]}
    ]
    assert "1 of" in failed.stderr
    usage = runner.invoke(main, [*args, "--where", "1=1"])
    assert usage.exit_code == 2


def assert_barrier(target: sa.Engine) -> None:
    """Every customer and reseller was claimed after the last vendor finished."""
    t = lineup_table
    with target.connect() as conn:
        vendors_done = conn.execute(
            sa.select(sa.func.max(t.c.finished_at)).where(t.c.kind == "vendor")
        ).scalar_one()
        first_other = conn.execute(
            sa.select(sa.func.min(t.c.claimed_at)).where(t.c.kind != "vendor")
        ).scalar_one()
    assert vendors_done is not None and first_other is not None and first_other >= vendors_done


def test_kinds_go_in_the_graphs_tiers() -> None:
    graph = graph_for_release("r1")
    assert kind_tiers(graph) == {"customer": 1, "reseller": 1, "vendor": 0}
    assert sorted(graph.roots, key=kind_order(graph).__getitem__) == ["vendor", "customer", "reseller"]


def test_vendors_are_loaded_before_any_customer_is_claimed(new_db: Any, dialect: str, tmp_path: Path) -> None:
    source = fixture.build(new_db(dialect))
    names = add_customers(source, 8)
    assign_dids(source, [*names, "bravo"])
    target = fixture.build_target(new_db(dialect), "r2")
    # worker processes: whether one of them has to wait for the vendors depends on how fast
    # the others start, so the barrier is checked on the lineup's own times (assert_barrier)
    result = run_lineup(source, target, EVERYTHING, LineupOptions(tmp_path, now=NOW), workers=3)
    assert [o.root_key for o in result.failed] == ['{"name":"gone"}']  # never a missing DID number
    assert len(result.done) == 6 + len(names)
    assert_barrier(target)


def test_a_failed_vendor_does_not_stop_the_roots_after_it(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    target = fixture.build_target(new_db("sqlite"), "r2")
    with target.begin() as conn:  # only the vendor's connections need a routing category
        conn.execute(sa.text("DELETE FROM routing_categories"))
    selection = [RootSelector("vendor", ("Carrier Ä",)), RootSelector("customer", ("acme", "bravo"))]
    result = run_lineup(source, target, selection, LineupOptions(tmp_path, now=NOW), workers=2)
    failed = {json.loads(o.root_key)["name"]: o.message or "" for o in result.failed}
    assert sorted(failed) == ["Carrier Ä", "acme"]  # acme needs the vendor's DID number
    assert "routing_categories" in failed["Carrier Ä"] and "did_numbers" in failed["acme"]
    assert [json.loads(o.root_key)["name"] for o in result.done] == ["bravo"]
    assert statuses(source)["acme"] == "O"  # restored in the source


def test_all_with_named_roots(new_db: Any, tmp_path: Path) -> None:
    source_url, target_url = new_db("sqlite"), new_db("sqlite")
    fixture.build(source_url)
    target = fixture.build_target(target_url, "r2")
    args = ["migrate", "--source", source_url, "--target", target_url, "--bundles", str(tmp_path), "--json"]
    ran = CliRunner().invoke(
        main, [*args, "--vendor", "Carrier Ä", "--all", "--customer", "acme", "--customer", "4"]
    )
    assert ran.exit_code == 1, ran.output  # "gone" is Exported already; nothing else fails
    summary = json.loads(ran.stdout)
    assert [f["root"] for f in summary["failures"]] == [{"name": "gone"}]
    assert loads_per_root(target)['{"name":"acme"}'] == 1


def test_a_deadlock_on_the_lineup_is_retried() -> None:
    import pymysql

    calls: list[int] = []

    def deadlocking() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise sa.exc.OperationalError(
                "UPDATE bundler_lineup …", {}, pymysql.err.OperationalError(1213, "Deadlock")
            )
        return 42

    assert retrying(deadlocking) == 42 and len(calls) == 3

    def broken() -> int:
        calls.append(1)
        raise sa.exc.OperationalError(
            "UPDATE bundler_lineup …", {}, pymysql.err.OperationalError(1054, "Unknown")
        )

    calls.clear()
    with pytest.raises(sa.exc.OperationalError):
        retrying(broken)
    assert len(calls) == 1


def test_a_configuration_change_mid_lineup_travels(new_db: Any, tmp_path: Path) -> None:
    """A shared row edited in the source after the configuration went first is carried again
    by the next root's bundle, which then asks for the decision it needs."""
    source = fixture.build(new_db("sqlite"))
    names = add_customers(source, 3)
    target = fixture.build_target(new_db("sqlite"), "r2")

    class EditAfterFirst(RecordingProgress):
        def note(self, message: str) -> None:
            super().note(message)
            if message.startswith("customer name='extra-000': done"):
                with source.begin() as conn:
                    conn.execute(
                        sa.text("UPDATE products SET description = 'edited mid-run' WHERE i_product = 2")
                    )

    result = run_lineup(
        source,
        target,
        [RootSelector("customer", tuple(names))],
        LineupOptions(tmp_path, now=NOW),
        progress=EditAfterFirst(),
    )
    by_name = {json.loads(o.root_key)["name"]: o for o in result.outcomes}
    assert [o.state for o in result.outcomes] == ["done"] * 3
    first = open_bundle(tmp_path / f"{by_name['extra-000'].bundle_id}.bundle")
    assert "products" not in first.manifest.tables  # the configuration layer carried it
    later = open_bundle(tmp_path / f"{by_name['extra-001'].bundle_id}.bundle")
    carried = later.read_table("products", columns=["i_product", "description"]).to_pylist()
    assert carried == [{"i_product": 2, "description": "edited mid-run"}]
    assert "products" not in later.manifest.prerequisites  # carried, not referred to
    with target.connect() as conn:  # matched by name and reused (the decisions' default), never doubled
        homes = conn.execute(sa.text("SELECT count(*) FROM products WHERE name = 'Home SIP'")).scalar_one()
    assert homes == 1


@pytest.mark.slow
def test_worker_processes_stop_cleanly_and_a_killed_one_is_recovered(
    new_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker processes: a stop lets the roots in flight finish (none is left Exported without
    its load); a worker killed between export and load fails the run, and the next run loads
    its bundle. Exactly one load per root in the end."""
    source = fixture.build(new_db("sqlite"))
    names = add_customers(source, 6)
    target = fixture.build_target(new_db("sqlite"), "r2")
    selection = [RootSelector("customer", tuple(names))]
    stop = threading.Event()

    class StopAtFirstOutcome(RecordingProgress):
        def note(self, message: str) -> None:
            super().note(message)
            if ": done [" in message:
                stop.set()

    stopped = run_lineup(
        source,
        target,
        selection,
        LineupOptions(tmp_path, now=NOW),
        workers=2,
        stop=stop,
        progress=StopAtFirstOutcome(),
    )
    assert stopped.stopped and 1 <= len(stopped.done) < 6 and not stopped.failed
    exported = sorted(n for n, s in statuses(source).items() if s == "E" and n in names)
    assert exported == sorted(json.loads(o.root_key)["name"] for o in stopped.done)  # none half way
    with target.connect() as conn:
        held = conn.execute(sa.select(sa.func.count()).where(lineup_table.c.state == "claimed")).scalar_one()
    assert held == 0

    monkeypatch.setenv("BUNDLER_TEST_KILL_AT", "exported")  # every worker dies after its first export
    with pytest.raises(BundlerError, match="worker process"):
        run_lineup(source, target, selection, LineupOptions(tmp_path, now=NOW), workers=2)
    monkeypatch.delenv("BUNDLER_TEST_KILL_AT")
    finished = run_lineup(source, target, selection, LineupOptions(tmp_path, now=NOW), workers=2)
    assert not finished.failed
    assert loads_per_root(target) == {
        json.dumps({"name": n}, separators=(",", ":"), ensure_ascii=False): 1 for n in names
    }
    assert {n: s for n, s in statuses(source).items() if n in names} == dict.fromkeys(names, "E")
