"""Benchmark (issue 6): the lineup — downtime per customer and throughput, 1 and 2 workers.

Source and target are of the same dialect (SQLite, then PostgreSQL); every run gets a
fresh source (seeded, release r1) and a fresh target (``seed_target``, release r2), and
migrates the vendors, then every open top-level customer, with the project's decisions
sidecar and every xDR (``xdrs="all"``).

- typical: ``typical_customers`` customers of tens of accounts and thousands of xDRs
  each, one worker; the downtime of each customer (from being marked Exported in the
  source to being active in the target) is reported.
- throughput: ``lineup_customers`` small customers (3 accounts, ~60 xDRs each) with 1 and
  with 2 workers (each on a fresh source and target): roots/s, rows/s, downtime
  p50/p95/max. A run is stopped (the lineup's stop event: roots in flight finish, nothing
  new is claimed) once it has taken ``lineup_budget`` seconds, and the time the whole
  lineup would take at the measured rate is printed beside it. The per-root time of the
  first 100 roots and of the last 100 (from the lineup's ``finished_at``) shows whether the
  lineup slows down as the target fills.

Every run prints where the downtime goes: the mean seconds per part of each customer's
timing breakdown (``RootOutcome.timings``: ``export`` from the Exported mark to the bundle
written, ``verify``, the load's ``begin``/``preflight``/``decide``/``write``/``record``/
``commit``), and the rows of a customer's bundle (the configuration went first, so a
small customer's bundle carries its own rows and references). Goals (issue 14): typical
downtime p95 <= 0.5 s; >= 5 roots/s with 1 worker; 2 workers >= 1.5x of 1 on PostgreSQL;
a small customer's bundle under 300 rows.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import bench.common as c


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]
    return {"p50": round(statistics.median(ordered), 3), "p95": round(p95, 3), "max": round(ordered[-1], 3)}


def _xdrs_in(bundles: Path, bundle_id: str | None) -> int:
    if not bundle_id:
        return 0
    manifest = bundles / f"{bundle_id}.bundle" / "manifest.json"
    if not manifest.exists():
        return 0
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    return int(doc["tables"].get("xdrs", {}).get("rows", 0))


def _migrate(
    ctx: c.Context,
    dialect: str,
    name: str,
    seed: dict[str, Any],
    workers: int,
    budget: float,
) -> dict[str, Any]:
    """Seed a source and a target, run the lineup, and summarise it."""
    import shutil

    from bundler.billing.seed import seed_source
    from bundler.db import connect
    from bundler.demo import vendor_counterparts
    from bundler.lineup import LineupOptions, RootSelector, run_lineup

    bundles = ctx.settings.workdir / f"lineup-{dialect}-{name}-{workers}"
    with (
        c.temp_database(dialect, "lineup_src") as source_url,
        c.temp_database(dialect, "lineup_tgt") as target_url,
    ):
        source, target = connect(source_url), connect(target_url)
        try:
            started = time.perf_counter()
            seed_source(source, release="r1", resellers=0, distributors=0, **seed)
            c.register(source, "r1")
            c.analyze(source)
            c.prepare_target(target)
            c.analyze(target)
            counterparts = vendor_counterparts(source)
            if counterparts:  # pre-configured on the target, as the demo and an operator do
                run_lineup(
                    source,
                    target,
                    [RootSelector("customer", tuple(counterparts))],
                    LineupOptions(bundles, decisions=c.DECISIONS, xdrs="all"),
                )
            seeded = time.perf_counter() - started
            customers = len(c.open_customers(source))
            stop = threading.Event()
            timer = threading.Timer(budget, stop.set) if budget > 0 else None
            if timer is not None:
                timer.daemon = True
                timer.start()
            try:
                result = run_lineup(
                    source,
                    target,
                    [RootSelector("vendor", all=True), RootSelector("customer", all=True)],
                    LineupOptions(bundles, decisions=c.DECISIONS, xdrs="all"),
                    workers=workers,
                    stop=stop,
                )
            finally:
                if timer is not None:
                    timer.cancel()
            summary = result.summary()
            done_customers = [o for o in result.done if o.kind == "customer"]
            xdrs = [_xdrs_in(bundles, o.bundle_id) for o in done_customers]
            finished = _finished_at(target)
        finally:
            source.dispose()
            target.dispose()
            shutil.rmtree(bundles, ignore_errors=True)
    seconds = result.seconds
    out: dict[str, Any] = {
        "workers": workers,
        "customers_seeded": seed["customers"],
        "customers_open": customers,
        "roots": len(result.outcomes),
        "done": len(result.done),
        "customers_done": len(done_customers),
        "failed": len(result.failed),
        "failures": summary["failures"][:5],
        "stopped_by_budget": result.stopped,
        "seconds": round(seconds, 2),
        "roots_per_s": round(len(result.done) / seconds, 3) if seconds else None,
        "customers_per_s": round(len(done_customers) / seconds, 3) if seconds else None,
        "rows": summary["rows"],
        "rows_per_s": summary["rows_per_second"],
        "downtime_s": summary["downtime_s"],
        "customer_downtime_s": _percentiles(
            [o.downtime_s for o in done_customers if o.downtime_s is not None]
        ),
        "rows_per_customer": round(statistics.mean(o.rows for o in done_customers)) if done_customers else 0,
        "rows_per_customer_max": max((o.rows for o in done_customers), default=0),
        "downtime_parts_mean_s": _parts(done_customers),
        "per_root_s_first_100": _per_root(finished[:101]),
        "per_root_s_last_100": _per_root(finished[-101:]) if len(finished) >= 202 else None,
        "xdrs_per_customer": round(statistics.mean(xdrs)) if xdrs else 0,
        "seed_seconds": round(seeded, 1),
    }
    if done_customers and result.stopped:
        out["projected_seconds_all"] = round(customers / (len(done_customers) / seconds))
    return out


def _finished_at(target: Any) -> list[float]:
    """When each root of the lineup finished (seconds, in order)."""
    import sqlalchemy as sa

    from bundler.lineup.lineup import lineup_table

    t = lineup_table
    with target.connect() as conn:
        stamps = conn.execute(
            sa.select(t.c.finished_at)
            .where(t.c.state == "done", t.c.kind == "customer")
            .order_by(t.c.finished_at)
        ).scalars()
        return [s.timestamp() for s in stamps if s is not None]


def _per_root(stamps: list[float]) -> float | None:
    """Mean seconds between consecutive roots finishing."""
    return round((stamps[-1] - stamps[0]) / (len(stamps) - 1), 3) if len(stamps) > 1 else None


def _parts(outcomes: list[Any]) -> dict[str, float]:
    """Mean seconds per part of the timing breakdown, over the roots that have one."""
    timed = [o.timings for o in outcomes if o.timings]
    keys = dict.fromkeys(k for t in timed for k in t)
    return {k: round(statistics.mean(t.get(k, 0.0) for t in timed), 4) for k in keys}


def _parts_text(parts: dict[str, float]) -> str:
    inside = [k for k in parts if k not in ("prepare", "after")]
    return ", ".join(f"{k} {parts[k] * 1000:.0f}" for k in inside) + " ms"


def _typical(ctx: c.Context, dialect: str) -> dict[str, Any]:
    s = ctx.settings
    seed = {
        "customers": s.typical_customers,
        "accounts_per_customer": s.typical_accounts,
        "xdrs_per_account": s.typical_xdrs_per_account,
    }
    got = _migrate(ctx, dialect, "typical", seed, 1, 0)
    got["accounts_per_customer"] = s.typical_accounts
    d = got["customer_downtime_s"]
    print(
        f"  {c.LABELS[dialect]:<10} typical customer ({s.typical_accounts} accounts, "
        f"~{got['xdrs_per_customer']:,} xDRs, ~{got['rows_per_customer']:,} rows): downtime p50 {d['p50']} s, "
        f"p95 {d['p95']} s, max {d['max']} s over {got['customers_done']} customers (1 worker)"
        + (f"; {got['failed']} FAILED: {got['failures']}" if got["failed"] else ""),
        flush=True,
    )
    print(f"  {'':<10}   inside the downtime, mean: {_parts_text(got['downtime_parts_mean_s'])}", flush=True)
    return got


def _throughput(ctx: c.Context, dialect: str, workers: int) -> dict[str, Any]:
    s = ctx.settings
    seed = {"customers": s.lineup_customers}
    got = _migrate(ctx, dialect, "throughput", seed, workers, s.lineup_budget)
    d = got["downtime_s"]
    note = ""
    if got["stopped_by_budget"]:
        projected = got.get("projected_seconds_all")
        note = (
            f"; stopped after the {s.lineup_budget:g} s budget with {got['customers_done']} of "
            f"{got['customers_open']:,} open customers done ({got['customers_seeded']:,} seeded)"
            + (f" (all would take ~{projected / 60:.0f} min)" if projected else "")
        )
    print(
        f"  {c.LABELS[dialect]:<10} lineup {workers} worker{'s' if workers > 1 else ' '}: {got['done']} roots in "
        f"{got['seconds']:.1f} s = {got['roots_per_s']:.2f} roots/s, {c.k(got['rows_per_s'] or 0)} rows/s; "
        f"downtime p50 {d['p50']} s, p95 {d['p95']} s, max {d['max']} s{note}"
        + (f"; {got['failed']} FAILED: {got['failures']}" if got["failed"] else ""),
        flush=True,
    )
    first, last = got["per_root_s_first_100"], got["per_root_s_last_100"]
    print(
        f"  {'':<10}   customer bundles {got['rows_per_customer']} rows (max {got['rows_per_customer_max']}); "
        f"per root: first 100 {first} s, last 100 {last} s; "
        f"inside the downtime, mean: {_parts_text(got['downtime_parts_mean_s'])}",
        flush=True,
    )
    return got


def run(results: dict[str, Any], ctx: c.Context) -> None:
    section = results.setdefault("lineup", {})
    section["customers"] = ctx.settings.lineup_customers
    section["budget_s"] = ctx.settings.lineup_budget
    for dialect in c.available(("sqlite", "postgresql")):
        mine = section.setdefault(dialect, {})
        mine["typical"] = _typical(ctx, dialect)
        for workers in (1, 2):
            mine[f"workers_{workers}"] = _throughput(ctx, dialect, workers)
        one, two = mine["workers_1"]["roots_per_s"], mine["workers_2"]["roots_per_s"]
        if one and two:
            mine["speedup_2_workers"] = round(two / one, 2)
            print(f"  {c.LABELS[dialect]:<10} 2 workers: {two / one:.2f}x of 1 worker", flush=True)
