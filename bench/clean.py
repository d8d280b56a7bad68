"""Benchmark (issue 20): clean and reverse export of the big customer on a freshly loaded target.

For each dialect a fresh target is prepared as the load benchmark does, and the big
customer's bundle is loaded (timed; the load refreshes the planner statistics of the
tables it filled after its commit, and says how long that took). Then, on that target:

- ``reverse export`` of the customer (timed): its usage sorted by the ledger, written as a
  reverse bundle;
- ``clean --side target --customer --yes`` (timed: planned once and carried out in one
  transaction, as the CLI does it with ``--yes``; :func:`bundler.clean.clean_now`).

The goal: a clean takes at most 2x its load. ``--stale-statistics`` measures the same
without any refresh of the statistics (neither after the load nor before the clean), to
show what they are for: a planner without statistics may choose plans that never end, so
each step is then stopped after ``--clean-budget`` seconds (PostgreSQL's autovacuum, when
it is on, may refresh them on its own).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import bench.common as c


def _without_refresh() -> None:
    """Switch every statistics refresh off in this process (for ``--stale-statistics``)."""
    import bundler.clean.clean as clean_module
    import bundler.db as db

    db.ANALYZE_MIN_ROWS = 2**62
    clean_module.refresh_stale_statistics = lambda engine, tables=None: []


def _timed(what: str, budget: float, work: Any, engine: Any) -> float | None:
    """Seconds ``work()`` took, or None when it ran past ``budget`` and was cancelled."""
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["value"] = work()
        except BaseException as exc:  # reported in the caller's thread
            done["error"] = exc

    started = time.perf_counter()
    thread = threading.Thread(target=run, name=f"bench-{what}", daemon=True)
    thread.start()
    thread.join(budget if budget > 0 else None)
    if thread.is_alive():
        _cancel(engine)
        thread.join()
        return None
    if "error" in done:
        raise done["error"]
    return time.perf_counter() - started


def _track_sqlite(engine: Any) -> None:
    """Keep every SQLite connection the engine hands out, so that :func:`_cancel` can interrupt it."""
    from sqlalchemy import event

    seen: list[Any] = []
    engine.info_sqlite_connections = seen

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if dbapi_connection not in seen:
            seen.append(dbapi_connection)


def _cancel(engine: Any) -> None:
    """Stop what runs on ``engine``'s database: the server cancels it (PostgreSQL, MariaDB), or
    ``sqlite3.Connection.interrupt`` does."""
    import sqlalchemy as sa

    name = engine.url.database
    dialect = engine.dialect.name
    if dialect == "sqlite":
        for connection in getattr(engine, "info_sqlite_connections", []):
            connection.interrupt()
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if dialect == "postgresql":
            conn.execute(
                sa.text(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :d AND pid <> pg_backend_pid() AND state = 'active'"
                ),
                {"d": name},
            )
        else:
            ids = conn.execute(
                sa.text(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE db = :d AND id <> CONNECTION_ID() AND command = 'Query'"
                ),
                {"d": name},
            ).scalars()
            for session in list(ids):
                conn.exec_driver_sql(f"KILL QUERY {int(session)}")


def _reverse_export(url: str, customer: Any, out: Path, stale: bool, budget: float) -> None:
    """``reverse export`` in a process of its own, as an operator runs it (on SQLite the
    export's snapshot reads through a second SQLite library, ADBC's, which must not share a
    process with the clean's connections: see the issue 20 report)."""
    code = (
        "import sys; from bundler.db import connect; from bundler.reverse import reverse_export\n"
        + ("import bench.clean as b; b._without_refresh()\n" if stale else "")
        + "reverse_export(connect(sys.argv[1]), sys.argv[2], sys.argv[3]); print('{}')"
    )
    c.run_json([sys.executable, "-c", code, url, str(customer), str(out)], timeout=budget or 3600)


def _one(ctx: c.Context, dialect: str, fixture: c.Fixture, stale: bool) -> dict[str, Any]:
    from bundler.clean import clean_now
    from bundler.db import connect
    from bundler.load import load_bundle

    label = c.LABELS[dialect]
    budget = ctx.settings.clean_budget
    manifest = json.loads((fixture.customer / "manifest.json").read_text(encoding="utf-8"))
    xdrs = manifest["tables"].get("xdrs", {}).get("rows", 0)
    out = ctx.settings.workdir / f"reverse-{dialect}"
    with c.temp_database(dialect, "clean") as url:
        engine = connect(url)
        if dialect == "sqlite":
            _track_sqlite(engine)
        try:
            c.prepare_target(engine)
            c.analyze(engine)
            fixture.load_vendors(engine)
            started = time.perf_counter()
            loaded = load_bundle(engine, fixture.customer, decisions=c.DECISIONS)
            load_s = time.perf_counter() - started
            customer = loaded.root_target_pk
            result: dict[str, Any] = {
                "xdrs": xdrs,
                "statistics_refreshed": not stale,
                "load_seconds": round(load_s, 3),
                "load_statistics_seconds": round(loaded.statistics_seconds, 3),
                "load_statistics_tables": loaded.statistics_refreshed,
            }
            reverse_s = _timed(
                "reverse", budget, lambda: _reverse_export(url, customer, out, stale, budget), engine
            )
            result["reverse_export_seconds"] = None if reverse_s is None else round(reverse_s, 3)

            def clean() -> None:
                clean_now(engine, entities=[("customer", str(customer))], side="target")

            clean_s = _timed("clean", budget, clean, engine)
            result["clean_seconds"] = None if clean_s is None else round(clean_s, 3)
            if clean_s is not None:
                result["clean_ratio"], verdict = c.ratio_line(clean_s, load_s, 2.0)
            else:
                verdict = f"stopped after {budget:.0f} s"
            shown = lambda s: "stopped" if s is None else f"{s:6.2f} s"  # noqa: E731
            print(
                f"  {label:<10} {'stale statistics: ' if stale else ''}load {load_s:6.2f} s "
                f"(statistics {loaded.statistics_seconds:.2f} s), reverse export {shown(reverse_s)}, "
                f"clean {shown(clean_s)}; clean/load {verdict}",
                flush=True,
            )
        finally:
            engine.dispose()
    return result


def run(results: dict[str, Any], ctx: c.Context) -> None:
    fixture = ctx.customer_fixture()
    stale = ctx.settings.stale_statistics
    if stale:
        _without_refresh()
    section = results.setdefault("clean", {})
    section["stale_statistics"] = stale
    for dialect in c.available(("sqlite", "postgresql", "mysql")):
        section[dialect] = _one(ctx, dialect, fixture, stale)
