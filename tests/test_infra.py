"""Tests of the infrastructure: CLI error boundary, database helpers, progress, fixtures."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler import __version__
from bundler.cli import main
from bundler.db import (
    connect,
    create_database,
    database_exists,
    dialect_of,
    drop_database,
    normalize_url,
    redact,
    server_url_for,
)
from bundler.errors import (
    BundleInvalid,
    BundlerError,
    DatabaseError,
    DecisionsNeeded,
    ExitCode,
    PrerequisitesMissing,
    RootError,
    SpecError,
    UsageError,
)
from bundler.progress import NullProgress, Progress, ProgressEvent, RecordingProgress, RichProgress

ROOT = Path(__file__).resolve().parents[1]


# -- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def add_command() -> Iterator[Callable[[Callable[[], None], click.Group], str]]:
    """Register a throw-away command on a group for one test, and remove it after."""
    added: list[tuple[click.Group, str]] = []

    def add(body: Callable[[], None], group: click.Group = main) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        group.add_command(click.Command(name, callback=body))
        added.append((group, name))
        return name

    yield add
    for group, name in added:
        group.commands.pop(name, None)


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"bundler {__version__}"


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_options(flag: str) -> None:
    result = CliRunner().invoke(main, [flag])
    assert result.exit_code == 0
    assert "Usage: bundler" in result.stdout
    assert "--debug" in result.stdout
    assert "db" in result.stdout


def test_db_group_exists_and_takes_short_help() -> None:
    result = CliRunner().invoke(main, ["db", "-h"])
    assert result.exit_code == 0
    assert "Usage: bundler db" in result.stdout


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BundlerError("it failed"), 1),
        (DatabaseError("db down"), 1),
        (RootError("no customer 7"), 1),
        (UsageError("--a and --b conflict"), 2),
        (SpecError("graph invalid"), 2),
        (DecisionsNeeded("3 shared rows need a decision"), 3),
        (BundleInvalid("c42.bundle", ["checksum mismatch in accounts"]), 4),
        (PrerequisitesMissing("currency EUR missing"), 5),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_error_boundary_maps_bundler_errors_to_exit_codes(
    add_command, error: BundlerError, code: int
) -> None:
    def body() -> None:
        raise error

    name = add_command(body)
    result = CliRunner().invoke(main, [name])
    assert result.exit_code == code == int(error.exit_code)
    assert result.stderr == f"error: {error.line()}\n"
    assert "Traceback" not in result.output


def test_error_boundary_shows_hint_on_the_same_line(add_command) -> None:
    def body() -> None:
        raise DecisionsNeeded("2 tariffs match in the target", hint="fill in decisions.json and run again")

    result = CliRunner().invoke(main, [add_command(body)])
    assert result.exit_code == ExitCode.DECISIONS_NEEDED
    assert result.stderr == "error: 2 tariffs match in the target; fill in decisions.json and run again\n"


def test_error_boundary_unexpected_exception_is_one_line_exit_1(add_command) -> None:
    def body() -> None:
        raise ValueError("bad value 17\nsecond line of detail")

    result = CliRunner().invoke(main, [add_command(body)])
    assert result.exit_code == 1
    assert result.stderr == "error: ValueError: bad value 17 (run with --debug for the traceback)\n"
    assert result.stdout == ""


def test_error_boundary_covers_subgroups(add_command) -> None:
    from bundler.cli import db

    def body() -> None:
        raise PrerequisitesMissing("currency XYZ missing in the target")

    result = CliRunner().invoke(main, ["db", add_command(body, db)])
    assert result.exit_code == 5
    assert result.stderr == "error: currency XYZ missing in the target\n"


def test_debug_shows_traceback_and_keeps_exit_code(add_command) -> None:
    def body() -> None:
        raise BundleInvalid("x.bundle", ["manifest.json missing"])

    result = CliRunner().invoke(main, ["--debug", add_command(body)])
    assert result.exit_code == 4
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("error: bundle x.bundle: manifest.json missing")


def test_debug_traceback_for_unexpected_exception(add_command) -> None:
    def body() -> None:
        raise KeyError("accounts")

    result = CliRunner().invoke(main, ["--debug", add_command(body)])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "KeyError" in result.stderr
    assert "--debug for the traceback" not in result.stderr


def test_click_usage_errors_keep_exit_2() -> None:
    result = CliRunner().invoke(main, ["--no-such-option"])
    assert result.exit_code == 2
    assert "No such option" in result.stderr


def test_success_exits_0(add_command) -> None:
    def body() -> None:
        click.echo("fine")

    result = CliRunner().invoke(main, [add_command(body)])
    assert result.exit_code == 0
    assert result.stdout == "fine\n"


def test_cli_import_stays_light() -> None:
    code = (
        "import sys, bundler.cli; "
        "print(','.join(m for m in ('sqlalchemy', 'pyarrow', 'duckdb', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# -- URLs and dialects ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://root@h:3306/db", "mysql+pymysql://root@h:3306/db?charset=utf8mb4"),
        ("mariadb://root@h/db", "mysql+pymysql://root@h/db?charset=utf8mb4"),
        ("mysql+pymysql://root@h/db?charset=latin1", "mysql+pymysql://root@h/db?charset=latin1"),
        ("sqlite:///x/y.db", "sqlite:///x/y.db"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///a.db", "sqlite"),
        ("sqlite://", "sqlite"),
        ("postgresql://h/db", "postgresql"),
        ("postgresql+psycopg://h/db", "postgresql"),
        ("mysql://h/db", "mysql"),
        ("mariadb://h/db", "mysql"),
        ("mariadb+pymysql://h/db", "mysql"),
    ],
)
def test_dialect_of_urls(url: str, expected: str) -> None:
    assert dialect_of(url) == expected


def test_dialect_of_rejects_other_databases_and_non_urls() -> None:
    with pytest.raises(UsageError, match="unsupported database"):
        dialect_of("oracle://scott:tiger@h/db")
    with pytest.raises(UsageError, match="not a database URL") as info:
        dialect_of("just/a/path.db")
    assert info.value.exit_code == ExitCode.USAGE


def test_redact_hides_password() -> None:
    assert redact("postgresql+psycopg://bob:s3cret@db.example:5432/billing") == (
        "postgresql+psycopg://bob:***@db.example:5432/billing"
    )
    assert redact("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"
    assert "s3cret" not in redact("weird://bob:s3cret@h/[")


def test_server_url_for() -> None:
    assert server_url_for("postgresql://u:p@h:5433/billing") == "postgresql+psycopg://u:p@h:5433/postgres"
    assert server_url_for("mysql://root@h:3306/billing") == "mysql+pymysql://root@h:3306?charset=utf8mb4"
    assert server_url_for("sqlite:////data/dbs/source.db") == "sqlite:////data/dbs"
    with pytest.raises(UsageError):
        server_url_for("sqlite://")


# -- connect ---------------------------------------------------------------------------------


def test_connect_answers_select_1(dialect: str, db_url: str) -> None:
    engine = connect(db_url)
    try:
        assert dialect_of(engine) == dialect
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert dialect_of(conn) == dialect
    finally:
        engine.dispose()


def test_connect_accepts_short_schemes(dialect: str, db_url: str) -> None:
    short = db_url.replace("postgresql+psycopg://", "postgresql://").replace("mysql+pymysql://", "mariadb://")
    engine = connect(short)
    try:
        assert engine.url.drivername in ("sqlite", "postgresql+psycopg", "mysql+pymysql")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 2")).scalar_one() == 2
    finally:
        engine.dispose()


def test_transactions_roll_back_everything(dialect: str, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR(20))")
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 'a')")
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM t").scalar_one() == 1
        raise RuntimeError("boom")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM t").scalar_one() == 0


def test_text_comparison_is_exact_and_case_sensitive(dialect: str, engine: sa.Engine) -> None:
    """create_database makes binary-collated databases: 'a' != 'A', 'e' != 'é', and code point order."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE names (id INTEGER PRIMARY KEY, name VARCHAR(20))")
        conn.execute(
            sa.text("INSERT INTO names VALUES (:id, :name)"),
            [{"id": 1, "name": "a"}, {"id": 2, "name": "A"}, {"id": 3, "name": "é"}, {"id": 4, "name": "b"}],
        )
    with engine.connect() as conn:
        hits = conn.execute(sa.text("SELECT id FROM names WHERE name = :n"), {"n": "A"}).scalars().all()
        assert hits == [2]
        hits = conn.execute(sa.text("SELECT id FROM names WHERE name = :n"), {"n": "e"}).scalars().all()
        assert hits == []
        ordered = conn.exec_driver_sql("SELECT name FROM names ORDER BY name").scalars().all()
        assert ordered == ["A", "a", "b", "é"]
        # Four-byte UTF-8 round-trips (utf8mb4 on MariaDB).
        conn.execute(sa.text("INSERT INTO names VALUES (5, :n)"), {"n": "📞"})
        assert conn.exec_driver_sql("SELECT name FROM names WHERE id = 5").scalar_one() == "📞"
        conn.rollback()


def test_sqlite_pragmas_and_transactional_ddl(db_url: str) -> None:
    engine = connect(db_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 0
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30000
        # DDL is inside the transaction: a rollback undoes CREATE TABLE.
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE gone (x INTEGER)")
            raise RuntimeError("boom")
        # Reads are inside the transaction too: BEGIN is emitted before the first SELECT.
        with engine.connect() as conn:
            assert (
                conn.exec_driver_sql("SELECT COUNT(*) FROM sqlite_master WHERE name = 'gone'").scalar_one()
                == 0
            )
            assert conn.connection.dbapi_connection is not None
            assert conn.connection.dbapi_connection.in_transaction
            conn.rollback()
        # A savepoint rolled back inside a committed transaction.
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE kept (x INTEGER)")
            savepoint = conn.begin_nested()
            conn.exec_driver_sql("INSERT INTO kept VALUES (1)")
            savepoint.rollback()
            conn.exec_driver_sql("INSERT INTO kept VALUES (2)")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT x FROM kept").scalars().all() == [2]
    finally:
        engine.dispose()


def test_sqlite_autocommit_does_not_leak_into_pooled_connections(db_url: str) -> None:
    engine = connect(db_url)
    try:
        with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            assert conn.connection.dbapi_connection is not None
            assert not conn.connection.dbapi_connection.in_transaction
        # The same pooled connection, back in transactional mode: DDL rolls back again.
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE u (x INTEGER)")
            raise RuntimeError("boom")
        with engine.connect() as conn:
            names = conn.exec_driver_sql("SELECT name FROM sqlite_master ORDER BY name").scalars().all()
            assert names == ["t"]
    finally:
        engine.dispose()


def test_sqlite_concurrent_writers_wait_instead_of_failing(db_url: str) -> None:
    engine = connect(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE n (x INTEGER)")
        errors: list[BaseException] = []

        def write(start: int) -> None:
            try:
                for i in range(start, start + 20):
                    with engine.begin() as conn:
                        conn.exec_driver_sql(f"INSERT INTO n VALUES ({i})")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(k * 100,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM n").scalar_one() == 80
    finally:
        engine.dispose()


@pytest.mark.servers
def test_mariadb_charset_collation_and_local_infile(new_db) -> None:
    url = new_db("mysql")
    engine = connect(url)
    try:
        assert engine.url.query["charset"] == "utf8mb4"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT @@character_set_client").scalar_one() == "utf8mb4"
            collation = conn.exec_driver_sql(
                "SELECT default_collation_name FROM information_schema.schemata WHERE schema_name = DATABASE()"
            ).scalar_one()
            assert collation == "utf8mb4_bin"
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            # PyMySQL sets CLIENT.LOCAL_FILES in its capability flags when local_infile is on.
            from pymysql.constants import CLIENT

            assert dbapi.client_flag & CLIENT.LOCAL_FILES
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:s3cret@127.0.0.1:1/billing",
        "mysql://bob:s3cret@127.0.0.1:1/billing",
    ],
    ids=["postgresql", "mariadb"],
)
def test_connect_unreachable_raises_database_error_without_password(url: str) -> None:
    with pytest.raises(DatabaseError) as info:
        connect(url, connect_timeout=3)
    message = info.value.line()
    assert "s3cret" not in message
    assert "bob:***@127.0.0.1:1/billing" in message
    assert message.startswith("cannot connect to ")
    assert "check that the server is running" in message
    assert "\n" not in message
    assert info.value.exit_code == ExitCode.FAILED


def test_connect_sqlite_in_missing_folder_raises_database_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="check that the file's folder exists"):
        connect(f"sqlite:///{tmp_path}/no/such/folder/x.db", create=True)


def test_connect_to_a_missing_sqlite_file_names_the_resolved_path_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatabaseError) as info:
        connect("sqlite:///data/x.db")
    assert f"no SQLite database at {tmp_path / 'data' / 'x.db'}" in info.value.line()
    assert not (tmp_path / "data").exists()
    (tmp_path / "data").mkdir()
    with pytest.raises(DatabaseError):
        connect("sqlite:///data/x.db")
    assert not (tmp_path / "data" / "x.db").exists()
    connect("sqlite:///data/x.db", create=True).dispose()
    assert (tmp_path / "data" / "x.db").exists()


def test_malformed_urls_never_show_a_password() -> None:
    for url in ("postgres:s3cret@host/db", "postgresql://bob:s3cret@host:notaport/db"):
        with pytest.raises(UsageError) as info:
            connect(url)
        assert "s3cret" not in info.value.line()


def test_connect_rejects_unknown_driver() -> None:
    with pytest.raises(UsageError):
        connect("postgresql+nosuchdriver://h/db")


# -- create_database / drop_database ------------------------------------------------------


def _list_databases(dialect: str, server_url: str) -> set[str]:
    """The databases on a server, read directly (not through bundler.db)."""
    if dialect == "sqlite":
        return {p.stem for p in Path(server_url).glob("*.db")}
    engine = sa.create_engine(normalize_url(server_url))
    try:
        with engine.connect() as conn:
            if dialect == "postgresql":
                return set(conn.exec_driver_sql("SELECT datname FROM pg_database").scalars())
            return set(conn.exec_driver_sql("SHOW DATABASES").scalars())
    finally:
        engine.dispose()


def test_create_and_drop_database(dialect: str, server_url: str) -> None:
    name = "bt_" + uuid.uuid4().hex[:10]
    assert name not in _list_databases(dialect, server_url)
    url = create_database(server_url, name)
    try:
        assert name in _list_databases(dialect, server_url)
        assert database_exists(url)
        assert dialect_of(url) == dialect
        engine = connect(url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                conn.exec_driver_sql("INSERT INTO t VALUES (42)")
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT x FROM t").scalar_one() == 42
        finally:
            engine.dispose()
        with pytest.raises(DatabaseError, match=r"already exists|cannot create database"):
            create_database(server_url, name)
    finally:
        drop_database(url)
    assert name not in _list_databases(dialect, server_url)
    assert not database_exists(url)
    drop_database(url)  # dropping again is a no-op


def test_drop_database_ends_other_sessions(dialect: str, db_url: str) -> None:
    """A session holding the database open, even mid-transaction, does not block the drop."""
    engine = connect(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        holder = engine.connect()
        holder.exec_driver_sql("INSERT INTO t VALUES (1)")  # open transaction, locks held
        drop_database(db_url)
        assert not database_exists(db_url)
        if dialect != "sqlite":
            with pytest.raises(sa.exc.DBAPIError):
                holder.exec_driver_sql("SELECT 1").all()
        holder.invalidate()
        holder.close()
    finally:
        engine.dispose()


def test_create_database_rejects_bad_names(tmp_path: Path) -> None:
    for bad in ["", "1abc", "a-b", "a b", "x" * 64, "../up", 'q"uote']:
        with pytest.raises(UsageError, match="invalid database name"):
            create_database(str(tmp_path), bad)


def test_create_database_sqlite_forms(tmp_path: Path) -> None:
    url = create_database(f"sqlite:///{tmp_path}/sub", "alpha")
    assert url == f"sqlite:///{tmp_path}/sub/alpha.db"
    assert (tmp_path / "sub" / "alpha.db").exists()
    assert server_url_for(url) == f"sqlite:///{tmp_path}/sub"
    url2 = create_database(str(tmp_path), "beta")
    assert url2 == f"sqlite:///{tmp_path}/beta.db"
    drop_database(url)
    drop_database(url2)
    assert list(tmp_path.rglob("*.db*")) == []


# -- fixtures ----------------------------------------------------------------------------------


def test_new_db_makes_distinct_fresh_databases(dialect: str, new_db) -> None:
    first, second = new_db(), new_db()
    assert first != second
    for url in (first, second):
        assert dialect_of(url) == dialect
        name = sa.engine.make_url(url).database
        assert name is not None
        assert Path(name).stem.startswith("bt_")
        engine = connect(url)
        try:
            with engine.connect() as conn:
                tables = sa.inspect(conn).get_table_names()
            assert tables == []
        finally:
            engine.dispose()
    assert dialect_of(new_db("sqlite")) == "sqlite"


def test_fixtures_without_dialect_default_to_sqlite(db_url: str, engine: sa.Engine) -> None:
    assert dialect_of(db_url) == "sqlite"
    assert engine.url.database == sa.engine.make_url(db_url).database


_INNER_TEST = """
    import pytest
    from bundler.db import dialect_of


    def test_on_dialect(dialect, db_url):
        assert dialect_of(db_url) == dialect
"""


def _run_inner_suite(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(_INNER_TEST))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BUNDLER_TEST_", "PYTEST_"))}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rs", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=full_env,
        timeout=120,
    )


def test_missing_server_is_skipped_with_summary(tmp_path: Path) -> None:
    result = _run_inner_suite(
        tmp_path,
        {
            "BUNDLER_TEST_PG_URL": "postgresql://postgres@127.0.0.1:1/postgres",
            "BUNDLER_TEST_MYSQL_URL": "none",
        },
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "1 passed, 2 skipped" in out
    assert "database servers" in out
    assert "1 test(s) skipped: PostgreSQL not reachable at postgresql://postgres@127.0.0.1:1/postgres" in out
    assert "1 test(s) skipped: MariaDB left out (BUNDLER_TEST_MYSQL_URL=none)" in out


def test_missing_server_fails_when_required(tmp_path: Path) -> None:
    result = _run_inner_suite(
        tmp_path,
        {
            "BUNDLER_TEST_PG_URL": "postgresql://postgres@127.0.0.1:1/postgres",
            "BUNDLER_TEST_MYSQL_URL": "none",
            "BUNDLER_TEST_REQUIRE_SERVERS": "1",
        },
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 passed" in out and "2 failed" in out
    assert "BUNDLER_TEST_REQUIRE_SERVERS=1 requires every database server" in out


# -- progress ----------------------------------------------------------------------------------


def test_recording_progress_records_events_in_order() -> None:
    progress = RecordingProgress()
    progress.start("accounts", total=5)
    progress.advance("accounts", 2)
    progress.advance("accounts", 3)
    progress.note("tariff T1 reused")
    progress.finish("accounts")
    progress.start("xdrs")
    progress.advance("xdrs")
    assert progress.events == [
        ProgressEvent("start", "accounts", 5),
        ProgressEvent("advance", "accounts", 2),
        ProgressEvent("advance", "accounts", 3),
        ProgressEvent("note", "tariff T1 reused"),
        ProgressEvent("finish", "accounts"),
        ProgressEvent("start", "xdrs", None),
        ProgressEvent("advance", "xdrs", 1),
    ]
    assert progress.kinds() == ["start", "advance", "advance", "note", "finish", "start", "advance"]
    assert progress.done("accounts") == 5
    assert progress.done("xdrs") == 1
    assert progress.totals() == {"accounts": 5, "xdrs": None}
    assert progress.finished() == ["accounts"]
    assert progress.notes() == ["tariff T1 reused"]


def test_recording_progress_is_thread_safe() -> None:
    progress = RecordingProgress()

    def work() -> None:
        for _ in range(1000):
            progress.advance("rows")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert progress.done("rows") == 4000
    assert len(progress.events) == 4000


def test_progress_implementations_satisfy_the_protocol() -> None:
    for impl in (NullProgress(), RecordingProgress(), RichProgress(io.StringIO())):
        assert isinstance(impl, Progress)
    null = NullProgress()
    null.start("a", 3)
    null.advance("a")
    null.finish("a")
    null.note("nothing")


def test_rich_progress_writes_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with RichProgress(out, interval=0) as progress:
        assert not progress.is_terminal
        progress.start("accounts", total=3)
        progress.advance("accounts", 2)
        progress.advance("accounts")
        progress.note("customer 42 [exported]")
        progress.finish("accounts")
        progress.advance("xdrs", 5)
        progress.finish("xdrs")
    lines = out.getvalue().splitlines()
    assert lines[0] == "accounts: started (3 to do)"
    assert lines[1:3] == ["accounts: 2/3", "accounts: 3/3"]
    assert lines[3] == "customer 42 [exported]"
    assert lines[4].startswith("accounts: done, 3 in ")
    assert lines[5:7] == ["xdrs: started", "xdrs: 5"]
    assert lines[7].startswith("xdrs: done, 5 in ")
    assert "\x1b" not in out.getvalue()


def test_rich_progress_plain_mode_throttles_counts() -> None:
    out = io.StringIO()
    progress = RichProgress(out, interval=3600)
    progress.start("rows", total=1000)
    for _ in range(1000):
        progress.advance("rows")
    progress.finish("rows")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0] == "rows: started (1,000 to do)"
    assert lines[1].startswith("rows: done, 1,000 in ")


def test_rich_progress_draws_bars_on_a_terminal() -> None:
    out = io.StringIO()
    with RichProgress(out, force_terminal=True) as progress:
        assert progress.is_terminal
        progress.start("accounts", total=4)
        progress.advance("accounts", 4)
        progress.note("halfway note")
        progress.advance("xdrs", 7)
        progress.finish("xdrs")
        progress.finish("accounts")
    text = out.getvalue()
    assert "accounts" in text
    assert "4/4" in text
    assert "7/7" in text
    assert "halfway note" in text
