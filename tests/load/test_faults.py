"""Issue 5: a load that dies half-way leaves the target exactly as it was; the re-run completes.

- A loader process killed with SIGKILL while it is writing (SQLite, PostgreSQL, MariaDB).
- A database that drops the loader's connection while it is writing (PostgreSQL, MariaDB),
  at two points: between two statements, and inside a bulk write (COPY / LOAD DATA) that
  is waiting for a lock.

After the fault every table of the target (billing tables and ``bundler_loads`` /
``bundler_ledger``) has the same rows as before the load; loading the same bundle again
completes and the customer round-trips exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bundler.billing.schema import build_metadata
from bundler.bulk import insert_arrow
from bundler.db import connect
from bundler.errors import DatabaseError
from bundler.export import ExportOptions, export_root
from bundler.graph import graph_for_release
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import NOW
from tests.load.compare import differences

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

REPO = Path(__file__).resolve().parents[2]
BATCH_ROWS = 2_000
FIRST_EXTRA_XDR = 1_000
WAIT_S = 90.0


# -- set-up ------------------------------------------------------------------------------------


def _add_usage(source: sa.Engine, n: int) -> None:
    """``n`` more xDRs of account 1 (acme-1) in the current billing period, written in bulk."""
    base = datetime(2026, 11, 1, 0, 0, 0, 123)
    ids = range(FIRST_EXTRA_XDR, FIRST_EXTRA_XDR + n)
    times = [base + timedelta(seconds=i) for i in range(n)]
    data = pa.table(
        {
            "i_xdr": pa.array(ids, pa.int64()),
            "i_account": pa.array([1] * n, pa.int64()),
            "i_service": pa.array([1] * n, pa.int64()),
            "i_dest": pa.array([(1, 2, None)[i % 3] for i in range(n)], pa.int64()),
            "call_id": pa.array([f"bulk-{i}" for i in ids]),
            "cli": pa.array(["442070000000"] * n),
            "cld": pa.array([None if i % 5 == 0 else f"49{i:09d}" for i in range(n)]),
            "connect_time": pa.array(times, pa.timestamp("us")),
            "disconnect_time": pa.array([t + timedelta(seconds=59) for t in times], pa.timestamp("us")),
            "bill_time": pa.array([t.replace(microsecond=0) for t in times], pa.timestamp("us")),
            "charged_amount": pa.array([Decimal(i % 997) / 100_000 for i in range(n)], pa.decimal128(16, 5)),
            "charged_quantity": pa.array([60] * n, pa.int64()),
            "used_quantity": pa.array([i % 61 for i in range(n)], pa.int64()),
            "account_balance": pa.array([Decimal("3.14159")] * n, pa.decimal128(16, 5)),
        }
    )
    with source.begin() as conn:
        insert_arrow(conn, build_metadata("r1").tables["xdrs"], data)


class Setup:
    """A target with the vendor loaded, and the customer bundle that is about to fail."""

    def __init__(self, new_db: Any, tmp_path: Path, extra_xdrs: int) -> None:
        self.source = fixture.build(new_db())
        _add_usage(self.source, extra_xdrs)
        self.extra_xdrs = extra_xdrs
        self.target_url = new_db()
        self.target = fixture.build_target(self.target_url, "r2")
        self.tmp_path = tmp_path
        options = ExportOptions(now=NOW, xdrs="all")
        vendor = export_root(self.source, "vendor", "Carrier Ä", tmp_path / "a", options=options)
        self.bundle = export_root(self.source, "customer", "acme", tmp_path / "a", options=options)
        assert self.bundle.manifest.tables["xdrs"].rows == 5 + extra_xdrs
        load_bundle(self.target, vendor.path)
        self.target.dispose()  # no idle pooled session on the target: the loader's is the only one
        self.before = snapshot(self.target_url)
        assert self.before["bundler_loads"][0] == 1 and self.before["bundler_ledger"][0] > 0

    @property
    def database(self) -> str:
        name = make_url(self.target_url).database
        assert name
        return name

    def assert_untouched(self) -> None:
        after = snapshot(self.target_url)
        changed = {
            t: (self.before.get(t), after.get(t))
            for t in set(self.before) | set(after)
            if self.before.get(t) != after.get(t)
        }
        assert changed == {}, f"the failed load left traces (table: (rows, sha) before, after): {changed}"

    def assert_rerun_completes(self) -> None:
        result = load_bundle(self.target, self.bundle.path, batch_rows=BATCH_ROWS)
        assert result.outcome == "loaded"
        assert result.tables["xdrs"].created == 5 + self.extra_xdrs
        again = export_root(
            self.target,
            "customer",
            "acme",
            self.tmp_path / "b",
            options=ExportOptions(now=NOW, xdrs="all", mark=False),
        )
        assert again.manifest.tables["xdrs"].rows == 5 + self.extra_xdrs
        assert differences(self.bundle.path, self.target, again.path, graph_for_release("r2")) == []
        # and the load is recorded once
        assert load_bundle(self.target, self.bundle.path).outcome == "already-loaded"


def snapshot(url: str) -> dict[str, tuple[int, str]]:
    """Every table of the database: its row count and a hash of its sorted rows."""
    engine = connect(url)
    try:
        out: dict[str, tuple[int, str]] = {}
        with engine.connect() as conn:
            metadata = sa.MetaData()
            metadata.reflect(bind=conn)
            for name, table in sorted(metadata.tables.items()):
                rows = sorted(repr(tuple(row)) for row in conn.execute(sa.select(table)))
                digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
                out[name] = (len(rows), digest)
        return out
    finally:
        engine.dispose()


def _admin(server_url: str) -> sa.Engine:
    return connect(server_url).execution_options(isolation_level="AUTOCOMMIT")


def _sessions(admin: sa.Engine, dialect: str, database: str, exclude: set[int] | None = None) -> list[int]:
    """Server sessions connected to ``database`` (other than the admin's own and ``exclude``)."""
    with admin.connect() as conn:
        if dialect == "postgresql":
            query = "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
        else:
            query = "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"
        ids = [int(i) for i in conn.execute(sa.text(query), {"db": database}).scalars()]
    return [i for i in ids if i not in (exclude or set())]


def _wait_until(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(0.05)


def _drop(admin: sa.Engine, dialect: str, database: str, exclude: set[int] | None = None) -> list[int]:
    """End every session on ``database`` from the server side, as a failing server would."""
    victims = _sessions(admin, dialect, database, exclude)
    with admin.connect() as conn:
        for session in victims:
            if dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": session})
            else:
                with contextlib.suppress(sa.exc.DBAPIError):  # it may have ended meanwhile
                    conn.exec_driver_sql(f"KILL CONNECTION {int(session)}")
    _wait_until(
        f"the server ended sessions {victims}",
        lambda: not set(victims) & set(_sessions(admin, dialect, database)),
    )
    return victims


# -- SIGKILL -----------------------------------------------------------------------------------

SIGKILL_EXTRA_XDRS = 20_000
SIGKILL_AFTER_ROWS = 6_000

# The loader process. Its progress writes MARKER once SIGKILL_AFTER_ROWS rows are written
# (well inside the xDRs), then slows each later batch down a little so that the parent's
# SIGKILL always lands before the commit; MARKER.done would say the load got to its end.
CHILD = r"""
import os, sys, time
from bundler.db import connect
from bundler.load import load_bundle

url, bundle, marker, after, batch_rows = sys.argv[1:6]


class Marker:
    rows = 0

    def start(self, task, total=None):
        pass

    def advance(self, task, n=1):
        self.rows += n
        if self.rows >= int(after):
            if not os.path.exists(marker):
                with open(marker + ".tmp", "w") as f:
                    f.write(str(self.rows))
                os.replace(marker + ".tmp", marker)
            time.sleep(0.2)

    def finish(self, task):
        pass

    def note(self, message):
        pass


load_bundle(connect(url), bundle, progress=Marker(), batch_rows=int(batch_rows))
open(marker + ".done", "w").close()
"""


def test_sigkill_mid_write_leaves_the_target_as_it_was(
    dialect: str, new_db: Any, tmp_path: Path, server_url: str
) -> None:
    setup = Setup(new_db, tmp_path, SIGKILL_EXTRA_XDRS)
    marker = tmp_path / "writing"
    log = tmp_path / "child.log"
    with log.open("w") as out:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                setup.target_url,
                str(setup.bundle.path),
                str(marker),
                str(SIGKILL_AFTER_ROWS),
                str(BATCH_ROWS),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + WAIT_S
            while not marker.exists():
                if child.poll() is not None:
                    pytest.fail(
                        f"the loader ended ({child.returncode}) before writing: {log.read_text()[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    pytest.fail("the loader did not start writing in time")
                time.sleep(0.01)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=WAIT_S)
    assert child.returncode == -signal.SIGKILL
    assert not Path(f"{marker}.done").exists(), "the load finished before the kill: the test proved nothing"
    assert int(marker.read_text()) >= SIGKILL_AFTER_ROWS

    if dialect == "sqlite":
        path = make_url(setup.target_url).database
        assert path
        raw = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            # not locked forever: a writer gets in at once; and the file is sound
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("ROLLBACK")
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert raw.execute("SELECT count(*) FROM xdrs").fetchone() == (0,)
        finally:
            raw.close()
    else:
        # the server noticed the dead client and rolled its transaction back
        admin = _admin(server_url)
        try:
            _wait_until(
                "the killed loader's session ended", lambda: _sessions(admin, dialect, setup.database) == []
            )
        finally:
            admin.dispose()
    setup.assert_untouched()
    setup.assert_rerun_completes()


# -- the database drops the connection ---------------------------------------------------------

DROP_EXTRA_XDRS = 10_000
DROP_AFTER_ROWS = 4_000


class _DropWhenWriting:
    """Progress that ends the loader's session from the server side once rows are being written."""

    def __init__(self, admin: sa.Engine, dialect: str, database: str) -> None:
        self.admin, self.dialect, self.database = admin, dialect, database
        self.rows = 0
        self.dropped: list[int] = []

    def start(self, task: str, total: int | None = None) -> None:
        pass

    def advance(self, task: str, n: int = 1) -> None:
        self.rows += n
        if self.rows >= DROP_AFTER_ROWS and not self.dropped:
            self.dropped = _drop(self.admin, self.dialect, self.database)

    def finish(self, task: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass


def _assert_went_away(exc: BaseException) -> None:
    text = str(exc)
    assert "\n" not in text, text
    assert "went away" in text and "nothing was committed" in text, text


SERVERS = pytest.mark.parametrize(
    "dialect", ["postgresql", "mysql"], ids=["postgresql", "mariadb"], indirect=True
)


@SERVERS
def test_connection_dropped_between_statements(
    dialect: str, new_db: Any, tmp_path: Path, server_url: str
) -> None:
    """The session ends while the loader is between two statements of the write."""
    setup = Setup(new_db, tmp_path, DROP_EXTRA_XDRS)
    admin = _admin(server_url)
    try:
        progress = _DropWhenWriting(admin, dialect, setup.database)
        with pytest.raises(Exception) as info:
            load_bundle(setup.target, setup.bundle.path, progress=progress, batch_rows=BATCH_ROWS)

        assert len(progress.dropped) == 1, "exactly the loader's session was ended"
        assert isinstance(info.value, DatabaseError), (
            f"{type(info.value).__module__}.{type(info.value).__name__}: {info.value}"
        )
        _assert_went_away(info.value)
    finally:
        admin.dispose()
    setup.target.dispose()
    setup.assert_untouched()
    setup.assert_rerun_completes()


@SERVERS
def test_connection_dropped_inside_a_bulk_write(
    dialect: str, new_db: Any, tmp_path: Path, server_url: str
) -> None:
    """The session ends while a bulk write (COPY / LOAD DATA of the ledger) is in flight.

    Another transaction holds an uncommitted ledger range with the key of the bundle's run
    of extra xDRs, so the loader's bulk insert of that range waits for it; the loader's
    session is ended while it waits, then the blocker rolls back.
    """
    setup = Setup(new_db, tmp_path, DROP_EXTRA_XDRS)
    admin = _admin(server_url)
    blocker_engine = connect(setup.target_url)
    blocker = blocker_engine.connect()
    outcome: dict[str, Any] = {}
    try:
        if dialect == "postgresql":
            blocker_id = int(blocker.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        else:
            blocker_id = int(blocker.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())
        blocker.execute(
            sa.text(
                "INSERT INTO bundler_ledger_ranges "
                "(bundle_id, table_name, source_first, source_last, target_first, target_last) "
                "VALUES (:b, 'xdrs', :first, 0, 0, 0)"
            ),
            {"b": setup.bundle.bundle_id, "first": FIRST_EXTRA_XDR},
        )

        def loader_waits() -> bool:
            with admin.connect() as conn:
                if dialect == "postgresql":
                    query = (
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND pid <> :blocker "
                        "AND wait_event_type = 'Lock' AND query LIKE 'COPY%bundler_ledger%'"
                    )
                else:
                    # (not information_schema.innodb_trx: InnoDB refreshes it only when nobody
                    # read it for 0.1 s, so a poll loop keeps seeing a stale state)
                    query = (
                        "SELECT count(*) FROM information_schema.processlist WHERE db = :db AND id <> :blocker "
                        "AND info LIKE 'LOAD DATA%bundler_ledger%' AND time_ms > 1000"
                    )
                return bool(
                    conn.execute(sa.text(query), {"db": setup.database, "blocker": blocker_id}).scalar()
                )

        def drop_when_blocked() -> None:
            try:
                _wait_until("the loader waits inside its bulk write", loader_waits)
                outcome["dropped"] = _drop(admin, dialect, setup.database, exclude={blocker_id})
            except BaseException as exc:  # reported by the main thread
                outcome["error"] = exc

        killer = threading.Thread(target=drop_when_blocked, daemon=True)
        killer.start()
        with pytest.raises(Exception) as info:
            load_bundle(setup.target, setup.bundle.path, batch_rows=BATCH_ROWS)
        killer.join(WAIT_S)
        assert "error" not in outcome, outcome.get("error")
        assert len(outcome["dropped"]) == 1, "exactly the loader's session was ended"
    finally:
        blocker.rollback()
        blocker.close()
        blocker_engine.dispose()
        admin.dispose()
    setup.target.dispose()
    setup.assert_untouched()
    setup.assert_rerun_completes()
    assert isinstance(info.value, DatabaseError), (
        f"{type(info.value).__module__}.{type(info.value).__name__}: {info.value}"
    )
    _assert_went_away(info.value)
