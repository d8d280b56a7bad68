"""bundler's own tables in the databases it works on.

- ``bundler_system``: which system this database is (a stable id) and its release;
- ``bundler_exports`` and ``bundler_export_marks`` (source): every export, and the
  status each row had before the export marked it Exported, so it can be restored; an
  export records the host and process that runs it and the folder its bundle goes to, so
  that ``bundler recover`` can finish or undo an export whose process died;
- ``bundler_loads`` and ``bundler_ledger`` (target): every load, and every row it
  wrote or reused, source key to target key; ``bundler_ledger_ranges`` holds the usage rows
  a load created compactly, as runs of consecutive source keys that became consecutive
  target keys (see :mod:`bundler.ledger`).

They are created on first use and never hold billing data. Columns added by a later
bundler are added to tables an older one created (all such columns are nullable).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from bundler.errors import DatabaseError

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

metadata = sa.MetaData()

system_table = sa.Table(
    "bundler_system",
    metadata,
    sa.Column("system_id", sa.String(36), primary_key=True),
    sa.Column("release", sa.String(32), nullable=False),
    sa.Column("created_at", TIMESTAMP, nullable=False),
)

exports_table = sa.Table(
    "bundler_exports",
    metadata,
    sa.Column("bundle_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("root_table", sa.String(64)),
    sa.Column("root_pk", sa.String(255)),
    sa.Column("root_key", sa.String(255)),
    sa.Column("window_from", TIMESTAMP),
    sa.Column("window_to", TIMESTAMP),
    sa.Column("usage_mode", sa.String(32), nullable=False),
    sa.Column("marked", sa.Integer, nullable=False),
    sa.Column("depends_on", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),  # running | done | failed | restored
    sa.Column("started_at", TIMESTAMP, nullable=False),
    sa.Column("finished_at", TIMESTAMP),
    sa.Column("manifest_sha256", sa.String(64)),
    sa.Column("rows", sa.BigInteger),
    sa.Column("message", sa.Text),
    # who runs the export and where its bundle goes: what `bundler recover` needs (added later: nullable)
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("process_start", sa.BigInteger),
    sa.Column("out_dir", sa.Text),
)

export_marks_table = sa.Table(
    "bundler_export_marks",
    metadata,
    sa.Column("bundle_id", sa.String(64), primary_key=True),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("row_pk", sa.String(255), primary_key=True),
    sa.Column("previous_status", sa.String(16), nullable=False),
)

loads_table = sa.Table(
    "bundler_loads",
    metadata,
    sa.Column("bundle_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("root_table", sa.String(64)),
    sa.Column("root_source_pk", sa.String(255)),
    sa.Column("root_target_pk", sa.String(255)),
    sa.Column("root_key", sa.String(255)),
    sa.Column("source_system", sa.String(36), nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("depends_on", sa.String(64)),
    sa.Column("loaded_at", TIMESTAMP, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("rows_created", sa.BigInteger, nullable=False),
    sa.Column("rows_reused", sa.BigInteger, nullable=False),
)

ledger_table = sa.Table(
    "bundler_ledger",
    metadata,
    sa.Column("bundle_id", sa.String(64), primary_key=True),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("source_pk", sa.String(255), primary_key=True),
    sa.Column("target_pk", sa.String(255), nullable=False),
    sa.Column("action", sa.String(8), nullable=False),  # created | reused
    sa.Index("ix_bundler_ledger_target", "table_name", "target_pk"),
)

# source keys source_first..source_last became target keys target_first..target_last, in order
# (both integer, the same count, at most bundler.ledger.RUN_MAX); every such row was created
ledger_ranges_table = sa.Table(
    "bundler_ledger_ranges",
    metadata,
    sa.Column("bundle_id", sa.String(64), primary_key=True),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("source_first", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("source_last", sa.BigInteger, nullable=False),
    sa.Column("target_first", sa.BigInteger, nullable=False),
    sa.Column("target_last", sa.BigInteger, nullable=False),
    sa.Index("ix_bundler_ledger_ranges_target", "table_name", "target_first"),
    sa.Index("ix_bundler_ledger_ranges_source", "table_name", "source_first"),
)

# references a load left open: the row they point to belongs to another root, not loaded yet
# (bundler.load.crossroot); the load that brings that row sets them and removes these rows
deferred_table = sa.Table(
    "bundler_deferred",
    metadata,
    sa.Column("bundle_id", sa.String(64), primary_key=True),  # the load that left it open
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("target_pk", sa.String(255), primary_key=True),  # the row whose reference is open
    sa.Column("column_name", sa.String(64), primary_key=True),
    sa.Column("ref_table", sa.String(64), nullable=False),
    sa.Column("ref_source_pk", sa.String(255), nullable=False),
    sa.Column("ref_key", sa.Text, nullable=False),  # the referenced row's natural key, as text
    sa.Column("source_system", sa.String(36), nullable=False),
    sa.Index("ix_bundler_deferred_ref", "source_system", "ref_table", "ref_source_pk"),
)


@dataclass(frozen=True)
class SystemInfo:
    system_id: str
    release: str
    dialect: str


#: the identity a plan gives a database that no export or ``db init`` registered yet
UNREGISTERED = "(not registered yet)"


def now() -> datetime:
    """Naive UTC now, the way every bundler table stores time."""
    return datetime.now(UTC).replace(tzinfo=None)


def create_tables(connection: sa.Connection, md: sa.MetaData) -> None:
    """Create the tables of ``md`` that are missing, even when another process races us to it."""
    names = list(md.tables)
    if not set(names) - set(sa.inspect(connection).get_table_names()):  # one catalog query, not one per table
        return
    try:
        with connection.begin_nested():
            md.create_all(connection, checkfirst=True)
    except sa.exc.DBAPIError:
        # another worker created them between our check and our CREATE: fine if they are all there now
        inspector = sa.inspect(connection)
        inspector.clear_cache()
        if not all(inspector.has_table(n) for n in names):
            raise


def shadow_missing_tables(connection: sa.Connection) -> bool:
    """For a check that must write nothing (a plan): bundler's tables the database lacks, made
    as temporary tables of this connection alone (empty, without indexes), so that reading
    them finds nothing. No DDL of a permanent table, which MariaDB would commit. True when one
    was made: the caller then closes the connection for good (``invalidate``) when done."""
    from sqlalchemy.schema import CreateTable

    inspector = sa.inspect(connection)
    missing = [t for t in metadata.tables.values() if not inspector.has_table(t.name)]
    for table in missing:
        ddl = str(CreateTable(table).compile(dialect=connection.dialect))
        connection.exec_driver_sql(ddl.replace("CREATE TABLE", "CREATE TEMPORARY TABLE", 1))
    return bool(missing)


_upgraded: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_upgrade_lock = threading.Lock()


def add_missing_columns(connection: sa.Connection, md: sa.MetaData) -> list[str]:
    """Add the (nullable) columns of ``md`` that tables made by an older bundler lack.

    Returns ``table.column`` of each column added. Another process adding the same column
    at the same time is fine.
    """
    added: list[str] = []
    inspector = sa.inspect(connection)
    for table in md.tables.values():
        if not inspector.has_table(table.name):
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise DatabaseError(
                    f"{table.name} lacks column {column.name}, which cannot be added to existing rows",
                    hint="this database was used by an incompatible bundler; ask for a migration",
                )
            ddl = (
                f"ALTER TABLE {connection.dialect.identifier_preparer.format_table(table)} ADD COLUMN "
                f"{connection.dialect.identifier_preparer.format_column(column)} "
                f"{column.type.compile(dialect=connection.dialect)}"
            )
            try:
                if connection.dialect.name == "mysql":
                    connection.exec_driver_sql(ddl)  # DDL commits by itself there: no savepoint
                else:
                    with connection.begin_nested():
                        connection.exec_driver_sql(ddl)
            except sa.exc.DBAPIError:
                inspector.clear_cache()
                if column.name not in {c["name"] for c in inspector.get_columns(table.name)}:
                    raise
                continue  # another process added it between our look and our ALTER
            added.append(f"{table.name}.{column.name}")
    return added


def ensure_tables(connection: sa.Connection) -> None:
    """Create bundler's tables that are missing, and add columns that older tables lack
    (looked at once per engine and process)."""
    create_tables(connection, metadata)
    engine = connection.engine
    if engine in _upgraded:
        return
    with _upgrade_lock:
        if engine not in _upgraded:
            add_missing_columns(connection, metadata)
            _upgraded.add(engine)


# -- the process that runs an export ----------------------------------------------------------


@dataclass(frozen=True)
class ProcessRef:
    """A process: its host, pid and (where the system says) its start time, so that a pid
    that the system gave to a new process is not taken for the old one."""

    host: str
    pid: int
    start: int | None

    def __str__(self) -> str:
        return f"pid {self.pid} on host {self.host}"

    @property
    def local(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """Whether this process still runs (only meaningful for a process of this host)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # somebody else's process: it exists
        state, start = _proc_stat(self.pid)
        if state in ("Z", "X"):
            return False  # a zombie: it died, its parent has not reaped it yet
        # another start time: the system gave the pid to a new process since
        return self.start is None or start is None or start == self.start


def _proc_stat(pid: int) -> tuple[str | None, int | None]:
    """The state and start time (clock ticks since boot) of process ``pid`` (Linux); Nones elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None, None
    fields = text.rpartition(")")[2].split()  # fields[0] is field 3 of proc(5), the state
    try:
        return fields[0], int(fields[19])  # field 22: starttime
    except (IndexError, ValueError):
        return None, None


def this_process() -> ProcessRef:
    return ProcessRef(socket.gethostname(), os.getpid(), _proc_stat(os.getpid())[1])


def register_system(connection: sa.Connection, release: str, system_id: str | None = None) -> SystemInfo:
    """Record this database's identity (once); returns what is recorded."""
    ensure_tables(connection)
    row = connection.execute(sa.select(system_table)).first()
    if row is None:
        connection.execute(
            system_table.insert().values(
                system_id=system_id or str(uuid.uuid4()), release=release, created_at=now()
            )
        )
        row = connection.execute(sa.select(system_table)).one()
    elif row.release != release:
        raise DatabaseError(
            f"this database is registered as release {row.release}, not {release}",
            hint="pass the release it really has",
        )
    return SystemInfo(row.system_id, row.release, connection.dialect.name)


def read_system(connection: sa.Connection) -> SystemInfo:
    """The identity of the database, as ``bundler db init`` (or a first export) recorded it."""
    if not sa.inspect(connection).has_table("bundler_system"):
        raise DatabaseError(
            f"{connection.engine.url.render_as_string(hide_password=True)} has no bundler_system table",
            hint="run `bundler db init URL --release RELEASE` (it keeps existing tables) to say which release it is",
        )
    row = connection.execute(sa.select(system_table)).first()
    if row is None:
        raise DatabaseError("bundler_system is empty", hint="run `bundler db init URL --release RELEASE`")
    return SystemInfo(row.system_id, row.release, connection.dialect.name)
