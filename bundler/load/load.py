"""Load: import a bundle into the target, in one transaction.

1. **verify** the bundle (the checks of ``bundler inspect verify``);
2. **translate** its data from the bundle's release to the target's (declared rules);
3. **preflight**: every prerequisite it names exists in the target (all missing listed)
   (:mod:`~bundler.load.preflight`);
4. **decide**: each shared row is matched by natural key; matches are reused, created
   or abort the load as the decisions sidecar says; open questions stop the load
   before anything is written and leave a template beside the bundle
   (:mod:`~bundler.load.decide`);
5. **write** tables in dependency order with ids from the target, every reference
   rewritten through the id maps, cycles broken with NULL-then-UPDATE
   (:mod:`~bundler.load.write`);
6. **record** the load and every row in ``bundler_loads`` and ``bundler_ledger``;
7. **activate** the root (:mod:`~bundler.load.record`).

A failure anywhere rolls everything back. The steps share one
:class:`~bundler.load.state.LoadState` per attempt; this module opens the bundle once,
verifies it, and runs the attempts (a load that loses a race to a concurrent one is run
again).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import Bundle, open_bundle
from bundler.context import bundle_graph, system_graph
from bundler.db import analyze, contended, written_enough
from bundler.errors import BundleInvalid, BundlerError, DatabaseError, RootError, SpecError
from bundler.keys import describe
from bundler.load.cache import TargetCache
from bundler.load.charges import apply_charges
from bundler.load.charges import metadata as charges_metadata
from bundler.load.decide import decide
from bundler.load.decisions import load_decisions, template, write_sidecar
from bundler.load.preflight import check_owned_conflicts, preflight
from bundler.load.record import activate, record, remember_shared
from bundler.load.state import Asker, Contended, LoadState, TablePlan, first_line, typed
from bundler.load.write import write
from bundler.progress import NullProgress, Progress

if TYPE_CHECKING:
    from bundler.graph import Graph

__all__ = ["Asker", "LoadResult", "TablePlan", "TargetCache", "Written", "load_bundle"]


@dataclass(frozen=True)
class Written:
    """A bundle this process has just written (and validated while writing it): the sha256
    of its manifest as written. Its load checks only what can have changed since — the
    manifest's bytes and the files' sizes and checksums — not the whole bundle again."""

    manifest_sha256: str


@dataclass
class LoadResult:
    bundle_id: str
    bundle: str
    outcome: str  # loaded | already-loaded | dry-run
    tables: dict[str, TablePlan]
    decisions: list[dict[str, Any]]
    seconds: float
    root_target_pk: Any = None
    #: tables whose planner statistics were refreshed after the commit, and the seconds it took
    statistics_refreshed: list[str] = field(default_factory=list)
    statistics_seconds: float = 0.0
    #: seconds per step of the attempt that committed (verify, preflight, decide, write, …)
    steps: dict[str, float] = field(default_factory=dict)
    #: ``time.monotonic()`` when the load committed (the root is active in the target)
    committed_at: float | None = None

    @property
    def created(self) -> int:
        return sum(p.created for p in self.tables.values())

    @property
    def reused(self) -> int:
        return sum(p.reused for p in self.tables.values())

    def reused_with_differences(self) -> dict[str, list[dict[str, Any]]]:
        """Per shared table, the reused rows that differ from the target's (binding columns named)."""
        return {t: p.differing for t, p in sorted(self.tables.items()) if p.differing}

    def lacking_in_target(self) -> dict[str, int]:
        """Per shared table, the parts of reused rows the target's rows lack (not carried; ``merge`` adds them)."""
        return {t: p.skipped for t, p in sorted(self.tables.items()) if p.skipped}

    def summary(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "bundle": self.bundle,
            "outcome": self.outcome,
            "rows_created": self.created,
            "rows_reused": self.reused,
            "root_target_pk": self.root_target_pk,
            "tables": {
                t: {
                    "created": p.created,
                    "reused": p.reused,
                    "skipped": p.skipped,
                    "renamed": p.renamed,
                    "merged": p.merged,
                }
                for t, p in sorted(self.tables.items())
            },
            "decisions": self.decisions,
            "reused_with_differences": self.reused_with_differences(),
            "lacking_in_target": self.lacking_in_target(),
            "seconds": round(self.seconds, 3),
        }


RETRIES = 12
#: rows per batch a load writes (``load_bundle``'s ``batch_rows``)
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class _Request:
    """What one call of :func:`load_bundle` asks, the same for every attempt."""

    bundle: Bundle
    bundle_path: str | Path
    decisions: str | Path | None
    dry_run: bool
    spec: str | Path | None
    progress: Progress
    asker: Asker | None
    batch_rows: int
    cache: TargetCache | None
    steps: dict[str, float] = field(default_factory=dict)
    again: bool = False


def load_bundle(
    engine: sa.Engine,
    bundle_path: str | Path,
    *,
    decisions: str | Path | None = None,
    dry_run: bool = False,
    spec: str | Path | None = None,
    progress: Progress | None = None,
    asker: Asker | None = None,
    batch_rows: int = BATCH_ROWS,
    verify: bool = True,
    cache: TargetCache | None = None,
    written: Written | None = None,
    again: bool = False,
) -> LoadResult:
    """Load one bundle into the target (see the module docstring for the steps).

    ``cache``: what to share with the other loads of a run into the same target (see
    :class:`TargetCache`; a lineup passes one for its whole run). ``written``: the bundle was
    just written by this process (see :class:`Written`): checked, not verified again. ``again``: load a root
    whose graph has no status column although another bundle of it was loaded (a fresh copy).

    Loads running at the same time may race for the same new shared row (two customers
    bringing the same destination): the loser's transaction is rolled back and run again,
    and then finds the row the other load created.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    with open_bundle(bundle_path) as bundle:
        if written is not None:
            _check_written(bundle, written)
        elif verify:
            _verify(bundle, spec)
        bundle.require_column_keys()
        request = _Request(
            bundle, bundle_path, decisions, dry_run, spec, progress, asker, batch_rows, cache, again=again
        )
        request.steps["verify"] = time.monotonic() - started
        result = _attempts(engine, request)
        result.seconds = time.monotonic() - started
        return result


def _attempts(engine: sa.Engine, request: _Request) -> LoadResult:
    """Run the load until it is not contended, at most :data:`RETRIES` times."""
    return retried(request, lambda: _load_once(engine, request))


T = TypeVar("T")


def retried(request: _Request, once: Callable[[], T]) -> T:
    """Run ``once`` (a load's transaction: ``request``'s, or one holding it with others) until
    it is not contended, at most :data:`RETRIES` times."""
    bundle = request.bundle
    for attempt in range(1, RETRIES + 1):
        try:
            return once()
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            raise DatabaseError(
                f"bundle {bundle.bundle_id}: the target database went away ({first_line(exc.orig)})",
                hint="if that happened while committing, the outcome is unknown: load the bundle again "
                "(a load that did commit reports already-loaded)",
            ) from exc
        except Contended as exc:
            if attempt == RETRIES:
                raise BundlerError(
                    f"bundle {bundle.bundle_id}: gave up after {RETRIES} attempts: {exc}",
                    hint="other loads keep conflicting with this one; load it again later",
                ) from None
            request.progress.note(f"{bundle.bundle_id}: another load got there first ({exc}); trying again")
            time.sleep(random.uniform(0.05, 0.25) * attempt)  # jitter: racing loads drift apart
    raise AssertionError("unreachable")


def _load_once(engine: sa.Engine, request: _Request) -> LoadResult:
    """One attempt, in one transaction (rolled back for a dry run)."""
    clock = _Clock(request.steps)
    with engine.connect().execution_options(sqlite_begin="immediate") as connection:
        graph, system = prepare(connection, [request])
        with connection.begin() as txn:
            ran = run_in(connection, request, graph, system, clock)
            if isinstance(ran, LoadResult):
                return ran
            outcome = "loaded"
            if request.dry_run:
                txn.rollback()
                outcome = "dry-run"
        committed_at = clock.lap("commit")
    return finished(engine, request, ran, outcome, committed_at)


def prepare(connection: sa.Connection, requests: list[_Request]) -> tuple[Graph, tracking.SystemInfo]:
    """The target's graph and system, and the tables late usage needs, before the loads'
    transaction (DDL: MariaDB commits it)."""
    with connection.begin():
        cache = requests[0].cache
        if cache is not None:  # a run into one target: resolved once
            graph, system = cache.system_graph(connection, requests[0].spec)
        else:
            graph, system = system_graph(connection, requests[0].spec)
        if any(r.bundle.manifest.usage.late_after for r in requests):
            tracking.create_tables(connection, charges_metadata)
    return graph, system


def run_in(
    connection: sa.Connection, request: _Request, graph: Graph, system: Any, clock: _Clock
) -> tuple[LoadState, Any] | LoadResult:
    """Load ``request``'s bundle in the transaction open on ``connection``: its state and root
    key, or the result of a load the target recorded already."""
    from bundler.load.translate import translator_for

    bundle = request.bundle
    done = _already_loaded(connection, request, graph)
    if done is not None:
        return done
    if not request.again:
        _refuse_loaded_root(connection, graph, request)
    # a record left: a clean removed the root and kept some rows; load it again, reusing them
    reload = _recorded(connection, bundle.bundle_id)
    translator = translator_for(bundle_graph(bundle.manifest.graph.release, request.spec), graph)
    state = LoadState(
        connection,
        bundle,
        graph,
        system,
        translator,
        load_decisions(request.decisions),
        request.progress,
        request.asker,
        request.batch_rows,
        request.cache,
    )
    clock.lap("begin")
    return state, _run_steps(state, request.decisions, clock, reload)


def finished(
    engine: sa.Engine, request: _Request, ran: tuple[LoadState, Any], outcome: str, committed_at: float
) -> LoadResult:
    """The result of a load whose transaction ended (``outcome``); after a commit, the run's
    cache learns its shared rows and the planner statistics are refreshed."""
    state, root_pk = ran
    if request.cache is not None and outcome == "loaded":  # committed: the next loads may know it
        remember_shared(state, request.cache)
    bundle = request.bundle
    result = LoadResult(
        bundle.bundle_id, str(request.bundle_path), outcome, state.plans, state.decided, 0.0, root_pk
    )
    result.steps, result.committed_at = dict(request.steps), committed_at
    if outcome == "loaded":
        _refresh_statistics(engine, state, result)
    return result


def _refresh_statistics(engine: sa.Engine, state: LoadState, result: LoadResult) -> None:
    """After the commit: fresh planner statistics for the tables the load wrote many rows into.

    A bulk load leaves them without statistics (or with those of a much smaller table), and
    the next reader of the target (a clean, a reverse export) would plan its queries blind.
    A failure here is noted, never raised: the load is committed.
    """
    written = {t: p.created for t, p in state.plans.items() if p.created}
    written[tracking.ledger_table.name] = state.ledger_rows
    try:
        with engine.connect() as connection:
            tables = written_enough(connection, written)
        result.statistics_seconds = analyze(engine, tables)
    except sa.exc.SQLAlchemyError as exc:
        state.progress.note(
            f"{state.bundle_id}: loaded; refreshing planner statistics failed ({first_line(exc)})"
        )
        return
    result.statistics_refreshed = tables
    if tables:
        state.progress.note(
            f"{state.bundle_id}: planner statistics refreshed for {', '.join(tables)} "
            f"({result.statistics_seconds:.2f} s)"
        )


def _recorded(connection: sa.Connection, bundle_id: str) -> bool:
    loads = tracking.loads_table
    return (
        connection.execute(sa.select(loads.c.bundle_id).where(loads.c.bundle_id == bundle_id)).first()
        is not None
    )


def _already_loaded(connection: sa.Connection, request: _Request, graph: Graph) -> LoadResult | None:
    """The result of a load of this very bundle the target recorded (a different one refused);
    None also when a clean has removed the root it brought (:mod:`bundler.load.reload`)."""
    from bundler.load.reload import root_cleaned

    bundle = request.bundle
    loads = tracking.loads_table
    done = connection.execute(sa.select(loads).where(loads.c.bundle_id == bundle.bundle_id)).first()
    if done is None:
        return None
    if done.manifest_sha256 != bundle.manifest_sha256:
        raise BundleInvalid(
            str(request.bundle_path),
            [f"a different bundle with id {bundle.bundle_id} was loaded on {done.loaded_at}"],
            hint="bundle ids are unique: this one was altered or re-made by hand",
        )
    if root_cleaned(connection, graph, done):
        return None
    root_pk = typed(done.root_target_pk) if done.root_target_pk else None
    return LoadResult(bundle.bundle_id, str(request.bundle_path), "already-loaded", {}, [], 0.0, root_pk)


def _refuse_loaded_root(connection: sa.Connection, graph: Graph, request: _Request) -> None:
    """Without a status column, the load records guard the root: a root of the same source
    that another bundle brought (and no clean removed since) is refused."""
    manifest = request.bundle.manifest
    root = manifest.root
    if root is None or manifest.kind not in graph.roots:
        return
    spec = graph.tables.get(root.table)
    if spec is None or spec.status is not None:
        return
    loads = tracking.loads_table
    earlier = connection.execute(
        sa.select(loads.c.bundle_id).where(
            loads.c.source_system == manifest.source.system_id,
            loads.c.kind == manifest.kind,
            loads.c.root_source_pk == str(root.source_pk),
            loads.c.outcome == "loaded",
        )
    ).first()
    if earlier is not None:
        raise RootError(
            f"bundle {request.bundle.bundle_id}: {manifest.kind} {describe(root.natural_key)} was loaded "
            f"already by bundle {earlier.bundle_id} ({root.table} has no status column: the load records keep it)",
            hint="clean that load from the target first (bundler clean), or load with --again for a fresh copy",
        )


class _Clock:
    """Seconds per step into ``steps`` (the load's timing breakdown)."""

    def __init__(self, steps: dict[str, float]) -> None:
        self.steps, self.last = steps, time.monotonic()

    def lap(self, step: str) -> float:
        now = time.monotonic()
        self.steps[step] = now - self.last
        self.last = now
        return now


def _run_steps(
    state: LoadState, decisions: str | Path | None, clock: _Clock | None = None, reload: bool = False
) -> Any:
    """Preflight, decide, write, activate and record; the root's target key.

    ``reload``: the target recorded this bundle, and a clean removed its root since.
    """
    from bundler.load.crossroot import complete_open, record_open
    from bundler.load.reload import drop_record, restore_created

    clock = clock or _Clock({})
    try:
        preflight(state)
        _replace_returned(state)
        check_owned_conflicts(state)
        clock.lap("preflight")
        decide(state)
        if state.asker is not None and state.asked and decisions is not None:
            write_sidecar(Path(decisions), template(state.bundle_id, state.asked, state.decisions))
        clock.lap("decide")
        kept = drop_record(state.conn, state.bundle_id) if reload else {}
        write(state)
        record_open(state)
        complete_open(state)
        if kept:
            restored = restore_created(state.conn, state.bundle_id, kept)
            state.progress.note(
                f"{state.bundle_id}: loaded again after a clean; reused {restored} row(s) it had kept"
            )
        apply_charges(state)  # late usage: its charges move the balances, in this transaction
        clock.lap("write")
        root_pk = activate(state)
        record(state, root_pk)
        clock.lap("record")
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseError(
                f"bundle {state.bundle_id}: the target database went away during the load "
                f"({first_line(exc.orig)})",
                hint="nothing was committed; load the bundle again when the target is back",
            ) from exc
        if contended(exc):
            raise Contended(first_line(exc.orig)) from exc
        raise
    return root_pk


def _replace_returned(state: LoadState) -> None:
    """A root a reverse transfer returned to the source comes again: its stale copy in the
    target goes first, in this load's transaction (:mod:`bundler.clean.returned`)."""
    from bundler.clean.returned import remove_returned, returned_copy

    manifest = state.bundle.manifest
    root = manifest.root
    if root is None or manifest.kind not in state.graph.roots or root.table not in state.graph.tables:
        return
    copy = returned_copy(state.conn, state.graph, root.table, root.natural_key)
    if copy is None:
        return
    removed = remove_returned(state.conn, state.graph, copy, state.progress)
    state.progress.note(
        f"{state.bundle_id}: removed the stale copy of {root.table} {describe(root.natural_key)} "
        f"(returned by {copy.reverse_bundle}): " + ", ".join(f"{n} {t}" for t, n in sorted(removed.items()))
    )


# -- 1. verify -------------------------------------------------------------------------------


def _verify(bundle: Bundle, spec: str | Path | None) -> None:
    """The checks of ``bundler inspect verify``, on the bundle as opened (what is written is what
    was verified), against the graph of the release the bundle names."""
    from bundler.inspect.verify import verify_bundle

    report = verify_bundle(bundle, graph=_bundle_graph(bundle, spec))
    if report.problems:
        raise BundleInvalid(
            bundle.name,
            [str(p) for p in report.problems],
            hint="run bundler inspect verify for the full list",
        )


def _check_written(bundle: Bundle, written: Written) -> None:
    """A bundle this process wrote: its manifest is byte for byte the one validated when it was
    written (so it is read without validating it again) and every file has its checksum."""
    from bundler.bundle import checksum_problems
    from bundler.manifest import Manifest

    if bundle.manifest_sha256 != written.manifest_sha256:
        problems = ["manifest.json changed since this process wrote it"]
    else:
        bundle.__dict__["manifest"] = Manifest.from_doc(bundle.doc)  # the cached property, validated
        problems = checksum_problems(bundle)
    if problems:
        raise BundleInvalid(bundle.name, problems, hint="export the root again")
    bundle.trust_written()


def _bundle_graph(bundle: Bundle, spec: str | Path | None) -> Graph | None:
    """The graph of the release the bundle names (``--spec`` when it is that release), never
    the graph of another release; None when verification is to report why there is none."""
    try:
        info = bundle.doc.get("graph")
    except BundleInvalid:
        return None  # an unreadable manifest: verification reports it
    release = info.get("release") if isinstance(info, dict) else None
    if not isinstance(release, str) or not release:
        return None  # the manifest's problem: verification reports it
    try:
        return bundle_graph(release, spec)
    except SpecError:
        if spec is not None:
            raise  # --spec unreadable, or neither it nor a shipped graph is of the bundle's release
        return None  # no shipped graph of that release: verification reports it
