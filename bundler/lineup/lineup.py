"""The lineup: export a root and load it at once, then the next, N at a time, on many machines.

The lineup lives in the target database (``bundler_lineup``, see
:mod:`bundler.lineup.queue`): one row per root and phase, claimed by workers anywhere with a
row lock; kinds go in the tiers the graph gives (vendors before the customers whose DID
numbers they own), and no root of a later tier is claimed before the earlier tiers are
finished. Within a tier, a root whose rows another root references goes first, and roots
that reference each other are claimed as one unit and migrated back to back
(:mod:`bundler.lineup.order`). For each claimed root a worker:

1. finishes what an earlier, interrupted run left: an export whose process died is finished
   or restored (:mod:`bundler.recover`), a bundle exported and not loaded is loaded, a root
   the target already holds is done;
2. otherwise exports it (marking it Exported in the source) and loads it at once;
3. records the outcome and the root's **downtime**: from the moment it was marked Exported
   in the source until it was active in the target.

A root whose load fails gets its status restored in the source and keeps its bundle for a
retry; the lineup goes on and the run exits 1 with every failure listed. A stop request
(Ctrl-C) lets the roots in flight finish and claims nothing new.

With ``workers`` > 1 the workers are processes (:mod:`bundler.lineup.workers`); with one,
the lineup runs in the caller's process. Inside a root's downtime runs only what must: the
snapshot read and the bundle's writing, a check of the bundle just written (manifest bytes
and checksums, not a full verification), and the load's transaction; the graph, the
target's reflected tables and what the configuration layer's ledger says are resolved once
per worker, and the manifest's schema check and the planner statistics come after the
commit. :attr:`RootOutcome.timings` says what each part cost.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from bundler.bundle import open_bundle
from bundler.context import system_graph
from bundler.db import begin_write
from bundler.errors import BundlerError, UsageError
from bundler.export import ConfigSelection, export_config
from bundler.export.layers import Layers
from bundler.graph import Graph
from bundler.keys import key_text
from bundler.lineup.queue import (
    FOREIGN,
    WAIT,
    claim,
    enqueue,
    finish,
    kind_order,
    kind_tiers,
    lineup_table,
    release_stale_claims,
    selected_positions,
    selection,
    unit_rows,
    worker_name,
)
from bundler.lineup.queue import retry_failed as retry_failed_roots
from bundler.lineup.returned import reopen_returned
from bundler.lineup.root import (
    LineupOptions,
    RootOutcome,
    describe_key,
    migrate_root,
    to_store,
)
from bundler.load import TargetCache, load_bundle
from bundler.load.grants import check_target_writable
from bundler.load.load import Written
from bundler.marking import find_root
from bundler.progress import NullProgress, Progress
from bundler.sql import table_clause


@dataclass
class LineupResult:
    outcomes: list[RootOutcome] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    stopped: bool = False
    #: the configuration bundle loaded first: its reused rows that differ, and what they lack
    configuration: RootOutcome | None = None

    @property
    def done(self) -> list[RootOutcome]:
        return [o for o in self.outcomes if o.state == "done"]

    @property
    def failed(self) -> list[RootOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    @property
    def _loaded(self) -> list[RootOutcome]:
        """The loads of the run: the configuration first, then every root done."""
        return ([self.configuration] if self.configuration else []) + self.done

    def downtime(self) -> dict[str, float | None]:
        values = sorted(o.downtime_s for o in self.done if o.downtime_s is not None)
        if not values:
            return {"p50": None, "p95": None, "max": None}
        p95 = values[min(len(values) - 1, max(0, round(0.95 * len(values) + 0.5) - 1))]
        return {"p50": statistics.median(values), "p95": p95, "max": values[-1]}

    def summary(self) -> dict[str, Any]:
        rows = sum(o.rows for o in self.done)
        return {
            "roots": len(self.outcomes),
            "done": len(self.done),
            "failed": len(self.failed),
            "skipped_already_migrated": self.skipped,
            "stopped_early": self.stopped,
            "rows": rows,
            "bytes": sum(o.bytes for o in self.done),
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(rows / self.seconds, 1) if self.seconds else None,
            "downtime_s": {k: None if v is None else round(v, 3) for k, v in self.downtime().items()},
            "failures": [
                {"root": describe_key(o.root_key), "kind": o.kind, "reason": o.message} for o in self.failed
            ],
            "reused_with_differences": sum(len(v) for o in self._loaded for v in o.differing.values()),
            "reused_with_binding_differences": sum(
                1 for o in self._loaded for v in o.differing.values() for item in v if item.get("binding")
            ),
            "lacking_in_target": sum(n for o in self._loaded for n in o.lacking.values()),
            "configuration": self.configuration.to_dict() if self.configuration else None,
            "per_root": [o.to_dict() for o in self.outcomes],
        }


@dataclass(frozen=True)
class RootSelector:
    """Which roots to migrate: named ones, or every top-level root of a kind (``--all``)."""

    kind: str
    idents: tuple[str, ...] = ()
    all: bool = False
    where: str | None = None


# -- building the lineup -----------------------------------------------------------------------


def select_roots(
    source: sa.Engine, selectors: Sequence[RootSelector], *, spec: str | Path | None = None
) -> list[tuple[str, Any, str]]:
    """(kind, source pk, natural key text) of every root the selectors name, each once, in
    lineup order (kinds in the graph's tiers: :func:`~bundler.lineup.queue.kind_order`)."""
    found: dict[tuple[str, str], tuple[str, Any, str]] = {}
    with source.connect() as conn:
        graph, _ = system_graph(conn, spec, create=False)  # a read: nothing is created
        order = kind_order(graph)
        for sel in sorted(selectors, key=lambda s: order.get(s.kind, (len(order), 0))):
            idents = _all_of(conn, graph, sel) if sel.all else list(sel.idents)
            for ident in idents:
                root = find_root(conn, graph, sel.kind, ident)
                found.setdefault((sel.kind, str(root.pk)), (sel.kind, root.pk, key_text(root.key)))
    return list(found.values())


def _all_of(conn: sa.Connection, graph: Graph, sel: RootSelector) -> list[Any]:
    """Every top-level root of ``sel.kind`` that is not terminated (and matches ``--where``)."""
    root_spec = graph.root(sel.kind)
    table = graph.table(root_spec.table)
    pk = table.pk[0]
    t = table_clause(table)
    stmt = sa.select(t.c[pk]).order_by(t.c[pk])
    for col, allowed in root_spec.where.items():
        stmt = stmt.where(t.c[col].in_(allowed))
    for ref in table.owner_refs:  # top level only: the rest travels with its parent
        if ref.table == table.name:
            stmt = stmt.where(t.c[ref.column].is_(None))
    if table.status is not None:
        stmt = stmt.where(t.c[table.status.column].not_in(table.status.terminated))
    if sel.where:
        stmt = stmt.where(sa.text(sel.where))
    return list(conn.execute(stmt).scalars())


# -- the run -------------------------------------------------------------------------------------


class StopFlag(Protocol):
    """A stop request: a :class:`threading.Event`, or a ``multiprocessing`` one in a worker process."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class _Run:
    """One run of the lineup in one process: its worker(s) share the result and the target's cache.

    In a worker process (``--workers N``), ``forward`` sends each outcome to the parent, which
    keeps the result and reports progress (:mod:`bundler.lineup.workers`)."""

    source: sa.Engine
    target: sa.Engine
    system: str
    graph: Graph
    phase: str
    wanted: set[tuple[str, str]]
    options: LineupOptions
    progress: Progress
    stop: StopFlag
    stale_after: float
    result: LineupResult = field(default_factory=LineupResult)
    cache: TargetCache = field(default_factory=TargetCache)  # shared by every load of the run
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)
    waiting_noted: bool = False
    #: the clause that selects the run's roots in the lineup (made at the first claim)
    selected: sa.ColumnElement[bool] | None = None
    layers: Layers | None = None
    #: in a worker process: tells the parent ("claimed", None) and ("outcome", RootOutcome)
    forward: Callable[[str, RootOutcome | None], None] | None = None

    def next_root(self, name: str) -> Any:
        """The next root this worker claims; None when none is left (or a stop was asked).

        While an earlier tier is not finished, waits: polls with a backoff of up to
        ``MAX_POLL`` seconds, and frees claims of workers that died meanwhile (this host's at
        once, others' once ``stale_after`` passed), so the wait ends when those roots end.
        """
        delay = FIRST_POLL
        tiers = kind_tiers(self.graph)
        while not self.stop.is_set():
            if self.selected is None:
                self.selected = selected_positions(self.target, self.system, self.phase, self.wanted)
            row = claim(self.target, self.system, self.phase, name, self.wanted, tiers, self.selected)
            if row is FOREIGN:  # another run placed a root at one of ours: select by keys
                self.selected = selection(self.wanted)
                continue
            if row is not WAIT:
                return row
            with self.lock:
                if not self.waiting_noted:
                    self.waiting_noted = True
                    self.progress.note(
                        "waiting for the roots of an earlier kind (the graph's order) or of a lower level "
                        "(roots whose rows others reference) to finish"
                    )
            if delay >= MAX_POLL:
                release_stale_claims(self.target, self.system, stale_after=self.stale_after)
            self.stop.wait(delay)
            delay = min(delay * 2, MAX_POLL)
        return None

    def warm(self) -> None:
        """Fill the target cache before the first claim: the target's graph and its tables,
        reflected at once, outside every root's downtime."""
        with self.target.connect() as conn, conn.begin():  # as a load's prepare: may register the target
            graph, _ = self.cache.system_graph(conn, self.options.target_spec)
            self.cache.warm(conn, graph.tables)

    def worker_loop(self) -> None:
        name = worker_name()
        self.warm()
        while (claimed := self.next_root(name)) is not None:
            rest = unit_rows(self.target, claimed, name)
            if rest:  # roots that reference each other: claimed together, loaded in one transaction
                self.migrate_unit([claimed, *rest])
            else:
                self.migrate(claimed)

    def migrate_unit(self, rows: list[Any]) -> None:
        """Migrate the claimed roots of one unit together (:mod:`bundler.lineup.together`)."""
        from bundler.lineup.together import migrate_unit

        for _ in rows:
            self.started_one()
        try:
            outcomes = migrate_unit(
                self.source,
                self.target,
                self.system,
                rows,
                self.options,
                self.progress,
                self.cache,
                self.graph,
                self.layers,
            )
        except Exception as exc:
            outcomes = [
                RootOutcome(r.kind, r.root_pk, r.root_key, "failed", message=f"{type(exc).__name__}: {exc}")
                for r in rows
            ]
        for row, outcome in zip(rows, outcomes, strict=True):
            self.finished(row, outcome)

    def migrate(self, row: Any) -> None:
        """Migrate one claimed root, record its outcome in the lineup, and report it."""
        self.started_one()
        try:
            outcome = migrate_root(
                self.source,
                self.target,
                self.system,
                row,
                self.options,
                self.progress,
                self.cache,
                self.graph,
                self.layers,
            )
        except Exception as exc:
            outcome = RootOutcome(
                row.kind, row.root_pk, row.root_key, "failed", message=f"{type(exc).__name__}: {exc}"
            )
        self.finished(row, outcome)

    def started_one(self) -> None:
        """A root is in flight (told to the parent, in a worker process)."""
        if self.forward is not None:
            self.forward("claimed", None)
        else:
            self.claimed()

    def finished(self, row: Any, outcome: RootOutcome) -> None:
        """Record a root's outcome in the lineup, and report it."""
        finish(self.target, row, _finished_values(outcome))
        if self.forward is not None:
            self.forward("outcome", outcome)
        else:
            self.report(outcome)

    def claimed(self) -> None:
        with self.lock:
            self.in_flight += 1

    def report(self, outcome: RootOutcome) -> None:
        """Keep a root's outcome and say so."""
        with self.lock:
            self.in_flight -= 1
            self.result.outcomes.append(outcome)
            done = len(self.result.done)
            rows = sum(o.rows for o in self.result.done)
            rate = rows / max(time.monotonic() - self.started, 1e-9)
            failed, in_flight = len(self.result.failed), self.in_flight
            if self.options.max_failures is not None and failed >= self.options.max_failures:
                if not self.stop.is_set():
                    self.progress.note(f"{failed} failure(s): --max-failures reached, stopping")
                self.stop.set()
        self.progress.advance("lineup", 1)
        state = "done" if outcome.state == "done" else f"FAILED: {outcome.message}"
        self.progress.note(
            f"{outcome.kind} {describe_key(outcome.root_key)}: {state} "
            f"[{done} done, {failed} failed, {in_flight} in flight, {rate:,.0f} rows/s]"
        )


FIRST_POLL = 0.05
MAX_POLL = 2.0


def _finished_values(outcome: RootOutcome) -> dict[str, Any]:
    return {
        "state": outcome.state,
        "bundle_id": outcome.bundle_id,
        "downtime_s": outcome.downtime_s,
        "rows": outcome.rows,
        "bytes": outcome.bytes,
        "message": (outcome.message or "")[:4000] or None,
    }


def run_lineup(
    source: sa.Engine,
    target: sa.Engine,
    selectors: Sequence[RootSelector],
    options: LineupOptions,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    retry_failed: bool = True,
    stale_after: float = 3600.0,
) -> LineupResult:
    """Build (or join) the lineup of the selected roots and migrate them, ``workers`` at a time."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    progress = progress or NullProgress()
    phase = "usage" if options.usage_only else "full"
    with begin_write(source) as conn:
        graph, system = system_graph(conn, options.spec)
    with target.connect() as conn:  # before any root is marked Exported
        check_target_writable(conn, options.target_spec, extra=[lineup_table.name], what="migrate")
    roots = select_roots(source, selectors, spec=options.spec)
    wanted = {(kind, str(pk)) for kind, pk, _ in roots}
    placed = None
    if phase == "full":  # references across roots: the referenced root first, a cycle together
        from bundler.lineup.order import root_placements

        with source.connect() as conn:
            placed = root_placements(conn, graph, roots, kind_tiers(graph), usage=options.xdrs != "none")
    enqueue(target, system.system_id, roots, phase, placed)
    release_stale_claims(target, system.system_id, stale_after=stale_after)
    if retry_failed:
        retry_failed_roots(target, system.system_id, phase, wanted)
    if phase == "full":
        reopened = reopen_returned(source, target, system.system_id, phase, wanted)
        if reopened:
            progress.note(
                f"{reopened} root(s) returned to the source by a reverse transfer: migrating them again"
            )
    with target.connect() as conn:
        t = lineup_table
        already = conn.execute(
            sa.select(sa.func.count())
            .select_from(t)
            .where(t.c.source_system == system.system_id, t.c.phase == phase, t.c.state == "done")
            .where(selection(wanted))
        ).scalar_one()
    options.bundles.mkdir(parents=True, exist_ok=True)
    run = _Run(
        source,
        target,
        system.system_id,
        graph,
        phase,
        wanted,
        options,
        progress,
        stop or threading.Event(),
        stale_after,
    )
    if options.layered and phase == "full" and roots:
        run.layers = configuration_first(
            source, target, graph, system.system_id, options, run.cache, progress, report=run.result
        )
    progress.start("lineup", total=len(roots))
    if workers == 1:
        run.worker_loop()
    else:
        from bundler.lineup.workers import run_processes

        run_processes(run, workers)
    progress.finish("lineup")
    _settle_open_references(target, options, progress)
    result = run.result
    result.stopped = run.stop.is_set()
    result.skipped = already + sum(1 for o in result.outcomes if o.message == "already in the target")
    result.seconds = time.monotonic() - run.started
    order = kind_order(graph)
    result.outcomes.sort(key=lambda o: (order.get(o.kind, (len(order), 0)), o.root_key))
    return result


def _settle_open_references(target: sa.Engine, options: LineupOptions, progress: Progress) -> None:
    """Loads that ran side by side may each have missed the other's rows: set the references
    one left open to rows another brought (see :func:`bundler.load.crossroot.settle_open`)."""
    from bundler.load.crossroot import settle_open

    with begin_write(target) as conn:
        graph, _ = system_graph(conn, options.target_spec)
        done = settle_open(conn, graph)
    if done:
        progress.note(f"set {done} reference(s) that loads running side by side had left open")


def configuration_first(
    source: sa.Engine,
    target: sa.Engine,
    graph: Graph,
    system_id: str,
    options: LineupOptions,
    cache: TargetCache,
    progress: Progress,
    report: LineupResult | None = None,
) -> Layers:
    """Export and load the shared configuration roots reference, once, before any root goes.

    Every shared table an owned or usage row references is exported whole with what it
    needs (a product's rating entries, a tariff's rates), outside every root's downtime;
    the root bundles then refer to this layer (a shared row that changes in the source
    meanwhile is carried again by the next root's bundle). A load that needs decisions or
    lacks prerequisites stops the lineup before any root is marked Exported.
    """
    tables = sorted(
        {
            ref.table
            for spec in graph.tables.values()
            if spec.scope.of_root
            for ref in spec.references
            if graph.table(ref.table).is_shared
        }
    )
    if not tables:
        return Layers(system_id)
    progress.note(f"configuration first: {len(tables)} shared table(s) and what they need")
    exported = export_config(
        source,
        [ConfigSelection(t) for t in tables],
        options.bundles,
        spec=options.spec,
        now=options.now,
        progress=progress,
    )
    loaded = load_bundle(
        target,
        exported.path,
        decisions=options.decisions,
        spec=options.target_spec,
        progress=progress,
        cache=cache,
        written=Written(exported.manifest_sha256) if exported.manifest_sha256 else None,
    )
    if report is not None:
        report.configuration = RootOutcome(
            "configuration",
            "",
            "",
            "done",
            bundle_id=exported.bundle_id,
            differing=loaded.reused_with_differences(),
            lacking=loaded.lacking_in_target(),
        )
    layers = Layers(system_id)
    with open_bundle(exported.path) as bundle:
        layers.add_bundle(bundle, graph)
    problem = to_store(exported.path, options)
    if problem is not None:
        raise BundlerError(f"configuration: {problem}", hint="check the store, then run the lineup again")
    return layers


__all__ = [
    "LineupOptions",
    "LineupResult",
    "RootOutcome",
    "RootSelector",
    "enqueue",
    "key_text",
    "lineup_table",
    "migrate_root",
    "release_stale_claims",
    "run_lineup",
    "select_roots",
]
