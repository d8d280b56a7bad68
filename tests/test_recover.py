"""Every crash has a way back: SIGKILL real `bundler` processes at exact points
(``BUNDLER_TEST_KILL_AT``), then recover, and check that every root is either active in
exactly one system or in a bundle that loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bundler import tracking
from bundler.db import connect
from bundler.export import ExportOptions, export_root
from bundler.inspect.verify import verify_bundle
from bundler.load import load_bundle
from bundler.recover import KILL_ENV, recover
from bundler.reverse import reverse_export, reverse_load
from tests.export import fixture
from tests.export.fixture import NOW

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ExportOptions(now=NOW, xdrs="all")


def bundler(*args: Any, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "bundler", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def killed(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


def statuses(engine: sa.Engine) -> dict[str, str]:
    """Every customer's and account's status."""
    with engine.connect() as conn:
        found = {r[0]: r[1] for r in conn.execute(sa.text("SELECT name, bill_status FROM customers"))}
        found.update({r[0]: r[1] for r in conn.execute(sa.text("SELECT id, bill_status FROM accounts"))})
    return found


def exports(engine: sa.Engine) -> dict[str, Any]:
    """bundler_exports by bundle id."""
    with engine.connect() as conn:
        return {r.bundle_id: r for r in conn.execute(sa.select(tracking.exports_table))}


def marks(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(tracking.export_marks_table)).scalar_one()
        )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp-*")) if folder.exists() else []


def only(records: dict[str, Any]) -> Any:
    """The one export record (a lineup's configuration export, which marks nothing, left out)."""
    (record,) = (r for r in records.values() if r.kind != "config")
    return record


# -- export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["marked", "usage", "renamed"])
def test_export_killed_then_recovered(new_db: Any, dialect: str, tmp_path: Path, point: str) -> None:
    source_url = new_db(dialect)
    source = fixture.build(source_url)
    before = statuses(source)
    out = tmp_path / "out"
    killed(
        bundler(
            "export",
            "--source",
            source_url,
            "--customer",
            "acme",
            "--xdrs",
            "all",
            "--out",
            out,
            kill_at=point,
        )
    )
    # the state a crash leaves: the root Exported, the record running, no complete bundle unless renamed
    record = only(exports(source))
    assert record.status == "running" and record.pid and record.out_dir == str(out.resolve())
    crashed = statuses(source)
    assert crashed["acme"] == "E" and crashed["acme-1"] == "E"
    assert bool(leftovers(out)) == (point == "usage")
    assert (out / f"{record.bundle_id}.bundle").exists() == (point == "renamed")

    done = bundler("recover", "--source", source_url, "--json")
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)
    (item,) = report["exports"]
    assert leftovers(out) == []
    record = only(exports(source))
    if point == "renamed":  # the bundle was complete: recorded done, and it loads
        assert item["action"] == "finished" and record.status == "done" and record.manifest_sha256
        assert statuses(source)["acme"] == "E"
        target = fixture.build_target(new_db(dialect), "r2")
        load_bundle(target, export_root(source, "vendor", "Carrier Ä", out, options=OPTIONS).path)
        assert load_bundle(target, out / f"{record.bundle_id}.bundle").outcome == "loaded"
        return
    changed = sum(1 for name, value in crashed.items() if value != before[name])
    assert item["action"] == "restored" and item["restored_rows"] == changed > 1
    assert record.status == "restored" and "process" in record.message
    assert statuses(source) == before and marks(source) == 0
    assert list(out.glob("*.bundle")) == []
    again = export_root(source, "customer", "acme", out, options=OPTIONS)  # a new export works
    assert verify_bundle(again.path).ok and statuses(source)["acme"] == "E"


def test_a_rerun_of_the_export_recovers_its_root_first(new_db: Any, tmp_path: Path) -> None:
    source_url = new_db("sqlite")
    source = fixture.build(source_url)
    out = tmp_path / "out"
    args = ("export", "--source", source_url, "--customer", "acme", "--xdrs", "all", "--out", out)
    killed(bundler(*args, kill_at="usage"))
    crashed = only(exports(source)).bundle_id
    rerun = bundler(*args, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert f"recovering an export that did not finish: {crashed}: restored" in rerun.stderr
    records = exports(source)
    assert records[crashed].status == "restored"
    (new,) = json.loads(rerun.stdout)
    assert records[new["bundle_id"]].status == "done" and leftovers(out) == []
    # killed after the bundle was in place: the re-run finishes that export and refuses a second one
    killed(bundler("export", "--source", source_url, "--customer", "bravo", "--out", out, kill_at="renamed"))
    refused = bundler("export", "--source", source_url, "--customer", "bravo", "--out", out)
    assert refused.returncode == 1
    assert "recovering an export that did not finish" in refused.stderr and "finished" in refused.stderr
    assert "bravo' is already Exported by bundle customer-bravo" in refused.stderr


def test_never_touches_a_live_export_and_asks_about_other_hosts(new_db: Any, tmp_path: Path) -> None:
    source_url = new_db("sqlite")
    source = fixture.build(source_url)
    before = statuses(source)
    out = tmp_path / "out"
    killed(bundler("export", "--source", source_url, "--customer", "acme", "--out", out, kill_at="marked"))
    record = only(exports(source))
    me = tracking.this_process()
    with source.begin() as conn:  # as if this very process (alive) were exporting it
        conn.execute(
            sa.update(tracking.exports_table).values(host=me.host, pid=me.pid, process_start=me.start)
        )
    report = recover(source)
    assert [i.action for i in report.items] == ["left"] and not report.undecided
    assert "still running" in report.items[0].message
    refused = bundler("export", "--source", source_url, "--customer", "acme", "--out", out)
    assert refused.returncode == 1 and f"is being exported by bundle {record.bundle_id}" in refused.stderr
    assert statuses(source)["acme"] == "E"
    with source.begin() as conn:  # another host: bundler cannot tell
        conn.execute(sa.update(tracking.exports_table).values(host="elsewhere.example", pid=1))
    asked = bundler("recover", "--source", source_url)
    assert asked.returncode == 1
    assert "another host (pid 1 on host elsewhere.example)" in asked.stdout
    assert f"bundler recover --bundle {record.bundle_id}` (or --force)" in asked.stdout
    assert statuses(source)["acme"] == "E"
    named = bundler("recover", "--source", source_url, "--bundle", record.bundle_id)
    assert named.returncode == 0, named.stderr
    assert "restored" in named.stdout and "remove it there" in named.stdout
    assert statuses(source) == before
    unknown = bundler("recover", "--source", source_url, "--bundle", "customer-nobody-1")
    assert unknown.returncode == 2 and "no export customer-nobody-1" in unknown.stderr


def test_tables_of_an_older_bundler_get_the_new_columns(new_db: Any, dialect: str, tmp_path: Path) -> None:
    url = new_db(dialect)
    source = fixture.build(url)
    with source.begin() as conn:  # bundler_exports as an older bundler made it
        conn.execute(sa.text("DROP TABLE bundler_exports"))
        old = sa.MetaData()
        sa.Table(
            "bundler_exports",
            old,
            *[
                sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                for c in tracking.exports_table.columns
                if c.name not in ("host", "pid", "process_start", "out_dir")
            ],
        )
        old.create_all(conn)
    source.dispose()
    fresh = connect(url)  # a new process: its engine has not looked at the columns yet
    result = export_root(fresh, "customer", "acme", tmp_path, options=OPTIONS)
    record = exports(fresh)[result.bundle_id]
    assert record.status == "done" and record.pid == os.getpid() and record.out_dir == str(tmp_path.resolve())


# -- reverse export ----------------------------------------------------------------------------


def _migrated(new_db: Any, dialect: str, out: Path) -> tuple[sa.Engine, str, sa.Engine]:
    source = fixture.build(new_db(dialect))
    target_url = new_db(dialect)
    target = fixture.build_target(target_url, "r2")
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", out, options=OPTIONS).path)
    load_bundle(target, export_root(source, "customer", "acme", out, options=OPTIONS).path)
    return source, target_url, target


@pytest.mark.parametrize("point", ["marked", "renamed"])
def test_reverse_export_killed_then_recovered(new_db: Any, tmp_path: Path, point: str) -> None:
    _reverse_killed(new_db, "sqlite", tmp_path, point)


def test_reverse_export_killed_on_each_database(new_db: Any, dialect: str, tmp_path: Path) -> None:
    _reverse_killed(new_db, dialect, tmp_path, "read")


def _reverse_killed(new_db: Any, dialect: str, tmp_path: Path, point: str) -> None:
    source, target_url, target = _migrated(new_db, dialect, tmp_path / "out")
    before = statuses(target)
    back = tmp_path / "back"
    killed(
        bundler("reverse", "export", "--db", target_url, "--customer", "acme", "--out", back, kill_at=point)
    )
    record = next(r for r in exports(target).values() if r.kind == "reverse")
    assert record.status == "running" and statuses(target)["acme"] == "E"
    refused = bundler("reverse", "export", "--db", target_url, "--customer", "acme", "--out", back)
    if point != "renamed":  # the re-run recovers by itself and goes on
        assert refused.returncode == 0, refused.stderr
        assert f"recovering an export that did not finish: {record.bundle_id}: restored" in refused.stderr
        assert exports(target)[record.bundle_id].status == "restored" and leftovers(back) == []
        new = next(r for r in exports(target).values() if r.kind == "reverse" and r.status == "done")
        assert (back / f"{new.bundle_id}.bundle").exists()
        return
    assert refused.returncode == 1 and "already Exported in the target by reverse bundle" in refused.stderr
    done = bundler("recover", "--target", target_url, "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)[0]["exports"] == []  # the re-run finished it already
    assert exports(target)[record.bundle_id].status == "done" and statuses(target)["acme"] == "E"
    assert statuses(target) != before
    applied = reverse_load(source, back / f"{record.bundle_id}.bundle")  # and the bundle loads
    assert applied.bundle_id == record.bundle_id


def test_recover_restores_a_reverse_export_in_the_target(new_db: Any, tmp_path: Path) -> None:
    _, target_url, target = _migrated(new_db, "sqlite", tmp_path / "out")
    before = statuses(target)
    back = tmp_path / "back"
    killed(
        bundler("reverse", "export", "--db", target_url, "--customer", "acme", "--out", back, kill_at="read")
    )
    assert leftovers(back)
    done = bundler("recover", "--target", target_url)
    assert done.returncode == 0, done.stderr
    assert ": restored: its process (pid" in done.stdout
    assert statuses(target) == before and leftovers(back) == []
    again = reverse_export(target, "acme", back, now=NOW)
    assert again.path.exists() and statuses(target)["acme"] == "E"


# -- migrate -----------------------------------------------------------------------------------


def _loads(target: sa.Engine) -> list[str]:
    """The roots loaded (the lineup's configuration loads, which have no root, left out)."""
    loads = tracking.loads_table
    with target.connect() as conn:
        return sorted(conn.execute(sa.select(loads.c.root_key).where(loads.c.kind != "config")).scalars())


def test_migrate_killed_while_exporting(new_db: Any, tmp_path: Path) -> None:
    _migrate_killed(new_db, "sqlite", tmp_path, "usage")


def test_migrate_killed_while_loading(new_db: Any, dialect: str, tmp_path: Path) -> None:
    _migrate_killed(new_db, dialect, tmp_path, "load")


def _migrate_killed(new_db: Any, dialect: str, tmp_path: Path, point: str) -> None:
    source_url, target_url = new_db(dialect), new_db(dialect)
    source = fixture.build(source_url)
    target = fixture.build_target(target_url, "r2")
    before = statuses(source)
    bundles = tmp_path / "bundles"
    args = ("migrate", "--source", source_url, "--target", target_url, "--bundles", bundles, "--xdrs", "all")
    first = bundler(*args, "--vendor", "Carrier Ä")
    assert first.returncode == 0, first.stderr
    killed(bundler(*args, "--customer", "acme", kill_at=point))
    record = next(r for r in exports(source).values() if r.kind == "customer")
    assert statuses(source)["acme"] == "E"
    done = bundler("recover", "--source", source_url, "--target", target_url, "--json")
    assert done.returncode == 0, done.stderr
    source_report, target_report = json.loads(done.stdout)
    assert target_report["released_lineup_claims"] == 1  # the dead worker's claim
    if point == "usage":  # killed while exporting: restored, active in the source again
        assert [e["action"] for e in source_report["exports"]] == ["restored"]
        assert statuses(source) == before and leftovers(bundles) == []
    else:  # killed while loading: the export was done and its bundle loads
        assert source_report["exports"] == [] and exports(source)[record.bundle_id].status == "done"
        assert _loads(target) == ['{"name":"Carrier Ä"}']  # the killed load left nothing
    again = bundler(*args, "--customer", "acme", "--json")
    assert again.returncode == 0, again.stderr
    assert _loads(target) == ['{"name":"Carrier Ä"}', '{"name":"acme"}']
    assert statuses(source)["acme"] == "E"


def test_a_rerun_of_migrate_recovers_its_root_first(new_db: Any, tmp_path: Path) -> None:
    source_url, target_url = new_db("sqlite"), new_db("sqlite")
    source = fixture.build(source_url)
    target = fixture.build_target(target_url, "r2")
    bundles = tmp_path / "bundles"
    args = ("migrate", "--source", source_url, "--target", target_url, "--bundles", bundles)
    killed(bundler(*args, "--vendor", "Carrier Ä", "--customer", "acme", kill_at="marked"))
    crashed = only(exports(source)).bundle_id
    again = bundler(*args, "--vendor", "Carrier Ä", "--customer", "acme", "--json")
    assert again.returncode == 0, again.stderr
    assert f"recovering an export that did not finish: {crashed}: restored" in again.stderr
    assert _loads(target) == ['{"name":"Carrier Ä"}', '{"name":"acme"}']
