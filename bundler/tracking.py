"""bundler's own tables in the databases it works on.

- ``bundler_system``: which system this database is (a stable id) and its release;
- ``bundler_exports`` and ``bundler_export_marks`` (source): every export, and the
  status each row had before the export marked it Exported, so it can be restored;
- ``bundler_loads`` and ``bundler_ledger`` (target): every load, and every row it
  wrote or reused, source key to target key.

They are created on first use and never hold billing data.
"""

from __future__ import annotations

import uuid
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


@dataclass(frozen=True)
class SystemInfo:
    system_id: str
    release: str
    dialect: str


def now() -> datetime:
    """Naive UTC now, the way every bundler table stores time."""
    return datetime.now(UTC).replace(tzinfo=None)


def create_tables(connection: sa.Connection, md: sa.MetaData) -> None:
    """Create the tables of ``md`` that are missing, even when another process races us to it."""
    names = list(md.tables)
    if all(sa.inspect(connection).has_table(n) for n in names):
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


def ensure_tables(connection: sa.Connection) -> None:
    """Create bundler's tables that are missing."""
    create_tables(connection, metadata)


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
