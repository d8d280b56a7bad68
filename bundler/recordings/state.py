"""Bundler's own tables of recordings sync in the target: the watermark and the retry list.

``bundler_recordings_sync`` keeps, per source system and mirror table, the (time, identity)
of the last row handled; ``bundler_recordings_retry`` lists the recordings that failed,
tried first by every pass until they succeed or their row leaves the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.recordings.queries import chunks

__all__ = [
    "FailedRecording",
    "TableState",
    "ensure_state_tables",
    "retry_table",
    "state_metadata",
    "watermark_table",
]

state_metadata = sa.MetaData()

watermark_table = sa.Table(
    "bundler_recordings_sync",
    state_metadata,
    sa.Column("source_system", sa.String(36), primary_key=True),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("last_time", tracking.TIMESTAMP, nullable=False),
    sa.Column("last_key", sa.String(400), nullable=False),  # keys.key_text of the identity
    sa.Column("updated_at", tracking.TIMESTAMP, nullable=False),
)

retry_table = sa.Table(
    "bundler_recordings_retry",
    state_metadata,
    sa.Column("source_system", sa.String(36), primary_key=True),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("file_name", sa.String(1024)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("first_failed_at", tracking.TIMESTAMP, nullable=False),
    sa.Column("last_failed_at", tracking.TIMESTAMP, nullable=False),
)

#: A recording that failed in this pass: the text of its key, its file name, the reason.
FailedRecording = tuple[str, str | None, str]


def ensure_state_tables(connection: sa.Connection) -> None:
    """Create ``bundler_recordings_sync`` and ``bundler_recordings_retry`` when missing."""
    state_metadata.create_all(connection, checkfirst=True)


@dataclass(frozen=True)
class TableState:
    """The watermark and the retry list of one mirror table for one source system."""

    source_system: str
    table_name: str

    # -- watermark -----------------------------------------------------------------------------------

    def _watermark_where(self) -> list[sa.ColumnElement[bool]]:
        t = watermark_table
        return [t.c.source_system == self.source_system, t.c.table_name == self.table_name]

    def read_watermark(self, conn: sa.Connection) -> tuple[datetime, str] | None:
        """``(last_time, last_key)`` of the last row handled, or None before the first."""
        t = watermark_table
        row = conn.execute(sa.select(t.c.last_time, t.c.last_key).where(*self._watermark_where())).first()
        return None if row is None else (row.last_time, row.last_key)

    def write_watermark(self, conn: sa.Connection, last_time: Any, last_key: str, now: datetime) -> None:
        t = watermark_table
        values = {"last_time": last_time, "last_key": last_key, "updated_at": now}
        if conn.execute(t.update().where(*self._watermark_where()).values(**values)).rowcount == 0:
            conn.execute(
                t.insert().values(source_system=self.source_system, table_name=self.table_name, **values)
            )

    # -- retry list ----------------------------------------------------------------------------------

    def retry_where(self) -> list[sa.ColumnElement[bool]]:
        return [
            retry_table.c.source_system == self.source_system,
            retry_table.c.table_name == self.table_name,
        ]

    def count_retries(self, conn: sa.Connection) -> int:
        query = sa.select(sa.func.count()).select_from(retry_table).where(*self.retry_where())
        return int(conn.execute(query).scalar_one())

    def retry_page(self, conn: sa.Connection, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` key texts of the retry list, in order, after ``after``."""
        query = sa.select(retry_table.c.key).where(*self.retry_where())
        if after is not None:
            query = query.where(retry_table.c.key > after)
        return list(conn.execute(query.order_by(retry_table.c.key).limit(limit)).scalars())

    def settle(
        self,
        conn: sa.Connection,
        resolved: Sequence[str],
        failures: Sequence[FailedRecording],
        now: datetime,
    ) -> None:
        """Take the ``resolved`` keys off the retry list and list the ``failures``, counting attempts."""
        settled = [*resolved, *(text for text, _, _ in failures)]
        earlier = self._remove(conn, settled, read=bool(failures))
        if failures:
            latest = {text: (name, reason) for text, name, reason in failures}
            conn.execute(
                retry_table.insert(),
                [
                    self._retry_row(text, name, reason, earlier.get(text, (0, now)), now)
                    for text, (name, reason) in latest.items()
                ],
            )

    def _remove(
        self, conn: sa.Connection, texts: Sequence[str], *, read: bool
    ) -> dict[str, tuple[int, datetime]]:
        """Delete the entries of ``texts``; with ``read``, their attempts and first failure before."""
        earlier: dict[str, tuple[int, datetime]] = {}
        for chunk in chunks(texts):
            where = [*self.retry_where(), retry_table.c.key.in_(chunk)]
            if read:
                columns = (retry_table.c.key, retry_table.c.attempts, retry_table.c.first_failed_at)
                for r in conn.execute(sa.select(*columns).where(*where)):
                    earlier[r.key] = (r.attempts, r.first_failed_at)
            conn.execute(retry_table.delete().where(*where))
        return earlier

    def _retry_row(
        self, text: str, name: str | None, reason: str, earlier: tuple[int, datetime], now: datetime
    ) -> dict[str, Any]:
        attempts, first_failed_at = earlier
        return {
            "source_system": self.source_system,
            "table_name": self.table_name,
            "key": text,
            "file_name": None if name is None else str(name)[:1024],
            "reason": reason,
            "attempts": attempts + 1,
            "first_failed_at": first_failed_at,
            "last_failed_at": now,
        }
