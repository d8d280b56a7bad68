"""Recordings sync: incremental passes, crash safety, checks, migrated customers, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler.billing.recordings import make_recordings
from bundler.export import ExportOptions, export_root
from bundler.graph import graph_for_release
from bundler.load import load_bundle
from bundler.progress import RecordingProgress
from bundler.recordings import PassReport, Store, mirror_plans, open_store, sync_recordings
from bundler.recordings.commands import recordings
from bundler.recordings.store import safe_name
from bundler.recordings.sync import retry_table, watermark_table
from tests.export import fixture
from tests.export.fixture import NOW

REPO = Path(__file__).resolve().parents[2]
T1 = datetime(2026, 11, 1, 9, 0)
MINUTE = timedelta(minutes=1)


class World:
    """A source (r1) and a target (r2) database, each with its recordings store."""

    def __init__(self, new_db: Any, dialect: str, tmp_path: Path) -> None:
        self.new_db = new_db
        self.dialect = dialect
        self.tmp_path = tmp_path
        self.source = fixture.build(new_db(dialect))
        self.target = fixture.build_target(new_db(dialect), "r2")
        self.from_dir = tmp_path / "store-source"
        self.to_dir = tmp_path / "store-target"
        self.from_dir.mkdir()
        self.to_dir.mkdir()

    def make(self, n: int, *, seed: str, **kwargs: Any) -> list[dict[str, Any]]:
        return make_recordings(self.source, str(self.from_dir), n, seed=seed, **kwargs)

    def sync(self, to_store: str | Store | None = None, **kwargs: Any) -> PassReport:
        return sync_recordings(
            self.source, self.target, str(self.from_dir), to_store or str(self.to_dir), **kwargs
        )


@pytest.fixture
def world(new_db: Any, tmp_path: Path) -> World:
    return World(new_db, "sqlite", tmp_path)


@pytest.fixture
def world_on(new_db: Any, dialect: str, tmp_path: Path) -> World:
    return World(new_db, dialect, tmp_path)


def rows(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """call_id -> the row without its surrogate key."""
    with engine.connect() as conn:
        table = sa.Table("call_recordings", sa.MetaData(), autoload_with=conn)
        found = conn.execute(sa.select(table)).mappings().all()
    return {r["call_id"]: {k: v for k, v in r.items() if k != "i_call_recording"} for r in found}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_consistent(world: World) -> None:
    """Every target row has its file, of the right size and sha256; no temporary copy is left."""
    for row in rows(world.target).values():
        path = world.to_dir / row["file_name"]
        assert path.is_file(), f"row {row['call_id']} without its file"
        assert path.stat().st_size == row["file_size"] and sha(path) == row["sha256"]
    assert not list(world.to_dir.rglob("*.part"))


def assert_mirrored(world: World, call_ids: set[str] | None = None) -> None:
    """The source's rows (or the named ones) are in the target, value for value."""
    source, target = rows(world.source), rows(world.target)
    for call_id in call_ids if call_ids is not None else set(source):
        assert target[call_id] == source[call_id]
    assert_consistent(world)


def retries(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(retry_table)).mappings()]


# -- a store that fails the way disks and processes do ----------------------------------------------


class Killed(BaseException):
    """The process dies: nothing after this point runs (not an Exception, so nothing catches it)."""


class _Stream:
    def __init__(self, inner: pa.NativeFile, on_write: Any) -> None:
        self.inner = inner
        self.on_write = on_write

    def write(self, data: bytes) -> int:
        return int(self.inner.write(self.on_write(data)))

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.inner.close()


class FaultyStore(Store):
    """A local store whose writes can be killed half way or corrupted, file by file."""

    def __init__(self, path: Path, *, kill_at: int | None = None, corrupt: set[int] | None = None) -> None:
        super().__init__(pafs.LocalFileSystem(), str(path))
        self.kill_at = kill_at
        self.corrupt = corrupt or set()
        self.opened = 0

    def open_output(self, path: str) -> Any:
        self.opened += 1
        number = self.opened
        inner = super().open_output(path)

        def on_write(data: bytes) -> bytes:
            if number == self.kill_at:
                inner.write(data[: len(data) // 2])
                inner.close()
                raise Killed
            if number in self.corrupt:
                return bytes([data[0] ^ 0xFF]) + data[1:]
            return data

        return _Stream(inner, on_write)


# -- the graph ---------------------------------------------------------------------------------------


def test_what_is_mirrored_comes_from_the_graph() -> None:
    (plan,) = mirror_plans(graph_for_release("r1"), graph_for_release("r2"))
    assert plan.table == "call_recordings"
    assert plan.identity == ("call_id",) and plan.time_column == "recorded_at"
    assert "i_call_recording" not in plan.columns and "account_id" in plan.columns
    modules = sorted((REPO / "bundler" / "recordings").glob("*.py"))
    assert {"sync.py", "store.py", "plan.py", "table_sync.py"} <= {m.name for m in modules}
    for module in modules:
        assert "call_recordings" not in module.read_text()


def test_unsafe_file_names_are_refused() -> None:
    for name in ("/etc/passwd", "../up.wav", "a/../../b.wav", "a\\b.wav", "", "a/.b.wav.part"):
        with pytest.raises(Exception, match="file name"):
            safe_name(name)
    assert safe_name("2026/11/01/x.wav") == "2026/11/01/x.wav"


# -- passes ------------------------------------------------------------------------------------------


def test_new_recordings_appear_between_passes(world_on: World) -> None:
    world = world_on
    first = world.make(5, seed="a", when=T1)
    # equal timestamps, more of them than a page: none may be skipped or read twice
    same = world.make(7, seed="b", when=T1 + 10 * MINUTE, step=timedelta(0))
    report = world.sync(page_size=3)
    assert (report.copied, report.skipped, report.failed) == (12, 0, 0)
    assert report.copied_bytes == sum(r["file_size"] for r in first + same)
    assert_mirrored(world)

    later = world.make(4, seed="c", when=T1 + 30 * MINUTE)
    report = world.sync(page_size=3)
    assert report.copied == 4 and report.copied_bytes == sum(r["file_size"] for r in later)
    assert report.failed == 0
    # the lookback window (one hour) re-checks the earlier rows: already there, skipped
    assert report.skipped == 12 and report.skipped_bytes == sum(r["file_size"] for r in first + same)
    assert_mirrored(world)
    (table,) = report.tables
    assert table.watermark_time == T1 + 33 * MINUTE and table.watermark_key == {"call_id": "rec-c-00003"}

    again = world.sync(page_size=3)
    assert (again.copied, again.failed, again.copied_bytes) == (0, 0, 0)
    assert len(rows(world.target)) == 16


def test_second_pass_copies_nothing_and_rewrites_nothing(world: World) -> None:
    world.make(6, seed="a", when=T1)
    assert world.sync().copied == 6
    before = {p: p.stat().st_mtime_ns for p in world.to_dir.rglob("*.wav")}
    target_before = rows(world.target)
    report = world.sync(lookback=timedelta(0))
    # a zero window still re-checks the watermark's own timestamp (late rows sharing it)
    assert (report.copied, report.skipped, report.failed) == (0, 1, 0)
    report = world.sync()
    assert (report.copied, report.skipped, report.failed) == (0, 6, 0)
    assert {p: p.stat().st_mtime_ns for p in world.to_dir.rglob("*.wav")} == before
    assert rows(world.target) == target_before


def test_a_pass_killed_mid_copy_resumes(world: World) -> None:
    made = world.make(10, seed="a", when=T1)
    # pages of 4: page 1 (files 1-4) is committed, file 5 is copied, file 6 dies half written
    with pytest.raises(Killed):
        world.sync(FaultyStore(world.to_dir, kill_at=6), page_size=4)
    assert set(rows(world.target)) == {r["call_id"] for r in made[:4]}
    fifth = world.to_dir / made[4]["file_name"]
    assert fifth.is_file() and sha(fifth) == made[4]["sha256"]  # a file without its row: harmless
    assert len(list(world.to_dir.rglob("*.part"))) == 1  # the half-written copy
    for row in rows(world.target).values():  # never a row without its file
        assert sha(world.to_dir / row["file_name"]) == row["sha256"]

    report = world.sync(page_size=4)
    assert report.copied == 6 and report.in_place == 1 and report.failed == 0
    assert report.copied_bytes == sum(r["file_size"] for r in made[5:])
    assert_mirrored(world)


def test_a_stop_request_finishes_the_current_file_and_the_next_pass_goes_on(world: World) -> None:
    world.make(8, seed="a", when=T1)
    stop = threading.Event()

    class StopAfterThree(RecordingProgress):
        def advance(self, task: str, n: int = 1) -> None:
            super().advance(task, n)
            if self.done(task) == 3:
                stop.set()

    report = world.sync(progress=StopAfterThree(), stop=stop)
    assert report.stopped and report.copied == 3
    assert len(rows(world.target)) == 3
    assert_consistent(world)
    report = world.sync()
    assert report.copied == 5 and not report.stopped
    assert_mirrored(world)


def test_a_corrupted_copy_is_detected_and_redone(world: World) -> None:
    made = world.make(6, seed="a", when=T1)
    # a damaged file left (without its row) by an earlier interrupted pass
    damaged = world.to_dir / made[0]["file_name"]
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_bytes(b"RIFF truncated")
    # and the third copy of this pass is corrupted on its way to disk
    store = FaultyStore(world.to_dir, corrupt={3})
    report = world.sync(store)
    assert report.copied == 6 and report.failed == 0
    assert report.redone == 2  # the damaged file, and the corrupted copy
    assert_mirrored(world)


def test_a_copy_that_never_checks_out_fails_and_is_retried_next_pass(world: World) -> None:
    made = world.make(3, seed="a", when=T1)
    store = FaultyStore(world.to_dir, corrupt={2, 3, 4})  # every attempt at the second file
    report = world.sync(store)
    assert (report.copied, report.failed) == (2, 1)
    assert "differs from the source (3 attempts)" in report.failures[0].reason
    assert made[1]["call_id"] not in rows(world.target)
    assert [json.loads(r["key"]) for r in retries(world.target)] == [{"call_id": made[1]["call_id"]}]
    report = world.sync(lookback=timedelta(0))
    assert (report.copied, report.failed, report.tables[0].retried) == (1, 0, 1)
    assert retries(world.target) == []
    assert_mirrored(world)


def test_a_file_missing_in_the_source_is_reported_not_fatal(world: World) -> None:
    made = world.make(5, seed="a", when=T1)
    gone = world.from_dir / made[2]["file_name"]
    kept = gone.read_bytes()
    gone.unlink()
    progress = RecordingProgress()
    report = world.sync(progress=progress)
    assert (report.copied, report.failed) == (4, 1)
    assert report.failed_bytes == made[2]["file_size"]
    (failure,) = report.failures
    assert failure.key == {"call_id": made[2]["call_id"]} and failure.file_name == made[2]["file_name"]
    assert "missing in the source store" in failure.reason
    assert any("FAILED" in n and made[2]["call_id"] in n for n in progress.notes())
    assert report.tables[0].watermark_key == {"call_id": made[4]["call_id"]}  # moved on past it
    assert made[2]["call_id"] not in rows(world.target)
    assert_consistent(world)
    (entry,) = retries(world.target)
    assert entry["attempts"] == 1

    report = world.sync(lookback=timedelta(0))  # still missing: reported again
    assert report.failed == 1 and retries(world.target)[0]["attempts"] == 2

    gone.write_bytes(kept)  # the file comes back
    report = world.sync(lookback=timedelta(0))
    assert (report.copied, report.failed, report.tables[0].retried) == (1, 0, 1)
    assert retries(world.target) == []
    assert_mirrored(world)


def test_a_failed_recording_whose_row_left_the_source_is_dropped(world: World) -> None:
    made = world.make(2, seed="a", when=T1)
    (world.from_dir / made[0]["file_name"]).unlink()
    assert world.sync().failed == 1
    with world.source.begin() as conn:
        conn.execute(sa.text("DELETE FROM call_recordings WHERE call_id = :c"), {"c": made[0]["call_id"]})
    report = world.sync()
    assert report.failed == 0 and report.tables[0].dropped == 1
    assert retries(world.target) == []


def test_a_source_file_that_does_not_match_its_row_fails(world: World) -> None:
    made = world.make(2, seed="a", when=T1)
    (world.from_dir / made[1]["file_name"]).write_bytes(b"not the recording")
    report = world.sync()
    assert (report.copied, report.failed) == (1, 1)
    assert "does not match its metadata" in report.failures[0].reason
    assert not (world.to_dir / made[1]["file_name"]).exists()
    assert_consistent(world)


def test_late_rows_inside_the_lookback_are_found_older_ones_by_a_full_pass(world: World) -> None:
    world.make(3, seed="a", when=T1 + 3 * timedelta(hours=1))
    world.sync()
    late = world.make(1, seed="late", when=T1 + 3 * timedelta(hours=1) - 30 * MINUTE)
    very_late = world.make(1, seed="very-late", when=T1)
    report = world.sync()
    assert report.copied == 1 and late[0]["call_id"] in rows(world.target)
    assert very_late[0]["call_id"] not in rows(world.target)
    report = world.sync(full=True)
    assert report.copied == 1 and report.skipped == 4
    assert_mirrored(world)


def test_the_targets_own_file_under_the_same_name_is_not_overwritten(world: World) -> None:
    (made,) = world.make(1, seed="a", when=T1)
    # the target system recorded a call of its own under the same file name
    own_path = world.to_dir / made["file_name"]
    own_path.parent.mkdir(parents=True)
    own_path.write_bytes(b"the target's own recording")
    with world.target.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO call_recordings (call_id, account_id, recorded_at, duration, file_name, "
                "file_size, sha256) VALUES ('own-1', 'acme-1', :t, 1, :f, 26, :s)"
            ),
            {"t": T1, "f": made["file_name"], "s": sha(own_path)},
        )
    report = world.sync()
    assert report.failed == 1 and "not overwritten" in report.failures[0].reason
    assert own_path.read_bytes() == b"the target's own recording"
    assert made["call_id"] not in rows(world.target)


def test_recordings_of_a_customer_migrated_between_passes(world_on: World) -> None:
    world = world_on
    before = world.make(6, seed="before", when=T1, accounts=["acme-1", "acme-2", "bravo-1"])
    report = world.sync()
    assert report.copied == 6

    # acme migrates: vendor first, then the customer, from the source into the target
    options = ExportOptions(now=NOW, xdrs="all")
    out = world.tmp_path / "bundles"
    vendor = export_root(world.source, "vendor", "Carrier Ä", out, options=options)
    acme = export_root(world.source, "customer", "acme", out, options=options)
    load_bundle(world.target, vendor.path)
    load_bundle(world.target, acme.path)

    # the target now records acme's calls itself; the source goes on for bravo, and one
    # recording of acme made before the move reaches the source late
    own = make_recordings(
        world.target, str(world.to_dir), 2, seed="target", when=T1 + 20 * MINUTE, accounts=["acme-1"]
    )
    own_before = {r["call_id"]: r for r in own}
    after = world.make(3, seed="after", when=T1 + 20 * MINUTE, accounts=["bravo-1"])
    late = world.make(1, seed="late", when=T1 + 10 * MINUTE, accounts=["acme-2"])

    report = world.sync()
    assert (report.copied, report.failed) == (4, 0)
    assert_mirrored(world)
    target = rows(world.target)
    for call_id, row in own_before.items():  # the target's own recordings are untouched
        assert target[call_id] == row
    assert len(target) == len(before) + len(after) + len(late) + len(own)

    # every recording of the migrated customer is in the target, whichever system made it,
    # and its account (by natural id: nothing was remapped) is the migrated account
    with world.target.connect() as conn:
        acme_ids = set(
            conn.execute(
                sa.text(
                    "SELECT r.call_id FROM call_recordings r JOIN accounts a ON a.id = r.account_id "
                    "JOIN customers c ON c.i_customer = a.i_customer WHERE c.name = 'acme'"
                )
            ).scalars()
        )
    expected = {r["call_id"] for r in before + late if r["account_id"].startswith("acme")} | set(own_before)
    assert acme_ids == expected


def test_passes_report_progress(world: World) -> None:
    world.make(4, seed="a", when=T1)
    progress = RecordingProgress()
    world.sync(progress=progress)
    assert progress.totals() == {"recordings call_recordings": 4}
    assert progress.done("recordings call_recordings") == 4
    assert progress.finished() == ["recordings call_recordings"]


def test_state_lives_in_the_target(world: World) -> None:
    world.make(2, seed="a", when=T1)
    world.sync()
    with world.target.connect() as conn:
        (mark,) = conn.execute(sa.select(watermark_table)).mappings().all()
    assert mark["table_name"] == "call_recordings" and json.loads(mark["last_key"]) == {
        "call_id": "rec-a-00001"
    }
    assert not sa.inspect(world.source).has_table("bundler_recordings_sync")


# -- stores ------------------------------------------------------------------------------------------


def test_stores_are_folders_or_pyarrow_uris(tmp_path: Path) -> None:
    plain = open_store(str(tmp_path / "a"))
    uri = open_store(f"file://{tmp_path / 'b'}")
    for store in (plain, uri):
        store.write_bytes("x/y.wav", b"data")
        assert store.digest("x/y.wav") == (4, hashlib.sha256(b"data").hexdigest())
    assert (tmp_path / "a" / "x" / "y.wav").read_bytes() == b"data"
    assert (tmp_path / "b" / "x" / "y.wav").read_bytes() == b"data"
    copied = uri.copy_from(plain, "x/y.wav", size=4, sha256=hashlib.sha256(b"data").hexdigest())
    assert copied == 4


def test_sync_across_store_uris(world: World) -> None:
    world.make(3, seed="a", when=T1)
    report = sync_recordings(world.source, world.target, f"file://{world.from_dir}", f"file://{world.to_dir}")
    assert report.copied == 3
    assert_mirrored(world)


# -- the command -------------------------------------------------------------------------------------


def _args(world: World) -> list[str]:
    return [
        "sync",
        "--source",
        str(world.source.url),
        "--target",
        str(world.target.url),
        "--from",
        str(world.from_dir),
        "--to",
        str(world.to_dir),
    ]


def test_cli_one_pass(world: World) -> None:
    made = world.make(3, seed="a", when=T1)
    (world.from_dir / made[0]["file_name"]).unlink()
    runner = CliRunner()
    result = runner.invoke(recordings, [*_args(world), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["copied"]["files"] == 2 and doc["failed"]["files"] == 1
    assert doc["copied"]["bytes"] == sum(r["file_size"] for r in made[1:])
    assert doc["failures"][0]["key"] == {"call_id": made[0]["call_id"]}
    result = runner.invoke(recordings, _args(world))
    assert result.exit_code == 0
    assert "copied 0 file(s)" in result.stdout and "failed 1" in result.stdout
    assert "FAILED call_recordings call_id=rec-a-00000" in result.stdout


def test_cli_help_has_examples() -> None:
    runner = CliRunner()
    for args in ([], ["sync"]):
        result = runner.invoke(recordings, [*args, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output


def test_cli_every_stops_cleanly_on_sigterm(world: World) -> None:
    world.make(3, seed="a", when=T1)
    code = "from bundler.recordings.commands import recordings; recordings(prog_name='recordings')"
    process = subprocess.Popen(
        [sys.executable, "-c", code, *_args(world), "--every", "0.2", "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        second = json.loads(process.stdout.readline())
        assert first["copied"]["files"] == 3 and second["copied"]["files"] == 0
        time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "SIGTERM: stopping" in err
    assert_mirrored(world)
