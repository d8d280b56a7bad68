"""Clean: remove exactly what was transferred, from the target or from the source.

For customers moved for testing and to be returned, and for tidying either system after
a migration. Not a general clean-up tool: what was never transferred is refused by name.

**What can be named.** A bundle id (``--bundle``), or entities by kind and id or name
(``--customer acme``, ``--kind tariff --id T-Retail``). The kinds come from the
``entities`` section of the entity graph (customer, distributor, reseller, vendor,
product, tariff, access level, DID number, SIM card, CPE in the reference system); the
engine names no billing table. Several may be named in one run: they are planned and
removed together, in one transaction.

**The side.** ``--side target`` removes what loads created, by the target's ledger
(``bundler_loads``, ``bundler_ledger``); ``--side source`` removes what was exported, by
the source's export records (``bundler_exports``, ``bundler_export_marks``). Without
``--side`` a bundle id names its side (it is recorded as a load or as an export); else the
database does: one that recorded loads but no exports is a target, one that recorded
exports but no loads a source; with both or neither the side must be stated.

**Target: the set.** For an entity, the loads are the one whose ledger says it *created*
the entity's row, plus every load that depends on it (the usage bundles of a customer
bundle), transitively. The set is the entity and everything that depends on it
(ownership, downward: a customer's accounts, a tariff's rates, a reseller's
sub-customers, and the usage rows of those), restricted to rows those loads created; then,
upward, every shared row (configuration) those loads created that the set references, with
what belongs to it. For ``--bundle ID`` the same, starting from every row the bundle and
its dependents created. Rows the ledger names as *reused* are never in the set; rows the
ledger does not name are never in the set.

**Source: the set.** The entity must belong (itself, or through its owners: a SIM card to
its customer, a sub-customer to its reseller) to a root that is Exported and has a
finished, marking export (``--no-mark`` audit copies do not count). The set is the
entity's closure as an export computes it (owned rows downward, the shared rows they
reference upward, recomputed from the source as it is now: billing and provisioning stop
at Exported, so it has not changed), and the usage rows of its owned rows inside the usage
window of one of the root's exports (the usage bundles' windows included): usage outside
every window never travelled and is not removed. Shared configuration cannot be named
directly on the source: it goes with the root it was exported with. ``--bundle ID``
names an export: a root bundle (its usage bundles included), or a usage bundle alone (its
usage rows only). Configuration bundles are refused: their rows stay in use in the source.

**Kept rows.** A row of the set that a row outside the set still references is kept,
and so is, in turn, everything that belongs to a kept row and everything a kept row
references: a shared row that another customer still uses survives with its rates; a
customer to which the target added an account after the load is kept whole. Each kept
row is listed with what holds it (``kept tariffs 'T-Retail': still referenced by
products 'X' (not transferred)``), each holder with why it is outside the set: *not
transferred* / *not exported*, *transferred* (or *exported*) *by bundle B, not selected*,
*… outside what was named* (same bundle, not a dependent of the named entity), *not
exported: outside the exported usage window*, or *kept*. Usage outside the exported window
holds its account on the source. Rows held from outside come first, the named rows first
of all.

**Removal.** Children first (reverse dependency order), in one transaction; references
that break cycles (``customers.i_default_site``) and self-references are set to NULL first.
:func:`plan_clean` computes the plan and writes nothing; :func:`run_clean` computes it
again inside its transaction and refuses when the database changed in between (a plan shown
and confirmed first); :func:`clean_now` computes it once inside its transaction and carries out
that plan (``--yes``). Each refuses when a delete removes another number of rows than
planned. The keys of the set's owned and shared rows are held in memory; usage rows (xDRs) never are: they are selected,
counted and deleted by SQL, by owner and by the ledger (target) or the export windows
(source). Run it while no load writes the same rows; a racing insert that a foreign key
protects makes the delete fail and roll back.

**Statistics.** Planning reads the ledger and the tables by owner: on a database a bulk load
has just filled, a planner without statistics chooses plans that never end.
:func:`plan_clean`, :func:`run_clean` and :func:`clean_now` first refresh the statistics of
every table whose statistics are missing or stale (:func:`bundler.db.refresh_stale_statistics`).

**Bookkeeping.** Target: every ledger row that names a removed row goes (a reuse recorded
by another load included: the row it names is gone); a load all of whose created
rows are gone is forgotten (its reused ledger rows and its ``bundler_loads`` row go), so
the same bundle can be loaded again; a load with kept rows keeps its record and the
ledger rows of those rows, so a later clean can finish it. Source: the export marks of
removed rows go; the exports of a removed root are recorded as ``cleaned``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa

from bundler import tracking
from bundler.clean.describe import kept_rows
from bundler.clean.execute import execute
from bundler.clean.model import CleanPlan, CleanRefused, CleanRequest, CleanResult, KeptRow, Selected
from bundler.clean.plan import CleanSet
from bundler.clean.side import Side, choose_side
from bundler.clean.source import SourceSide
from bundler.clean.target import TargetSide
from bundler.context import database_graph
from bundler.db import refresh_stale_statistics
from bundler.errors import BundlerError
from bundler.progress import NullProgress, Progress


def _plan_on(
    connection: sa.Connection, request: CleanRequest, target: sa.Engine | None = None
) -> tuple[CleanPlan, CleanSet]:
    """The plan, computed on ``connection``, and the set it was computed from. ``target`` (for a
    source-side clean) is consulted for the exports it loaded; the plan's request names them."""
    side_name, reason = choose_side(connection, request)
    tracking.ensure_tables(connection)
    graph = database_graph(connection, request.spec)
    side: Side = (
        TargetSide(connection, graph) if side_name == "target" else SourceSide(connection, graph, target)
    )
    side.resolve(request)
    if isinstance(side, SourceSide) and side.loaded:
        request = replace(request, loaded=tuple(sorted(set(request.loaded) | side.loaded)))
    cleanset = CleanSet(side)
    cleanset.merge()
    cleanset.settle()
    counts = cleanset.counts()
    closes, partly = side.closes(cleanset, counts)
    plan = CleanPlan(
        request=request,
        side=side_name,
        side_reason=reason,
        database=connection.engine.url.render_as_string(hide_password=True),
        release=graph.release,
        selected=[Selected(s.what, tuple(sorted(s.bundles))) for s in side.scopes],
        tables=counts,
        unlink=cleanset.unlinks(),
        kept=kept_rows(cleanset),
        closes=closes,
        partly=partly,
    )
    return plan, cleanset


def _request(
    entities: Iterable[tuple[str, str]],
    bundles: Iterable[str],
    side: str | None,
    spec: str | Path | None,
    all_usage: bool,
) -> CleanRequest:
    return CleanRequest(
        tuple((str(k), str(i)) for k, i in entities),
        tuple(str(b) for b in bundles),
        side,
        str(spec) if spec is not None else None,
        all_usage,
    )


def plan_clean(
    engine: sa.Engine,
    *,
    entities: Iterable[tuple[str, str]] = (),
    bundles: Iterable[str] = (),
    side: str | None = None,
    spec: str | Path | None = None,
    all_usage: bool = False,
    target: sa.Engine | None = None,
) -> CleanPlan:
    """What cleaning the named bundles and entities would remove and keep (writes nothing).

    On the source, a root's usage outside its exported windows stays (it never travelled)
    unless ``all_usage`` says to remove it too, or ``target`` is the target that loaded the
    root's export (then the target has the root, and its usage there is the reference).
    """
    request = _request(entities, bundles, side, spec, all_usage)
    refresh_stale_statistics(engine)
    with engine.connect() as connection, connection.begin():
        plan, _ = _plan_on(connection, request, target)
    return plan


def _refresh(engine: sa.Engine, progress: Progress) -> None:
    refreshed = refresh_stale_statistics(engine)
    if refreshed:
        progress.note(f"planner statistics refreshed for {', '.join(refreshed)}")


def _writing(engine: sa.Engine) -> sa.Connection:
    """A connection whose transaction takes SQLite's write lock at once (no upgrade half-way)."""
    return engine.connect().execution_options(sqlite_begin="immediate")


def run_clean(engine: sa.Engine, plan: CleanPlan, *, progress: Progress | None = None) -> CleanResult:
    """Carry out ``plan`` in one transaction; refuses when the database changed since it was made.

    For a plan shown and confirmed first: it is computed again inside the transaction, to
    compare. :func:`clean_now` plans once and carries that plan out."""
    progress = progress or NullProgress()
    started = time.monotonic()
    _refresh(engine, progress)
    with _writing(engine) as connection, connection.begin():
        fresh, cleanset = _plan_on(connection, plan.request)
        if fresh.signature() != plan.signature():
            raise BundlerError(
                "the database changed since the plan was made (rows to remove or to keep differ); nothing was removed",
                hint="look at the new plan (--dry-run) and run the clean again",
            )
        deleted, bookkeeping, closed = execute(cleanset, fresh, progress)
    return CleanResult(fresh, deleted, bookkeeping, closed, time.monotonic() - started)


def clean_now(
    engine: sa.Engine,
    *,
    entities: Iterable[tuple[str, str]] = (),
    bundles: Iterable[str] = (),
    side: str | None = None,
    spec: str | Path | None = None,
    all_usage: bool = False,
    target: sa.Engine | None = None,
    progress: Progress | None = None,
    show: Callable[[CleanPlan], None] | None = None,
) -> CleanResult:
    """Plan and carry out a clean in one transaction, the plan computed once (``clean --yes``).

    ``show`` sees the plan before anything is removed. A plan with nothing to remove and no
    record to close removes nothing (the result's ``rows`` is 0). Arguments as :func:`plan_clean`.
    """
    request = _request(entities, bundles, side, spec, all_usage)
    progress = progress or NullProgress()
    started = time.monotonic()
    _refresh(engine, progress)
    with _writing(engine) as connection, connection.begin():
        plan, cleanset = _plan_on(connection, request, target)
        if show is not None:
            show(plan)
        if plan.rows == 0 and not plan.closes:
            return CleanResult(plan, {}, 0, [], time.monotonic() - started)
        deleted, bookkeeping, closed = execute(cleanset, plan, progress)
    return CleanResult(plan, deleted, bookkeeping, closed, time.monotonic() - started)


__all__ = [
    "CleanPlan",
    "CleanRefused",
    "CleanRequest",
    "CleanResult",
    "KeptRow",
    "Selected",
    "clean_now",
    "plan_clean",
    "run_clean",
]
