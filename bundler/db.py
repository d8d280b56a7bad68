"""Database access shared by every verb: URLs, engines, creating and dropping databases.

Databases are named by SQLAlchemy URLs. :func:`connect` accepts the short forms people
type (``postgresql://``, ``mysql://``, ``mariadb://``) and turns them into the drivers the
project ships (psycopg 3, PyMySQL), configures each dialect the same way every time, and
checks that the database answers before returning. Three dialect names are used throughout
the project: ``"sqlite"``, ``"postgresql"`` and ``"mysql"`` (MariaDB is ``"mysql"``, as in
SQLAlchemy).

SQLite transactions: Python's ``sqlite3`` module (before 3.12's ``autocommit`` attribute)
only emits ``BEGIN`` before INSERT/UPDATE/DELETE, so SELECTs and DDL run outside any
transaction and a rollback does not undo a ``CREATE TABLE``. :func:`connect` follows the
SQLAlchemy 2 recipe for SQLite: the driver's own transaction handling is switched off
(``isolation_level = None``) and SQLAlchemy emits ``BEGIN`` itself whenever it begins a
transaction, so ``with engine.begin():`` is one real, all-or-nothing SQLite transaction,
DDL included.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from bundler.errors import DatabaseError, UsageError

__all__ = [
    "DIALECTS",
    "connect",
    "create_database",
    "database_exists",
    "dialect_of",
    "drop_database",
    "normalize_url",
    "redact",
    "server_url_for",
]

#: The dialect names the project uses, in the order tests run them.
DIALECTS: tuple[str, ...] = ("sqlite", "postgresql", "mysql")

#: Short URL schemes and the driver each one is rewritten to.
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mariadb+pymysql": "mysql+pymysql",
}

#: Database names create_database accepts: portable across the three dialects and file names.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: SQLite: how long a connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000

_URL_EXAMPLES = "e.g. sqlite:///path/to/file.db, postgresql://user@host/db or mysql://user@host/db"


def _as_url(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    if "://" not in url and not url.startswith("sqlite:"):
        raise UsageError(f"not a database URL: {redact(url)!r}", hint=_URL_EXAMPLES)
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise UsageError(f"not a database URL: {redact(url)!r} ({exc})", hint=_URL_EXAMPLES) from exc


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and rewrite short schemes to the project's drivers.

    ``postgresql://`` becomes ``postgresql+psycopg://``; ``mysql://`` and ``mariadb://``
    become ``mysql+pymysql://`` with ``charset=utf8mb4`` added when the URL names no
    charset. Other URLs (``sqlite:///...``, explicit drivers) are returned as they are.
    """
    parsed = _as_url(url)
    driver = _DEFAULT_DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def _url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def contended(exc: sa.exc.DBAPIError) -> bool:
    """A deadlock or serialization failure the database asks us to retry (load, lineup)."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig is not None and orig.args else None)
    return code in ("40P01", "40001", 1213, 1205) or "database is locked" in str(orig)


def redact(url: str | URL | Engine | Connection) -> str:
    """The URL as text with its password replaced by ``***``, safe for messages and logs."""
    if isinstance(url, Engine | Connection):
        return url.engine.url.render_as_string(hide_password=True)
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not parseable: still hide anything that looks like user:password@.
        return re.sub(r"((?:^|://|/)[^:/@]*:)[^@/]*@", r"\1***@", url)


def dialect_of(url_or_engine: str | URL | Engine | Connection) -> str:
    """The project's dialect name for a URL, engine or connection.

    Returns ``"sqlite"``, ``"postgresql"`` or ``"mysql"`` (MariaDB is ``"mysql"``).
    Raises :class:`~bundler.errors.UsageError` for any other database.
    """
    if isinstance(url_or_engine, Engine | Connection):
        name = url_or_engine.dialect.name
        shown = redact(url_or_engine)
    else:
        parsed = normalize_url(url_or_engine)
        name = parsed.get_backend_name()
        shown = redact(parsed)
    if name == "mariadb":
        name = "mysql"
    if name not in DIALECTS:
        raise UsageError(
            f"unsupported database {shown!r} (dialect {name})",
            hint="use SQLite, PostgreSQL or MariaDB/MySQL",
        )
    return name


def _first_line(exc: BaseException) -> str:
    """The first meaningful line of a (DBAPI) error, without SQLAlchemy's background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line
    return type(exc).__name__


def _reason(exc: BaseException, url: URL) -> str:
    line = _first_line(exc)
    if url.password:
        line = line.replace(str(url.password), "***")
    return line


def _hint(dialect: str) -> str:
    if dialect == "sqlite":
        return "check that the file's folder exists and is writable"
    return "check that the server is running and that the URL's host, port, user, password and database are right"


def _install_sqlite_listeners(engine: Engine) -> None:
    """Per-connection pragmas and explicit BEGIN, as SQLAlchemy 2 documents for pysqlite."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Switch off the sqlite3 module's own BEGIN handling; SQLAlchemy emits BEGIN below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL itself may have to wait for a lock.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = OFF")
        finally:
            cursor.close()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
        # SQLAlchemy's isolation-level reset (after an AUTOCOMMIT connection is returned to
        # the pool) sets isolation_level = "" again; keep the driver out of BEGIN handling.
        if dbapi_connection.isolation_level is not None:
            dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        # writers that must not lose a race ask for BEGIN IMMEDIATE (execution option sqlite_begin)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("sqlite_begin") == "immediate" else "BEGIN")


def connect(
    url: str | URL, *, connect_timeout: int | None = None, check: bool = True, create: bool = False
) -> Engine:
    """Make an engine for ``url``, configured the project's way, and check that it answers.

    - ``postgresql://`` → psycopg 3; ``mysql://`` and ``mariadb://`` → PyMySQL with
      ``charset=utf8mb4`` and ``local_infile`` enabled (for ``LOAD DATA LOCAL INFILE``).
    - SQLite: every connection gets ``journal_mode=WAL``, ``foreign_keys=OFF`` and a
      30 s ``busy_timeout``; transactions are real (explicit ``BEGIN``, see the module
      docstring).
    - ``connect_timeout`` (seconds) bounds the TCP connect on PostgreSQL and MariaDB.
    - a SQLite file that does not exist is an error naming the resolved path, unless
      ``create`` (``bundler db init`` and ``db seed`` make new databases).

    With ``check`` (the default) a ``SELECT 1`` is run; if it fails the engine is disposed
    and :class:`~bundler.errors.DatabaseError` is raised, naming the URL without its
    password and saying what to check.
    """
    parsed = normalize_url(url)
    dialect = dialect_of(parsed)
    connect_args: dict[str, Any] = {}
    engine_kwargs: dict[str, Any] = {}
    if dialect == "mysql":
        connect_args["local_infile"] = True
        connect_args.update(mysql_password_args(parsed))
        # Server-side idle timeouts (wait_timeout) close connections a long lineup keeps pooled.
        engine_kwargs["pool_recycle"] = 3600
    if connect_timeout is not None and dialect != "sqlite":
        connect_args["connect_timeout"] = int(connect_timeout)
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **engine_kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise UsageError(f"cannot use database URL {redact(parsed)!r}: {_first_line(exc)}") from exc
    if dialect == "sqlite":
        _check_sqlite_file(parsed, create)
        _install_sqlite_listeners(engine)
    if check:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1")).scalar_one()
        except SQLAlchemyError as exc:
            engine.dispose()
            raise DatabaseError(
                f"cannot connect to {redact(parsed)}: {_reason(exc, parsed)}", hint=_hint(dialect)
            ) from exc
    return engine


def mysql_password_args(url: URL) -> dict[str, Any]:
    """For a MariaDB/MySQL URL without a password, the client's own conventions: ``MYSQL_PWD``,
    then ``~/.my.cnf`` (its ``[client]`` section; what the URL gives wins)."""
    if url.password is not None:
        return {}
    if os.environ.get("MYSQL_PWD"):
        return {"password": os.environ["MYSQL_PWD"]}
    my_cnf = Path.home() / ".my.cnf"
    if my_cnf.is_file():
        return {"read_default_file": str(my_cnf)}
    return {}


def _check_sqlite_file(url: URL, create: bool) -> None:
    path = _sqlite_path(url)
    if path is None:
        return
    where = path.resolve()
    if not create and not path.exists():
        raise DatabaseError(
            f"no SQLite database at {where} (from {redact(url)})",
            hint="check the path (relative to the working folder); `bundler db init URL` makes a new one",
        )


def _sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def server_url_for(url: str | URL) -> str:
    """The URL to administer the server (or folder) that holds the database ``url``.

    PostgreSQL: the same server's ``postgres`` database. MariaDB: the server with no
    database selected. SQLite: ``sqlite:///<folder of the file>``. The result is what
    :func:`create_database` takes as its ``server_url``.
    """
    parsed = normalize_url(url)
    dialect = dialect_of(parsed)
    if dialect == "sqlite":
        path = _sqlite_path(parsed)
        if path is None:
            raise UsageError("an in-memory SQLite database has no server or folder")
        return _sqlite_url(path.parent)
    if dialect == "postgresql":
        return _url_string(parsed.set(database="postgres"))
    # URL.set() treats database=None as "unchanged"; build the URL without a database.
    no_database = URL.create(
        parsed.drivername,
        username=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        query=parsed.query,
    )
    return _url_string(no_database)


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"invalid database name {name!r}",
            hint="use letters, digits and underscores, starting with a letter or underscore, at most 63",
        )


def _sqlite_dir(server_url: str | URL) -> Path:
    if isinstance(server_url, str) and "://" not in server_url and not server_url.startswith("sqlite:"):
        return Path(server_url)
    parsed = _as_url(server_url)
    if parsed.get_backend_name() != "sqlite":
        raise UsageError(f"not a SQLite folder: {redact(parsed)!r}")
    path = _sqlite_path(parsed)
    if path is None:
        raise UsageError("an in-memory SQLite URL names no folder to create databases in")
    return path


def _is_sqlite_server(server_url: str | URL) -> bool:
    if isinstance(server_url, str) and "://" not in server_url and not server_url.startswith("sqlite:"):
        return True
    return dialect_of(server_url) == "sqlite"


def _admin_engine(url: str | URL) -> Engine:
    """A checked engine whose connections run in autocommit (CREATE/DROP DATABASE need it)."""
    return connect(url).execution_options(isolation_level="AUTOCOMMIT")


def create_database(server_url: str | URL, name: str) -> str:
    """Create the empty database ``name`` and return its URL.

    ``server_url`` is any URL on a PostgreSQL or MariaDB server (the database it names is
    only used to connect), or, for SQLite, a folder given as a path or as
    ``sqlite:///folder``; the database is then the file ``<folder>/<name>.db``.

    PostgreSQL databases are created ``UTF8`` with the ``C`` collation, MariaDB ones
    ``utf8mb4`` with ``utf8mb4_bin``: text comparisons and sort order are exact,
    case-sensitive and by code point on every dialect, as in SQLite.

    Raises :class:`~bundler.errors.DatabaseError` if it already exists or cannot be made.
    """
    _check_name(name)
    if _is_sqlite_server(server_url):
        folder = _sqlite_dir(server_url)
        path = folder / f"{name}.db"
        if path.exists():
            raise DatabaseError(
                f"database {path} already exists", hint="drop it first or choose another name"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            sqlite_conn = sqlite3.connect(path)
            try:
                sqlite_conn.execute("PRAGMA journal_mode = WAL")
            finally:
                sqlite_conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot create database {path}: {exc}", hint=_hint("sqlite")) from exc
        return _sqlite_url(path)

    server = normalize_url(server_url)
    dialect = dialect_of(server)
    engine = _admin_engine(server)
    try:
        quoted = engine.dialect.identifier_preparer.quote_identifier(name)
        if dialect == "postgresql":
            statement = f"CREATE DATABASE {quoted} ENCODING 'UTF8' LC_COLLATE 'C' TEMPLATE template0"
        else:
            statement = f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot create database {name} on {redact(server)}: {_reason(exc, server)}",
            hint="check that the user may create databases and that the name is free",
        ) from exc
    finally:
        engine.dispose()
    return _url_string(server.set(database=name))


def database_exists(url: str | URL) -> bool:
    """Whether the database ``url`` names exists (for SQLite: whether its file exists)."""
    parsed = normalize_url(url)
    dialect = dialect_of(parsed)
    if dialect == "sqlite":
        path = _sqlite_path(parsed)
        return path is None or path.exists()
    engine = _admin_engine(server_url_for(parsed))
    try:
        with engine.connect() as conn:
            if dialect == "postgresql":
                query = "SELECT 1 FROM pg_database WHERE datname = :name"
            else:
                query = "SELECT 1 FROM information_schema.schemata WHERE schema_name = :name"
            return conn.execute(sa.text(query), {"name": parsed.database}).first() is not None
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot list databases on {redact(parsed)}: {_reason(exc, parsed)}", hint=_hint(dialect)
        ) from exc
    finally:
        engine.dispose()


def drop_database(url: str | URL) -> None:
    """Drop the database ``url`` names, if it exists; other sessions on it are ended first.

    PostgreSQL: other backends connected to it are terminated (``pg_terminate_backend``).
    MariaDB: other connections using it are killed, so no open transaction blocks the drop.
    SQLite: the file and its ``-wal``, ``-shm`` and ``-journal`` companions are removed.
    """
    parsed = normalize_url(url)
    dialect = dialect_of(parsed)
    if dialect == "sqlite":
        path = _sqlite_path(parsed)
        if path is None:
            return
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot drop database {path}: {exc}") from exc
        return

    name = parsed.database
    if not name:
        raise UsageError(f"the URL {redact(parsed)!r} names no database to drop")
    engine = _admin_engine(server_url_for(parsed))
    try:
        quoted = engine.dialect.identifier_preparer.quote_identifier(name)
        with engine.connect() as conn:
            if dialect == "postgresql":
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
            else:
                ids = conn.execute(
                    sa.text(
                        "SELECT id FROM information_schema.processlist"
                        " WHERE db = :name AND id <> CONNECTION_ID()"
                    ),
                    {"name": name},
                ).scalars()
                for thread_id in list(ids):
                    with contextlib.suppress(SQLAlchemyError):  # it may have ended meanwhile
                        conn.exec_driver_sql(f"KILL CONNECTION {int(thread_id)}")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot drop database {name} on {redact(parsed)}: {_reason(exc, parsed)}",
            hint="check that the user may drop it",
        ) from exc
    finally:
        engine.dispose()


@contextlib.contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it takes the write lock up front (BEGIN IMMEDIATE).

    A deferred SQLite transaction that reads first and writes later fails at once with
    "database is locked" when another connection wrote in between (the busy timeout does
    not apply to that upgrade); taking the lock first makes it wait its turn instead.
    """
    with engine.connect().execution_options(sqlite_begin="immediate") as connection, connection.begin():
        yield connection


# -- planner statistics ------------------------------------------------------------------------

#: A load refreshes a table's statistics after it commits when it wrote at least this many
#: rows there, and at least :data:`ANALYZE_SHARE` of what the table held before.
ANALYZE_MIN_ROWS = 10_000
ANALYZE_SHARE = 0.1


def estimated_rows(connection: Connection, tables: list[str]) -> dict[str, int | None]:
    """What the planner's statistics say each table holds (None: it has no statistics)."""
    dialect = connection.dialect.name
    out: dict[str, int | None] = dict.fromkeys(tables)
    if not tables:
        return out
    if dialect == "postgresql":
        query = (
            "SELECT c.relname, c.reltuples FROM pg_class c WHERE c.relkind IN ('r', 'p') "
            "AND c.relnamespace = current_schema()::regnamespace AND c.relname IN :names"
        )
        rows = connection.execute(
            sa.text(query).bindparams(sa.bindparam("names", expanding=True)), {"names": tables}
        )
        out.update({name: None if n < 0 else int(n) for name, n in rows})
    elif dialect == "sqlite":
        if _sqlite_has_stat1(connection):
            rows = connection.exec_driver_sql(
                "SELECT tbl, max(CAST(stat AS INTEGER)) FROM sqlite_stat1 GROUP BY tbl"
            )
            out.update({name: int(n) for name, n in rows if name in out})
    else:
        rows = connection.execute(
            sa.text(
                "SELECT table_name, table_rows FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name IN :names"
            ).bindparams(sa.bindparam("names", expanding=True)),
            {"names": tables},
        )
        out.update({name: None if n is None else int(n) for name, n in rows})
    return out


def _sqlite_has_stat1(connection: Connection) -> bool:
    return (
        connection.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
        ).first()
        is not None
    )


def written_enough(connection: Connection, written: dict[str, int]) -> list[str]:
    """The tables of ``written`` (table -> rows a load wrote) whose statistics a load should refresh:
    at least :data:`ANALYZE_MIN_ROWS` rows, and at least :data:`ANALYZE_SHARE` of the rows the
    statistics knew of (all of them when there are none)."""
    many = sorted(t for t, n in written.items() if n >= ANALYZE_MIN_ROWS)
    known = estimated_rows(connection, many)
    return [t for t in many if (known[t] or 0) * ANALYZE_SHARE <= written[t]]


def stale_tables(connection: Connection, tables: list[str]) -> list[str]:
    """The tables whose planner statistics are missing or stale.

    PostgreSQL: changed since the last ANALYZE by more than autovacuum's default threshold
    (50 rows + 10% of the table), or holding rows and never analyzed. SQLite: holding rows
    and without a ``sqlite_stat1`` row. MariaDB: none (InnoDB recalculates its persistent
    statistics by itself once 10% of a table changed).
    """
    dialect = connection.dialect.name
    if not tables or dialect not in ("postgresql", "sqlite"):
        return []
    if dialect == "postgresql":
        query = (
            "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE s.schemaname = current_schema() AND s.relname IN :names AND ("
            "s.n_mod_since_analyze > 50 + 0.1 * greatest(s.n_live_tup, c.reltuples) "
            "OR (c.reltuples < 0 AND s.n_live_tup > 0))"
        )
        rows = connection.execute(
            sa.text(query).bindparams(sa.bindparam("names", expanding=True)), {"names": tables}
        )
        return sorted(r[0] for r in rows)
    analyzed: set[str] = set()
    if _sqlite_has_stat1(connection):
        analyzed = {r[0] for r in connection.exec_driver_sql("SELECT DISTINCT tbl FROM sqlite_stat1")}
    prep = connection.dialect.identifier_preparer
    present = set(sa.inspect(connection).get_table_names())
    return [
        t
        for t in sorted(tables)
        if t in present
        and t not in analyzed
        and connection.exec_driver_sql(f"SELECT 1 FROM {prep.quote(t)} LIMIT 1").first() is not None
    ]


def analyze(engine: Engine, tables: list[str]) -> float:
    """Refresh the planner statistics of ``tables`` (committed at once); the seconds it took.

    PostgreSQL ``ANALYZE`` (a sample of 300 times ``default_statistics_target`` rows per table);
    SQLite ``ANALYZE`` (it reads every index whole: ``PRAGMA analysis_limit`` would make it
    cheaper, but its estimates from the first entries of an index mislead the planner into
    the very plans the refresh is for; a load refreshes only after adding a tenth of a
    table, so the cost stays a fraction of the writing);
    MariaDB ``ANALYZE TABLE … PERSISTENT FOR COLUMNS () INDEXES ()`` (InnoDB's sampled index
    statistics only, not the engine-independent ones, which read the whole table).
    """
    if not tables:
        return 0.0
    started = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        prep = connection.dialect.identifier_preparer
        names = [prep.quote(t) for t in sorted(tables)]
        dialect = connection.dialect.name
        if dialect == "sqlite":
            for name in names:
                connection.exec_driver_sql(f"ANALYZE {name}")
        elif dialect == "postgresql":
            connection.exec_driver_sql(f"ANALYZE {', '.join(names)}")
        else:
            for name in names:
                connection.exec_driver_sql(f"ANALYZE TABLE {name} PERSISTENT FOR COLUMNS () INDEXES ()").all()
    return time.monotonic() - started


def refresh_stale_statistics(engine: Engine, tables: list[str] | None = None) -> list[str]:
    """Refresh the statistics of those of ``tables`` (default: every table) that are stale
    (:func:`stale_tables`); the tables refreshed. For the verbs that read a freshly loaded
    database (clean, reverse export): a planner without statistics may choose plans that
    never end."""
    with engine.connect() as connection:
        names = sa.inspect(connection).get_table_names() if tables is None else tables
        stale = stale_tables(connection, names)
    analyze(engine, stale)
    return stale
