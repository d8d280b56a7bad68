"""Recovery: every export whose process died gets a way back.

An export (``bundler export``, the lineup's export, ``bundler reverse export``) records
itself in ``bundler_exports`` as ``running`` with the host and process that runs it and
the folder its bundle goes to, before it marks anything Exported. If that process dies
(SIGKILL, a power cut, the OOM killer), the record stays ``running``. Recovery finds such
records and, for each one whose process is gone:

- the bundle folder is in place with its manifest and verifies: the export is **finished**
  (recorded ``done``; the root stays Exported and the bundle loads);
- otherwise the export is **restored**: every row it marked gets back the status it had
  (from ``bundler_export_marks``), the record becomes ``restored``, and what the export left
  on disk (its hidden temporary folder, a bundle folder that does not verify) is removed.

A process is known to be gone only on its own host (its pid no longer runs, or runs another
program since). A record of another host, or one an older bundler wrote without its process,
is left alone unless the operator names it (``--bundle``) or passes ``--force``: bundler
cannot tell from here whether it still runs. A live export is never touched.

``bundler recover`` does this for a whole database; ``export``, ``reverse export`` and
``migrate`` do it for their own root first (:func:`recover_root`), so a re-run after a
crash goes on by itself.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import BUNDLE_SUFFIX, manifest_sha256
from bundler.context import system_graph
from bundler.db import begin_write, redact
from bundler.errors import RootError, UsageError
from bundler.graph import Graph
from bundler.keys import describe
from bundler.marking import Root, read_marks, restore_rows
from bundler.progress import NullProgress, Progress
from bundler.sql import table_clause

KILL_ENV = "BUNDLER_TEST_KILL_AT"


def crash_point(name: str) -> None:
    """The kill tests' hook: SIGKILL this process here when ``BUNDLER_TEST_KILL_AT`` names ``name``.

    It makes a crash at an exact point reproducible (no timing); unset, it does nothing.
    """
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class _CrashingProgress:
    """Passes everything on to ``inner``; the first ``advance`` is a :func:`crash_point`."""

    def __init__(self, inner: Progress, point: str) -> None:
        self.inner, self.point = inner, point

    def start(self, task: str, total: int | None = None) -> None:
        self.inner.start(task, total)

    def advance(self, task: str, n: int = 1) -> None:
        self.inner.advance(task, n)
        crash_point(self.point)

    def finish(self, task: str) -> None:
        self.inner.finish(task)

    def note(self, message: str) -> None:
        self.inner.note(message)


def crash_progress(progress: Progress, point: str) -> Progress:
    """``progress``, or, when ``BUNDLER_TEST_KILL_AT`` names ``point``, one that kills the process
    at the first rows reported (the middle of a load, whose transaction is then open)."""
    return _CrashingProgress(progress, point) if os.environ.get(KILL_ENV) == point else progress


FINISHED = "finished"  # the bundle was complete: recorded done
RESTORED = "restored"  # statuses given back: recorded restored
CLOSED = "closed"  # an export that marked nothing: recorded failed
LEFT = "left"  # not touched: still running, or bundler cannot tell
NOTHING = "nothing"  # named, but not running


@dataclass
class Recovered:
    """What recovery did with one export record."""

    bundle_id: str
    kind: str
    root: str | None
    action: str
    process: str | None
    restored_rows: int = 0
    removed: list[str] = field(default_factory=list)
    message: str = ""
    undecided: bool = False  # left because bundler cannot tell whether its process runs

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "kind": self.kind,
            "root": self.root,
            "action": self.action,
            "process": self.process,
            "restored_rows": self.restored_rows,
            "removed": self.removed,
            "message": self.message,
            "undecided": self.undecided,
        }

    def line(self) -> str:
        removed = f"; removed {', '.join(self.removed)}" if self.removed else ""
        return f"{self.bundle_id}: {self.action}: {self.message}{removed}"


@dataclass
class RecoverReport:
    database: str
    items: list[Recovered] = field(default_factory=list)
    released_claims: int = 0
    unknown: list[str] = field(default_factory=list)  # bundles named that this database never exported

    @property
    def undecided(self) -> list[Recovered]:
        """Records left because bundler cannot tell whether their process runs (not the live ones)."""
        return [i for i in self.items if i.undecided]

    def summary(self) -> dict[str, Any]:
        counts = {a: sum(1 for i in self.items if i.action == a) for a in (FINISHED, RESTORED, CLOSED, LEFT)}
        return {
            "database": self.database,
            **counts,
            "released_lineup_claims": self.released_claims,
            "exports": [i.to_dict() for i in self.items],
        }

    def lines(self) -> list[str]:
        out = [i.line() for i in self.items]
        if self.released_claims:
            out.append(f"lineup: released {self.released_claims} claim(s) of workers that stopped")
        if not out:
            out.append(f"{self.database}: no export to recover")
        return out


# -- one record --------------------------------------------------------------------------------


def _process(row: Any) -> tracking.ProcessRef | None:
    if not row.host or row.pid is None:
        return None
    return tracking.ProcessRef(str(row.host), int(row.pid), row.process_start)


def _why_left(row: Any, process: tracking.ProcessRef | None, trusted: bool) -> str | None:
    """Why this record must be left alone, or None when it may be recovered."""
    how = f"run `bundler recover --bundle {row.bundle_id}` (or --force)"
    if process is None:
        if trusted:
            return None
        return (
            f"recorded by an older bundler without its process: bundler cannot tell whether it still runs; "
            f"if no export of it runs anywhere, {how}"
        )
    if process.local:
        if process.alive():
            return f"still running ({process}, since {row.started_at}): wait for it to end"
        return None
    if trusted:
        return None
    return (
        f"running on another host ({process}): bundler cannot tell from here whether it still runs; "
        f"check there, and if it is gone {how}"
    )


def _bundle_problems(path: Path, bundle_id: str, graph: Graph) -> list[str]:
    """Why the bundle folder at ``path`` is not the complete bundle ``bundle_id`` (empty: it is)."""
    from bundler.inspect.verify import verify_bundle

    report = verify_bundle(path, graph=graph)
    problems = [str(p) for p in report.problems]
    if not problems and report.bundle_id != bundle_id:
        problems.append(f"its manifest names bundle {report.bundle_id}, not {bundle_id}")
    return problems


def _leftovers(out_dir: Path | None, bundle_id: str) -> list[Path]:
    if out_dir is None or not out_dir.is_dir():
        return []
    return sorted(out_dir.glob(f".{bundle_id}.tmp-*"))


def _remove(paths: Sequence[Path]) -> list[str]:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    return [str(p) for p in paths]


def _finish(engine: sa.Engine, row: Any, path: Path, died: str) -> bool:
    """Record the export done (only if it is still ``running``: another recovery may have won)."""
    from bundler.bundle import open_bundle

    with open_bundle(path) as bundle:
        rows = bundle.manifest.totals.rows
    exports = tracking.exports_table
    with begin_write(engine) as connection:
        result = connection.execute(
            sa.update(exports)
            .where(exports.c.bundle_id == row.bundle_id, exports.c.status == "running")
            .values(
                status="done",
                finished_at=tracking.now(),
                manifest_sha256=manifest_sha256(path),
                rows=rows,
                message=f"finished by recovery: {died} after the bundle was in place",
            )
        )
        return result.rowcount == 1


def _restore(engine: sa.Engine, graph: Graph, row: Any, died: str) -> int | None:
    """Give back every marked status and close the record, in one transaction; None when another
    recovery closed it first."""
    exports = tracking.exports_table
    with begin_write(engine) as connection:
        result = connection.execute(
            sa.update(exports)
            .where(exports.c.bundle_id == row.bundle_id, exports.c.status == "running")
            .values(
                status="restored" if row.marked else "failed",
                finished_at=tracking.now(),
                message=f"restored by recovery: {died} before the export finished",
            )
        )
        if result.rowcount != 1:
            return None
        marks = read_marks(connection, graph, row.bundle_id)
        restore_rows(connection, graph, row.bundle_id, marks)
    return marks.count


def recover_record(engine: sa.Engine, graph: Graph, row: Any, *, trusted: bool = False) -> Recovered:
    """Finish or restore the ``running`` export ``row`` if its process is gone (see the module)."""
    process = _process(row)
    item = Recovered(
        str(row.bundle_id), str(row.kind), row.root_key, LEFT, None if process is None else str(process)
    )
    why = _why_left(row, process, trusted)
    if why is not None:
        item.message = why
        item.undecided = process is None or not process.local
        return item
    died = f"its process ({process}) stopped" if process else "its process stopped"
    out_dir = Path(row.out_dir) if row.out_dir else None
    path = out_dir / f"{row.bundle_id}{BUNDLE_SUFFIX}" if out_dir is not None else None
    problems = ["it is not there"]
    if path is not None and path.is_dir():
        problems = _bundle_problems(path, str(row.bundle_id), graph)
        if not problems:
            if _finish(engine, row, path, died):
                item.action, item.message = FINISHED, f"{died}; the bundle {path} verifies: recorded done"
            else:
                item.action, item.message = NOTHING, "another process recovered it meanwhile"
            item.removed = _remove(_leftovers(out_dir, item.bundle_id))
            return item
        item.removed = _remove([path])  # a bundle that does not verify must never be loaded
    restored = _restore(engine, graph, row, died)
    if restored is None:
        item.action, item.message = NOTHING, "another process recovered it meanwhile"
        return item
    item.restored_rows = restored
    item.action = RESTORED if row.marked else CLOSED
    where = f"bundle {path}" if path is not None else "its bundle folder (not recorded)"
    item.message = f"{died}; {where}: {problems[0]}; " + (
        f"restored the status of {restored} row(s)" if row.marked else "it had marked nothing"
    )
    if process is not None and not process.local:
        item.message += (
            f"; if the bundle exists on host {process.host}, remove it there: it must not be loaded"
        )
    item.removed += _remove(_leftovers(out_dir, item.bundle_id))
    return item


# -- a database, a root ------------------------------------------------------------------------


def _running(connection: sa.Connection, *where: sa.ColumnElement[bool]) -> list[Any]:
    exports = tracking.exports_table
    return list(
        connection.execute(
            sa.select(exports).where(exports.c.status == "running", *where).order_by(exports.c.started_at)
        ).all()
    )


def recover(
    engine: sa.Engine,
    *,
    bundles: Sequence[str] = (),
    force: bool = False,
    spec: str | Path | None = None,
    release_claims: bool = False,
    progress: Progress | None = None,
) -> RecoverReport:
    """Recover every ``running`` export of this database whose process is gone.

    ``bundles`` limits it to the exports named, which the operator thereby vouches for
    (also those of another host; names this database does not know are listed in
    ``unknown``); ``force`` vouches for every record of another host.
    ``release_claims`` also frees the lineup rows (``bundler_lineup``, in a target) that
    workers of this host claimed and never finished because they died.
    """
    progress = progress or NullProgress()
    exports = tracking.exports_table
    rows: list[Any] = []
    others: dict[str, str] = {}
    with begin_write(engine) as connection:
        if sa.inspect(connection).has_table(exports.name):  # else nothing was ever exported here
            tracking.ensure_tables(connection)  # an older bundler's table gets the columns it lacks
            rows = _running(connection, *([exports.c.bundle_id.in_(bundles)] if bundles else []))
            found = {r.bundle_id for r in rows}
            others = {
                r.bundle_id: r.status
                for r in connection.execute(
                    sa.select(exports.c.bundle_id, exports.c.status).where(
                        exports.c.bundle_id.in_([b for b in bundles if b not in found])
                    )
                )
            }
        graph = system_graph(connection, spec)[0] if rows else None
    known = {r.bundle_id for r in rows} | set(others)
    report = RecoverReport(redact(engine), unknown=[b for b in bundles if b not in known])
    for bundle_id, status in others.items():
        report.items.append(Recovered(bundle_id, "", None, NOTHING, None, message=f"recorded {status}"))
    for row in rows:
        assert graph is not None
        item = recover_record(engine, graph, row, trusted=force or row.bundle_id in bundles)
        progress.note(item.line())
        report.items.append(item)
    if release_claims:
        report.released_claims = _release_claims(engine)
    return report


def recover_systems(
    source: sa.Engine | None,
    target: sa.Engine | None,
    *,
    bundles: Sequence[str] = (),
    force: bool = False,
    spec: str | Path | None = None,
    progress: Progress | None = None,
) -> list[RecoverReport]:
    """``bundler recover``: :func:`recover` on the source (exports) and on the target (reverse
    exports, and the lineup claims of dead workers). A bundle named that neither knows is a
    usage error."""
    if source is None and target is None:
        raise UsageError("name a database to recover", hint="--source URL, --target URL or both")
    if source is not None and target is not None and spec is not None:
        raise UsageError(
            "--spec is the graph of one database", hint="recover the source and the target apart"
        )
    reports = []
    for engine, is_target in ((source, False), (target, True)):
        if engine is not None:
            reports.append(
                recover(
                    engine,
                    bundles=bundles,
                    force=force,
                    spec=spec,
                    release_claims=is_target,
                    progress=progress,
                )
            )
    unknown = [b for b in bundles if all(b in r.unknown for r in reports)]
    if unknown:
        raise UsageError(
            f"no export {', '.join(unknown)} in bundler_exports of {' or '.join(r.database for r in reports)}",
            hint="name bundles by their id: bundler recover without --bundle lists what is running",
        )
    return reports


def _release_claims(engine: sa.Engine) -> int:
    """Free the lineup claims of this host's workers that died (a target's ``bundler_lineup``)."""
    from bundler.lineup.queue import lineup_table, release_stale_claims

    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(lineup_table.name):
            return 0
        systems = list(connection.execute(sa.select(lineup_table.c.source_system).distinct()).scalars())
    return sum(release_stale_claims(engine, s, stale_after=float("inf")) for s in systems)


def recover_root(
    engine: sa.Engine, graph: Graph, root_table: str, root_pk: Any, *, progress: Progress | None = None
) -> list[Recovered]:
    """Recover the ``running`` exports of one root whose process died on this host; returns
    every running export of it (those left alone say why). Each recovery is noted on ``progress``."""
    progress = progress or NullProgress()
    exports = tracking.exports_table
    with engine.connect() as connection:
        rows = _running(connection, exports.c.root_table == root_table, exports.c.root_pk == str(root_pk))
    items = []
    for row in rows:
        item = recover_record(engine, graph, row)
        if item.action != LEFT:
            progress.note(f"recovering an export that did not finish: {item.line()}")
        items.append(item)
    return items


def refuse_running(items: Sequence[Recovered], what: str, option: str) -> None:
    """Raise naming an export of ``what`` that still runs (or may), if ``items`` hold one;
    ``option`` is how ``bundler recover`` names that database (``--source`` or ``--target``)."""
    for item in items:
        if item.action == LEFT:
            raise RootError(
                f"{what} is being exported by bundle {item.bundle_id}: {item.message}",
                hint=f"once its process is gone: bundler recover {option} URL --bundle {item.bundle_id}",
            )


def recover_before_export(
    engine: sa.Engine, graph: Graph, root: Root, option: str, progress: Progress | None = None
) -> Root:
    """Before a new export of ``root``: finish or restore its earlier exports whose process died
    (noted on ``progress``), and refuse while one may still run. Returns the root as it is now.

    ``option`` is how ``bundler recover`` names this database (``--source``, or ``--target`` for
    a reverse export)."""
    items = recover_root(engine, graph, root.spec.name, root.pk, progress=progress)
    if not items:
        return root
    with engine.connect() as connection:
        t = table_clause(root.spec)
        row = connection.execute(sa.select(t).where(t.c[root.spec.pk[0]] == root.pk)).mappings().one()
    root = Root(root.kind, root.spec, dict(row), root.key)
    status = root.spec.status
    if status is not None and root.row[status.column] == status.exported:
        refuse_running(items, f"{root.kind} {describe(root.key)}", option)
    return root
