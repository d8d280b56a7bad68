"""The lineup's table in the target (``bundler_lineup``) and how workers share it.

One row per root and phase. Workers anywhere claim their next root with a row lock
(``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL and MariaDB; SQLite serialises
writers, so an immediate transaction does) and need no coordinator.

**Kinds go in tiers, and a tier is a barrier.** The graph says which kinds need which:
a kind whose rows reference rows another kind owns (a customer's DID assignments point at
a vendor's DID numbers) comes after it (:func:`kind_tiers`). No root of a later tier is
claimed while a root of an earlier tier of this run's selection is still pending, or while
any worker of any run still holds a root of an earlier tier: the claim answers
:data:`WAIT`, and the worker polls again with a short backoff. A root that failed counts
as finished: later tiers still go (a root that needed it fails its load's preflight and is
restored in the source, listed with the rest).

**Within a tier, levels** (:mod:`bundler.lineup.order`): a root whose rows another root
references has a lower level and goes first; a claim waits the same way until the lower
levels of its tier are finished. Roots that reference each other form a **unit**: the claim
takes the unit whole (:func:`unit_rows`), and one worker migrates its roots back to back.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from bundler import tracking
from bundler.db import begin_write, contended
from bundler.graph import Graph
from bundler.lineup.order import Placement
from bundler.sql import chunks

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

lineup_metadata = sa.MetaData()
lineup_table = sa.Table(
    "bundler_lineup",
    lineup_metadata,
    sa.Column("source_system", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("root_pk", sa.String(255), primary_key=True),
    sa.Column("phase", sa.String(8), primary_key=True),  # full | usage
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("root_key", sa.String(255), nullable=False),
    sa.Column("state", sa.String(12), nullable=False),  # pending | claimed | done | failed
    sa.Column("worker", sa.String(128)),
    sa.Column("claimed_at", TIMESTAMP),
    sa.Column("finished_at", TIMESTAMP),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("bundle_id", sa.String(64)),
    sa.Column("downtime_s", sa.Float),
    sa.Column("rows", sa.BigInteger),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("message", sa.Text),
    # the root's place within its tier (bundler.lineup.order): lower levels go first; the roots
    # of a unit (they reference each other) are claimed together, by one worker
    sa.Column("level", sa.Integer),
    sa.Column("unit", sa.Integer),
    sa.Index("ix_bundler_lineup_state", "source_system", "phase", "state", "position"),
)

T = TypeVar("T")
RETRIES = 6


class _Wait:
    """The claim's answer when roots remain but an earlier tier is not finished yet."""

    def __repr__(self) -> str:
        return "WAIT"


WAIT = _Wait()


_upgraded: set[str] = set()


def ensure_lineup(connection: sa.Connection) -> None:
    """Create the lineup's table, or add the columns an older bundler's table lacks (once per
    database and process)."""
    tracking.create_tables(connection, lineup_metadata)
    url = connection.engine.url.render_as_string(hide_password=True)
    if url not in _upgraded:
        tracking.add_missing_columns(connection, lineup_metadata)
        _upgraded.add(url)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


def retrying(fn: Callable[[], T]) -> T:
    """Run ``fn`` (one transaction on the lineup) again when the database reports a deadlock."""
    for attempt in range(1, RETRIES + 1):
        try:
            return fn()
        except sa.exc.DBAPIError as exc:
            if attempt == RETRIES or not contended(exc):
                raise
            time.sleep(random.uniform(0.02, 0.1) * attempt)  # jitter: racing workers drift apart
    raise AssertionError("unreachable")


# -- the order of kinds ------------------------------------------------------------------------


def _owned_tables(graph: Graph, table: str) -> set[str]:
    found, todo = {table}, [table]
    while todo:
        for child, _ in graph.owned_children[todo.pop()]:
            if child.name not in found:
                found.add(child.name)
                todo.append(child.name)
    return found


def kind_tiers(graph: Graph) -> dict[str, int]:
    """Each root kind's tier (0 goes first), from the graph: kind A goes after kind B when
    rows A owns reference rows that B owns and A does not. A nullable reference gives way
    to a NOT NULL one the other way (a vendor's customer counterpart, pre-configured on the
    target, does not hold the vendors back). Kinds that need each other share a tier."""
    owned = {kind: _owned_tables(graph, r.table) for kind, r in graph.roots.items()}

    def refs(kind: str, other: str) -> list[bool]:
        """The nullability of each reference from what ``kind`` owns to what only ``other`` owns."""
        only_theirs = owned[other] - owned[kind]
        return [
            ref.nullable
            for name in owned[kind]
            for ref in graph.table(name).references
            if not ref.owner and ref.table in only_theirs
        ]

    def strongly(kind: str, other: str) -> bool:
        return any(not nullable for nullable in refs(kind, other))

    needs: dict[str, set[str]] = {}
    for kind in owned:
        needs[kind] = {
            other
            for other in owned
            if other != kind and refs(kind, other) and (strongly(kind, other) or not strongly(other, kind))
        }
    tiers: dict[str, int] = {}
    tier = 0
    while len(tiers) < len(needs):
        ready = [k for k in needs if k not in tiers and needs[k] <= set(tiers)]
        for kind in ready or [k for k in needs if k not in tiers]:  # a cycle: the rest together
            tiers[kind] = tier
        tier += 1
    return tiers


def kind_order(graph: Graph) -> dict[str, tuple[int, int]]:
    """Sort key per kind: its tier, then its place among the graph's roots."""
    tiers = kind_tiers(graph)
    return {kind: (tiers[kind], i) for i, kind in enumerate(graph.roots)}


# -- building the lineup -----------------------------------------------------------------------


def enqueue(
    target: sa.Engine,
    source_system: str,
    roots: Sequence[tuple[str, Any, str]],
    phase: str,
    placed: dict[tuple[str, str], Placement] | None = None,
) -> int:
    """Add the roots the lineup does not have yet (each once); returns how many were added.

    ``placed``: each root's level and unit (:func:`bundler.lineup.order.placements`); the
    roots already in the lineup and still pending (or failed) take theirs too."""
    unique = list({(kind, str(pk)): (kind, pk, key) for kind, pk, key in roots}.values())
    placed = placed or {}

    def once() -> int:
        with begin_write(target) as conn:
            ensure_lineup(conn)
            t = lineup_table
            have = {
                (r.kind, r.root_pk)
                for r in conn.execute(
                    sa.select(t.c.kind, t.c.root_pk).where(
                        t.c.source_system == source_system, t.c.phase == phase
                    )
                )
            }
            start = conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(t.c.position), 0)).where(
                    t.c.source_system == source_system
                )
            ).scalar_one()
            new = [
                {
                    "source_system": source_system,
                    "kind": kind,
                    "root_pk": str(pk),
                    "phase": phase,
                    "position": start + i + 1,
                    "root_key": key[:255],
                    "state": "pending",
                    "attempts": 0,
                }
                for i, (kind, pk, key) in enumerate(r for r in unique if (r[0], str(r[1])) not in have)
            ]
            if new:
                conn.execute(t.insert(), new)
            if placed:
                _place(conn, source_system, phase, placed)
            return len(new)

    for attempt in range(3):
        try:
            return retrying(once)
        except sa.exc.IntegrityError:
            if attempt == 2:
                raise
            time.sleep(0.1 * (attempt + 1))  # another worker enqueued the same roots: read again
    raise AssertionError("unreachable")


def _place(
    conn: sa.Connection, source_system: str, phase: str, placed: dict[tuple[str, str], Placement]
) -> None:
    """Set the level and unit of the roots of ``placed`` still to migrate; a unit is numbered by the
    lowest position among its roots (positions are unique in the lineup)."""
    t = lineup_table
    base = (t.c.source_system == source_system, t.c.phase == phase)
    positions = {
        (r.kind, r.root_pk): r.position
        for r in conn.execute(
            sa.select(t.c.kind, t.c.root_pk, t.c.position).where(*base, selection(set(placed)))
        )
    }
    units: dict[int, int] = {}
    for root, place in placed.items():
        if place.unit is not None and root in positions:
            units[place.unit] = min(units.get(place.unit, positions[root]), positions[root])
    changes = [
        {
            "_kind": kind,
            "_pk": pk,
            "_level": place.level,
            "_unit": None if place.unit is None else units[place.unit],
        }
        for (kind, pk), place in placed.items()
        if (kind, pk) in positions
    ]
    stmt = (
        sa.update(t)
        .where(*base, t.c.kind == sa.bindparam("_kind"), t.c.root_pk == sa.bindparam("_pk"))
        .where(sa.or_(t.c.state == "pending", t.c.state == "failed"))  # a failed one goes again
        .values(level=sa.bindparam("_level"), unit=sa.bindparam("_unit"))
    )
    for part in chunks(changes, 1000):
        conn.execute(stmt, part)


#: a selection of more roots than this is the whole lineup in practice (selected as such)
WHOLE_LINEUP = 10_000


def selection(wanted: set[tuple[str, str]]) -> sa.ColumnElement[bool]:
    t = lineup_table
    if len(wanted) > WHOLE_LINEUP:
        return sa.true()
    by_kind: dict[str, list[str]] = {}
    for kind, pk in wanted:
        by_kind.setdefault(kind, []).append(pk)
    return sa.or_(*(sa.and_(t.c.kind == k, t.c.root_pk.in_(v)) for k, v in by_kind.items()))


#: a run's roots in more position ranges than this are selected by their keys
MAX_RANGES = 50


def selected_positions(
    target: sa.Engine, source_system: str, phase: str, wanted: set[tuple[str, str]]
) -> sa.ColumnElement[bool]:
    """A clause that selects the lineup rows of ``wanted``, by the ranges of positions they hold.

    The keys themselves (:func:`selection`) make every claim send and plan a thousand values
    for a thousand roots (45 ms a claim on PostgreSQL here, 6 ms by positions). Positions are
    given once, each above every position the lineup had (:func:`enqueue`), so the rows placed
    after this clause was made fall outside its ranges. Two runs placing roots at the same
    instant may give two rows one position: the claim then checks the root it found, and a
    root of another run (:data:`FOREIGN`) makes the run select by keys from then on. With more
    than :data:`MAX_RANGES` ranges (runs' roots interleaved), the keys are the clause."""
    t = lineup_table
    if len(wanted) > WHOLE_LINEUP:
        return selection(wanted)
    with target.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.kind, t.c.root_pk, t.c.position)
            .where(t.c.source_system == source_system, t.c.phase == phase)
            .order_by(t.c.position)
        ).all()
    ranges: list[list[int]] = []
    inside = False
    for kind, root_pk, position in rows:
        if (kind, root_pk) not in wanted:
            inside = False
        elif inside:
            ranges[-1][1] = position
        else:
            ranges.append([position, position])
            inside = True
    if not ranges:
        return sa.false()
    if len(ranges) > MAX_RANGES:
        return selection(wanted)
    return sa.or_(*(t.c.position.between(low, high) for low, high in ranges))


def retry_failed(target: sa.Engine, source_system: str, phase: str, wanted: set[tuple[str, str]]) -> None:
    """Roots that failed in an earlier run are tried again, once per run."""
    t = lineup_table

    def once() -> None:
        with begin_write(target) as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.source_system == source_system, t.c.phase == phase, t.c.state == "failed")
                .where(selection(wanted))
                .values(state="pending")
            )

    retrying(once)


# -- claiming ----------------------------------------------------------------------------------


def _open_tiers(
    conn: sa.Connection, source_system: str, phase: str, where: sa.ColumnElement[bool], tiers: dict[str, int]
) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(first (tier, level) with a pending root of ours (``where``), first (tier, level) with a
    root any worker holds)."""
    t = lineup_table
    base = (t.c.source_system == source_system, t.c.phase == phase)
    level = sa.func.coalesce(t.c.level, 0)
    pending = conn.execute(
        sa.select(t.c.kind, level).where(*base, t.c.state == "pending", where).distinct()
    ).all()
    held = conn.execute(sa.select(t.c.kind, level).where(*base, t.c.state == "claimed").distinct()).all()
    last = max(tiers.values(), default=0) + 1  # a kind the graph does not know goes last
    ours = [(tiers.get(k, last), n) for k, n in pending]
    theirs = [(tiers.get(k, last), n) for k, n in held]
    return min(ours, default=None), min(theirs, default=None)


def claim(
    target: sa.Engine,
    source_system: str,
    phase: str,
    worker: str,
    wanted: set[tuple[str, str]],
    tiers: dict[str, int],
    selected: sa.ColumnElement[bool] | None = None,
) -> sa.Row[Any] | _Wait | _Foreign | None:
    """Claim the next pending root of this run's selection (other runs' roots stay for them):
    a row, :data:`WAIT` (an earlier tier or level is not finished: poll again), or None
    (nothing left). A root of a unit is claimed with the rest of its unit (:func:`unit_rows`).

    ``selected``: a clause that holds for every root of ``wanted`` (:func:`selected_positions`);
    the root it finds is claimed only when ``wanted`` has it, else :data:`FOREIGN` is the answer."""
    return retrying(lambda: _claim_once(target, source_system, phase, worker, wanted, tiers, selected))


class _Foreign:
    """The claim's answer when the clause standing for the selection found another run's root."""

    def __repr__(self) -> str:
        return "FOREIGN"


FOREIGN = _Foreign()


def _claim_once(
    target: sa.Engine,
    source_system: str,
    phase: str,
    worker: str,
    wanted: set[tuple[str, str]],
    tiers: dict[str, int],
    selected: sa.ColumnElement[bool] | None,
) -> sa.Row[Any] | _Wait | _Foreign | None:
    t = lineup_table
    conn_opts: dict[str, Any] = {"sqlite_begin": "immediate"}
    where = selection(wanted) if selected is None else selected
    with target.connect().execution_options(**conn_opts) as conn, conn.begin():
        ours, held = _open_tiers(conn, source_system, phase, where, tiers)
        if ours is None:
            return None
        if held is not None and held < ours:
            return WAIT  # a root of an earlier tier or level is in flight somewhere
        tier, level = ours
        last = max(tiers.values(), default=0) + 1
        kinds = {k for k, v in tiers.items() if v == tier} if tier < last else None
        base = (t.c.source_system == source_system, t.c.phase == phase, t.c.state == "pending")
        stmt = sa.select(t).where(*base, where, sa.func.coalesce(t.c.level, 0) == level)
        stmt = stmt.where(t.c.kind.in_(kinds) if kinds is not None else t.c.kind.not_in(list(tiers)))
        stmt = stmt.order_by(t.c.position).limit(1)
        if conn.dialect.name in ("postgresql", "mysql"):
            stmt = stmt.with_for_update(skip_locked=True)
        row = conn.execute(stmt).first()
        if row is None:
            return WAIT  # another worker is claiming the last ones of this tier right now
        if (row.kind, row.root_pk) not in wanted:
            return FOREIGN  # a root another run placed at the same time (see selected_positions)
        same = sa.and_(t.c.kind == row.kind, t.c.root_pk == row.root_pk)
        if row.unit is not None:  # the rest of its unit goes with it, to this worker
            same = sa.or_(same, sa.and_(t.c.unit == row.unit, selection(wanted)))
        conn.execute(
            sa.update(t)
            .where(*base, same)
            .values(state="claimed", worker=worker, claimed_at=tracking.now(), attempts=t.c.attempts + 1)
        )
        return row


def unit_rows(target: sa.Engine, row: Any, worker: str) -> list[sa.Row[Any]]:
    """The other roots of ``row``'s unit that the same claim gave ``worker``, in lineup order."""
    if getattr(row, "unit", None) is None:
        return []
    t = lineup_table
    with target.connect() as conn:
        return list(
            conn.execute(
                sa.select(t)
                .where(t.c.source_system == row.source_system, t.c.phase == row.phase)
                .where(t.c.unit == row.unit, t.c.state == "claimed", t.c.worker == worker)
                .where(sa.not_(sa.and_(t.c.kind == row.kind, t.c.root_pk == row.root_pk)))
                .order_by(t.c.position)
            ).all()
        )


def finish(target: sa.Engine, row: sa.Row[Any], values: dict[str, Any]) -> None:
    """Record how a claimed root ended (``values``: state, bundle_id, downtime_s, …)."""
    t = lineup_table

    def once() -> None:
        with begin_write(target) as conn:
            conn.execute(
                sa.update(t)
                .where(
                    t.c.source_system == row.source_system, t.c.kind == row.kind, t.c.root_pk == row.root_pk
                )
                .where(t.c.phase == row.phase)
                .values(finished_at=tracking.now(), **values)
            )

    retrying(once)


def release_stale_claims(target: sa.Engine, source_system: str, *, stale_after: float) -> int:
    """Claims of workers that died: this host's dead processes at once, others after ``stale_after`` s."""
    return retrying(lambda: _release_once(target, source_system, stale_after))


def _release_once(target: sa.Engine, source_system: str, stale_after: float) -> int:
    t = lineup_table
    host = socket.gethostname()
    released = 0
    with begin_write(target) as conn:
        ensure_lineup(conn)
        rows = conn.execute(
            sa.select(t).where(t.c.source_system == source_system, t.c.state == "claimed")
        ).all()
        for row in rows:
            name, _, rest = (row.worker or "").partition(":")
            pid = int(rest.split(":")[0]) if rest.split(":")[0].isdigit() else -1
            dead = (
                name == host
                and pid > 0
                and pid != os.getpid()
                and not tracking.ProcessRef(host, pid, None).alive()
            )
            old = (
                row.claimed_at is not None and (tracking.now() - row.claimed_at).total_seconds() > stale_after
            )
            if dead or old:
                conn.execute(
                    sa.update(t)
                    .where(
                        t.c.source_system == source_system, t.c.kind == row.kind, t.c.root_pk == row.root_pk
                    )
                    .where(t.c.phase == row.phase, t.c.state == "claimed")
                    .values(state="pending", worker=None, message=f"released: worker {row.worker} stopped")
                )
                released += 1
    return released
