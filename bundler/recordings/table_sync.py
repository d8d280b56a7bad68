"""One mirror table of a recordings sync pass: earlier failures, the re-check window, new rows.

Source rows are read page by page in (time, identity) order; for each one the target
lacks, its file is made present and checked in the target store first, then its row is
inserted, page by page, in one transaction with the retry list and the watermark.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.db import begin_write
from bundler.errors import DatabaseError
from bundler.keys import describe, key_text, key_value
from bundler.progress import Progress
from bundler.recordings.plan import MirrorPlan
from bundler.recordings.queries import chunks, decode, key_in, tuple_after
from bundler.recordings.report import MAX_LISTED_FAILURES, Failure, PassReport, TableReport
from bundler.recordings.state import FailedRecording, TableState
from bundler.recordings.store import CopyCorrupt, FileProblem, Store

__all__ = ["COPY_ATTEMPTS", "PassContext", "TableSync"]

#: Copies of one file tried in a pass when the copy reads back wrong.
COPY_ATTEMPTS = 3


@dataclass
class PassContext:
    """What every table of one pass shares."""

    source: sa.Engine
    target: sa.Engine
    from_store: Store
    to_store: Store
    source_system: str
    progress: Progress
    stop: threading.Event
    lookback: timedelta
    full: bool
    page_size: int
    report: PassReport


@dataclass
class _Outcome:
    bytes: int = 0
    in_place: bool = False
    redone: int = 0


class TableSync:
    """Bring one mirror table over: earlier failures first, then the re-check window, then new rows."""

    def __init__(self, ctx: PassContext, plan: MirrorPlan) -> None:
        self.ctx = ctx
        self.plan = plan
        self.report = TableReport(plan.table)
        self.state = TableState(ctx.source_system, plan.table)
        self.task = f"recordings {plan.table}"
        self.src = self._reflect(ctx.source, "source")
        self.tgt = self._reflect(ctx.target, "target")
        self.order = [self.src.c[plan.time_column], *(self.src.c[c] for c in plan.identity)]
        self.handled: set[str] = set()  # keys tried in the retry phase of this pass
        # Every listed failure is tried before the scan, so only the retry phase settles
        # entries of the retry list; the scan only adds new ones.
        self._retrying = False
        self._inserts: list[dict[str, Any]] = []
        self._resolved: list[str] = []
        self._failures: list[FailedRecording] = []

    def _reflect(self, engine: sa.Engine, side: str) -> sa.Table:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(self.plan.table):
                raise DatabaseError(f"the {side} database has no table {self.plan.table}")
            table = sa.Table(self.plan.table, sa.MetaData(), autoload_with=conn)
        lacking = [c for c in self.plan.columns if c not in table.c]
        if lacking:
            raise DatabaseError(f"the {side}'s {self.plan.table} lacks column(s) {', '.join(lacking)}")
        return table

    # -- keys ---------------------------------------------------------------------------------------

    def key_of(self, row: Any) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.plan.identity)

    def text_of(self, key: Sequence[Any]) -> str:
        return key_text(self.key_dict(key))

    def key_dict(self, key: Sequence[Any]) -> dict[str, Any]:
        return {c: key_value(v) for c, v in zip(self.plan.identity, key, strict=True)}

    def key_from_text(self, text: str) -> tuple[Any, ...]:
        data = json.loads(text)
        return tuple(decode(data[c], self.src.c[c].type) for c in self.plan.identity)

    def _mark(self, row: Any) -> tuple[Any, ...]:
        """The (time, identity) of a source row: a position in the order rows are read in."""
        return (row[self.plan.time_column], *self.key_of(row))

    def _present(self, conn: sa.Connection, keys: Sequence[tuple[Any, ...]]) -> set[str]:
        """Texts of the keys the target already holds."""
        columns = [self.tgt.c[c] for c in self.plan.identity]
        found: set[str] = set()
        for chunk in chunks(list(keys)):
            for row in conn.execute(sa.select(*columns).where(key_in(columns, chunk))):
                found.add(self.text_of(tuple(row)))
        return found

    # -- the pass -----------------------------------------------------------------------------------

    def run(self) -> TableReport:
        ctx = self.ctx
        watermark = self._read_watermark()
        lower: datetime | None = None
        if watermark is not None and not ctx.full:
            lower = watermark[0] - ctx.lookback
        ctx.progress.start(self.task, total=self._count(lower))
        try:
            self._retrying = True
            self._retry_failures()
            self._retrying = False
            if watermark is not None:
                # the re-check window (or, for a full pass, everything) up to the watermark
                self._scan(lower=lower, after=None, upto=watermark, advance=False)
            self._scan(lower=None, after=watermark, upto=None, advance=True)
        finally:
            ctx.progress.finish(self.task)
        return self.report

    def _count(self, lower: datetime | None) -> int:
        with self.ctx.source.connect() as conn:
            query = sa.select(sa.func.count()).select_from(self.src)
            if lower is not None:
                query = query.where(self.src.c[self.plan.time_column] >= lower)
            total = int(conn.execute(query).scalar_one())
        with self.ctx.target.connect() as conn:
            total += self.state.count_retries(conn)
        return total

    def _read_watermark(self) -> tuple[Any, ...] | None:
        with self.ctx.target.connect() as conn:
            watermark = self.state.read_watermark(conn)
        if watermark is None:
            return None
        last_time, last_key = watermark
        self.report.watermark_time = last_time
        self.report.watermark_key = json.loads(last_key)
        return (last_time, *self.key_from_text(last_key))

    def _select(self) -> sa.Select[Any]:
        return sa.select(*(self.src.c[c] for c in self.plan.columns))

    # -- earlier failures ---------------------------------------------------------------------------

    def _retry_failures(self) -> None:
        ctx = self.ctx
        last: str | None = None
        while not ctx.stop.is_set():
            with ctx.target.connect() as conn:
                texts = self.state.retry_page(conn, last, ctx.page_size)
            if not texts:
                return
            last = texts[-1]
            self._retry_page(texts)
            self._flush(None)

    def _retry_page(self, texts: list[str]) -> None:
        keys = [self.key_from_text(text) for text in texts]
        rows = self._source_rows(keys)
        with self.ctx.target.connect() as conn:
            present = self._present(conn, keys)
        for text in texts:
            if self.ctx.stop.is_set():
                break
            self.handled.add(text)
            self.report.retried += 1
            row = rows.get(text)
            if row is None:
                self._drop(text)
            else:
                self._handle(row, text, present)

    def _source_rows(self, keys: list[tuple[Any, ...]]) -> dict[str, Any]:
        """The source rows of ``keys``, by the text of their key."""
        columns = [self.src.c[c] for c in self.plan.identity]
        with self.ctx.source.connect() as conn:
            return {
                self.text_of(self.key_of(r)): r
                for r in conn.execute(self._select().where(key_in(columns, keys))).mappings()
            }

    def _drop(self, text: str) -> None:
        """An earlier failure whose row has left the source: off the retry list."""
        self.report.dropped += 1
        self._resolved.append(text)
        self.ctx.progress.note(
            f"{self.plan.table} {describe(json.loads(text))}: no longer in the source, "
            "dropped from the retry list"
        )
        self.ctx.progress.advance(self.task)

    # -- source rows in order -----------------------------------------------------------------------

    def _scan(
        self,
        *,
        lower: datetime | None,
        after: tuple[Any, ...] | None,
        upto: tuple[Any, ...] | None,
        advance: bool,
    ) -> None:
        """Source rows in (time, identity) order, page by page: after ``after`` (exclusive),
        from ``lower`` (a time), up to ``upto`` (inclusive); ``advance`` moves the watermark."""
        ctx = self.ctx
        position: tuple[Any, ...] | None = None
        while not ctx.stop.is_set():
            query = self._page_query(position, lower=lower, after=after, upto=upto)
            with ctx.source.connect() as conn:
                rows = list(conn.execute(query.order_by(*self.order).limit(ctx.page_size)).mappings())
            if not rows:
                return
            done = self._handle_page(rows)
            reached = rows[done - 1] if done else None
            self._flush(self._mark(reached) if advance and reached else None)
            if done < len(rows):
                return
            position = self._mark(rows[-1])

    def _page_query(
        self,
        position: tuple[Any, ...] | None,
        *,
        lower: datetime | None,
        after: tuple[Any, ...] | None,
        upto: tuple[Any, ...] | None,
    ) -> sa.Select[Any]:
        """The next page's rows: after ``position`` once a page was read, else from the start."""
        query = self._select()
        if position is not None:
            query = query.where(tuple_after(self.order, position))
        else:
            if after is not None:
                query = query.where(tuple_after(self.order, after))
            if lower is not None:
                query = query.where(self.src.c[self.plan.time_column] >= lower)
        if upto is not None:
            query = query.where(sa.not_(tuple_after(self.order, upto)))
        return query

    def _handle_page(self, rows: list[Any]) -> int:
        """Handle the rows of a page until asked to stop; how many were handled."""
        with self.ctx.target.connect() as conn:
            present = self._present(conn, [self.key_of(r) for r in rows])
        done = 0
        for row in rows:
            if self.ctx.stop.is_set():
                break
            text = self.text_of(self.key_of(row))
            if text in self.handled:
                self.ctx.progress.advance(self.task)
            else:
                self._handle(row, text, present)
            done += 1
        return done

    # -- one recording ------------------------------------------------------------------------------

    def _handle(self, row: Any, text: str, present: set[str]) -> None:
        if text in present:
            self._skipped(row, text)
        else:
            try:
                outcome = self._bring(row)
            except FileProblem as exc:
                self._failed(row, text, exc.reason)
            else:
                self._copied(row, text, outcome)
        self.ctx.progress.advance(self.task)

    def _skipped(self, row: Any, text: str) -> None:
        self.report.skipped += 1
        self.report.skipped_bytes += int(row[self.plan.files.size] or 0)
        if self._retrying:
            self._resolved.append(text)

    def _copied(self, row: Any, text: str, outcome: _Outcome) -> None:
        report = self.report
        report.copied += 1
        report.copied_bytes += outcome.bytes
        report.in_place += int(outcome.in_place)
        report.redone += outcome.redone
        self._inserts.append({c: row[c] for c in self.plan.columns})
        if self._retrying:
            self._resolved.append(text)

    def _failed(self, row: Any, text: str, reason: str) -> None:
        files = self.plan.files
        self.report.failed += 1
        self.report.failed_bytes += int(row[files.size] or 0)
        self._failures.append((text, row[files.name], reason))
        failure = Failure(self.plan.table, json.loads(text), row[files.name], reason)
        if len(self.ctx.report.failures) < MAX_LISTED_FAILURES:
            self.ctx.report.failures.append(failure)
        self.ctx.progress.note(
            f"{self.plan.table} {describe(failure.key)}: FAILED {failure.file_name}: {reason}"
        )

    def _bring(self, row: Any) -> _Outcome:
        """Make the row's file present and checked in the target store."""
        files = self.plan.files
        name, size, sha256 = row[files.name], row[files.size], row[files.sha256]
        size = None if size is None else int(size)
        store = self.ctx.to_store
        outcome = _Outcome()
        state = store.check(name, size, sha256)
        if state == "ok":
            outcome.in_place = True
            return outcome
        if state == "differs":
            owner = self._target_row_naming(name)
            if owner is not None:
                raise FileProblem(
                    name,
                    f"the target store already has a different file under this name, "
                    f"recording {describe(owner)} of the target: not overwritten",
                )
            outcome.redone += 1
        last: CopyCorrupt | None = None
        for _ in range(COPY_ATTEMPTS):
            try:
                outcome.bytes += store.copy_from(self.ctx.from_store, name, size=size, sha256=sha256)
            except CopyCorrupt as exc:
                last = exc
                outcome.redone += 1
                continue
            return outcome
        assert last is not None
        raise FileProblem(name, f"{last.reason} ({COPY_ATTEMPTS} attempts)")

    def _target_row_naming(self, name: str) -> dict[str, Any] | None:
        columns = [self.tgt.c[c] for c in self.plan.identity]
        with self.ctx.target.connect() as conn:
            row = conn.execute(
                sa.select(*columns).where(self.tgt.c[self.plan.files.name] == name).limit(1)
            ).first()
        return None if row is None else self.key_dict(tuple(row))

    # -- writing ------------------------------------------------------------------------------------

    def _flush(self, mark: tuple[Any, ...] | None) -> None:
        """Insert the rows whose files are in place, settle the retry list, move the watermark:
        one transaction."""
        if not (self._inserts or self._resolved or self._failures or mark):
            return
        now = tracking.now()
        with begin_write(self.ctx.target) as conn:
            if self._inserts:
                self._insert_rows(conn, self._inserts)
            self.state.settle(conn, self._resolved, self._failures, now)
            if mark is not None:
                self._write_watermark(conn, mark, now)
        self._inserts, self._resolved, self._failures = [], [], []

    def _insert_rows(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """Insert the rows the target does not hold yet (a concurrent run, or a race with the target)."""
        keys = [self.key_of(r) for r in rows]
        there = self._present(conn, keys)
        rows = [r for r, k in zip(rows, keys, strict=True) if self.text_of(k) not in there]
        if rows:
            conn.execute(self.tgt.insert(), rows)

    def _write_watermark(self, conn: sa.Connection, mark: tuple[Any, ...], now: datetime) -> None:
        text = self.text_of(mark[1:])
        self.state.write_watermark(conn, mark[0], text, now)
        self.report.watermark_time = mark[0]
        self.report.watermark_key = json.loads(text)
