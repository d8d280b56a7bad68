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
  first 100 roots and of the last 100 (from the lineup's ``finished_at``; of the first
  half and the second when fewer than 200 finished) shows whether the lineup slows down as
  the target fills (goal: within 10%).
- two-phase: the typical customers again, moved in two phases: first without their usage
  (``--xdrs none``; the downtime, goal p95 <= 0.15 s), then their usage (``--usage-only``,
  while they already work in the target; its seconds per customer).

Every run prints where the downtime goes: the mean seconds per part of each customer's
timing breakdown (``RootOutcome.timings``: ``export`` from the Exported mark to the bundle
written, ``verify``, the load's ``begin``/``preflight``/``decide``/``write``/``record``/
``commit``), and what a customer's bundle holds (the configuration went first, so a small
customer's bundle carries its own rows and xDRs, and names the shared rows as references;
shared rows carried again and prerequisites are counted too). Goals (issue 14): typical
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


#: what a bundle holds, by its manifest (:func:`_composition`)
PARTS = ("rows", "own_rows", "usage_rows", "shared_rows", "references", "prerequisites")


def _composition(bundles: Path, bundle_id: str | None) -> dict[str, int] | None:
    """What a root's bundle holds: its rows — its own (owned), its usage (xDRs), the shared
    configuration it carries — and the rows it only names: references to earlier bundles
    (layered, format 2) and prerequisites. None when the manifest is gone."""
    if not bundle_id:
        return None
    manifest = bundles / f"{bundle_id}.bundle" / "manifest.json"
    if not manifest.exists():
        return None
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    rows = {scope: 0 for scope in ("owned", "usage", "shared")}
    for entry in doc["tables"].values():
        rows[entry["scope"]] = rows.get(entry["scope"], 0) + int(entry["rows"])
    named = {"references": 0, "prerequisites": 0}
    for outside in doc.get("prerequisites", {}).values():
        named["references" if outside.get("from") else "prerequisites"] += len(outside["rows"])
    return {
        "rows": int(doc["totals"]["rows"]),
        "own_rows": rows["owned"],
        "usage_rows": rows["usage"],
        "shared_rows": rows["shared"],
        **named,
    }


def _mean_composition(found: list[dict[str, int] | None]) -> dict[str, int] | None:
    have = [f for f in found if f is not None]
    if not have:
        return None
    return {part: round(statistics.mean(f[part] for f in have)) for part in PARTS}


def _migrate(
    ctx: c.Context,
    dialect: str,
    name: str,
    seed: dict[str, Any],
    workers: int,
    budget: float,
    *,
    xdrs: str = "all",
    usage_phase: bool = False,
) -> dict[str, Any]:
    """Seed a source and a target, run the lineup (usage window ``xdrs``), and summarise it;
    with ``usage_phase`` then the second phase of a two-phase transfer (``--usage-only``)."""
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
            ticks = c.cpu_ticks()
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
                    LineupOptions(bundles, decisions=c.DECISIONS, xdrs=xdrs),
                    workers=workers,
                    stop=stop,
                )
            finally:
                if timer is not None:
                    timer.cancel()
            steal = c.steal_pct(ticks, c.cpu_ticks())
            summary = result.summary()
            done_customers = [o for o in result.done if o.kind == "customer"]
            bundled = [_composition(bundles, o.bundle_id) for o in done_customers]
            finished = _finished_at(target, "full", {(o.kind, o.root_pk) for o in result.done})
            second = (
                _usage_phase(source, target, bundles, [o.root_pk for o in done_customers])
                if usage_phase and done_customers
                else None
            )
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
        # the mean customer bundle: its own rows, its xDRs, the shared rows it carried, and the
        # rows it names only (references to the configuration layer, prerequisites)
        "customer_bundle": _mean_composition(bundled),
        "downtime_parts_mean_s": _parts(done_customers),
        **_drift(finished),
        "xdrs_per_customer": round(statistics.mean(b["usage_rows"] for b in bundled if b))
        if any(bundled)
        else 0,
        "seed_seconds": round(seeded, 1),
        "cpu_steal_pct": steal,
    }
    if second is not None:
        out["usage_phase"] = second
    if done_customers and result.stopped:
        out["projected_seconds_all"] = round(customers / (len(done_customers) / seconds))
    return out


def _usage_phase(source: Any, target: Any, bundles: Path, customers: list[str]) -> dict[str, Any]:
    """The second phase of a two-phase transfer: the usage of the ``customers`` the first
    phase (``--xdrs none``) made active in the target (``migrate --usage-only --xdrs all``).
    It runs while they already work in the target: no downtime."""
    from bundler.lineup import LineupOptions, RootSelector, run_lineup

    result = run_lineup(
        source,
        target,
        [RootSelector("customer", tuple(customers))],
        LineupOptions(bundles, decisions=c.DECISIONS, xdrs="all", usage_only=True),
    )
    done = [o for o in result.done if o.kind == "customer"]
    xdrs = [b["usage_rows"] for o in done if (b := _composition(bundles, o.bundle_id))]
    return {
        "customers_done": len(done),
        "failed": len(result.failed),
        "failures": result.summary()["failures"][:5],
        "seconds": round(result.seconds, 2),
        "seconds_per_customer": round(result.seconds / len(done), 3) if done else None,
        "xdrs_per_customer": round(statistics.mean(xdrs)) if xdrs else 0,
    }


def _finished_at(target: Any, phase: str, roots: set[tuple[str, str]]) -> list[float]:
    """When each of ``roots`` (kind, key: this run's, not the counterparts migrated before it)
    finished in the lineup's ``phase`` (seconds, in order)."""
    import sqlalchemy as sa

    from bundler.lineup.lineup import lineup_table

    t = lineup_table
    with target.connect() as conn:
        found = conn.execute(
            sa.select(t.c.kind, t.c.root_pk, t.c.finished_at)
            .where(t.c.state == "done", t.c.phase == phase)
            .order_by(t.c.finished_at)
        ).all()
    return [at.timestamp() for kind, pk, at in found if at is not None and (kind, pk) in roots]


def _per_root(stamps: list[float]) -> float | None:
    """Mean seconds between consecutive roots finishing."""
    return round((stamps[-1] - stamps[0]) / (len(stamps) - 1), 3) if len(stamps) > 1 else None


#: a small customer's bundle inside a lineup whose configuration is migrated (issue 14)
BUNDLE_GOAL_ROWS = 300

#: the per-root time of the last roots within this much of the first ones' (issue 14)
DRIFT_GOAL = 1.10


def _drift(stamps: list[float]) -> dict[str, Any]:
    """Whether the lineup slows down as the target fills: the per-root time (between roots
    finishing) of the first 100 roots against the last 100 — of the first half against the second when fewer than 200
    finished (a window of n roots spans n + 1 finishing times)."""
    window = 100 if len(stamps) >= 202 else (len(stamps) - 1) // 2
    if window < 1:
        return {
            "per_root_window": None,
            "per_root_s_first": None,
            "per_root_s_last": None,
            "per_root_ratio": None,
        }
    first, last = _per_root(stamps[: window + 1]), _per_root(stamps[-(window + 1) :])
    return {
        "per_root_window": window,
        "per_root_s_first": first,
        "per_root_s_last": last,
        "per_root_ratio": round(last / first, 3) if first and last is not None else None,
    }


def _parts(outcomes: list[Any]) -> dict[str, float]:
    """Mean seconds per part of the timing breakdown, over the roots that have one."""
    timed = [o.timings for o in outcomes if o.timings]
    keys = dict.fromkeys(k for t in timed for k in t)
    return {k: round(statistics.mean(t.get(k, 0.0) for t in timed), 4) for k in keys}


def _parts_text(parts: dict[str, float]) -> str:
    inside = [k for k in parts if k not in ("prepare", "after")]
    if not inside:
        return "no root finished"
    return ", ".join(f"{k} {parts[k] * 1000:.0f}" for k in inside) + " ms"


def _typical_seed(s: c.Settings) -> dict[str, Any]:
    return {
        "customers": s.typical_customers,
        "accounts_per_customer": s.typical_accounts,
        "xdrs_per_account": s.typical_xdrs_per_account,
    }


#: the first phase of a two-phase transfer of a typical customer: downtime p95 (issue 14)
FIRST_PHASE_GOAL_S = 0.15


def _two_phase(ctx: c.Context, dialect: str) -> dict[str, Any]:
    """The typical customers moved in two phases: first everything but the usage (``migrate
    --xdrs none``: the customer's downtime), then the usage (``--usage-only``) while the
    customer already works in the target."""
    s = ctx.settings
    got = _migrate(ctx, dialect, "two_phase", _typical_seed(s), 1, 0, xdrs="none", usage_phase=True)
    d = got["customer_downtime_s"]
    got["first_phase_goal_s"] = FIRST_PHASE_GOAL_S
    verdict = "" if d["p95"] is None else ("meets" if d["p95"] <= FIRST_PHASE_GOAL_S else "MISSES")
    second = got.get("usage_phase") or {"xdrs_per_customer": 0, "seconds_per_customer": None, "failed": 0}
    print(
        f"  {c.LABELS[dialect]:<10} two-phase, typical customer: first phase (--xdrs none, "
        f"~{got['rows_per_customer']:,} rows) downtime p50 {d['p50']} s, p95 {d['p95']} s, max {d['max']} s "
        f"over {got['customers_done']} customers (goal p95 ≤ {FIRST_PHASE_GOAL_S:g} s: {verdict}); "
        f"second phase (--usage-only, ~{second['xdrs_per_customer']:,} xDRs each, no downtime) "
        f"{second['seconds_per_customer']} s per customer"
        + c.steal_note(got["cpu_steal_pct"])
        + (f"; {got['failed']} FAILED: {got['failures']}" if got["failed"] else "")
        + (f"; second phase {second['failed']} FAILED: {second['failures']}" if second["failed"] else ""),
        flush=True,
    )
    print(f"  {'':<10}   inside the downtime, mean: {_parts_text(got['downtime_parts_mean_s'])}", flush=True)
    return got


def _typical(ctx: c.Context, dialect: str) -> dict[str, Any]:
    s = ctx.settings
    got = _migrate(ctx, dialect, "typical", _typical_seed(s), 1, 0)
    got["accounts_per_customer"] = s.typical_accounts
    d = got["customer_downtime_s"]
    print(
        f"  {c.LABELS[dialect]:<10} typical customer ({s.typical_accounts} accounts, "
        f"~{got['xdrs_per_customer']:,} xDRs, ~{got['rows_per_customer']:,} rows): downtime p50 {d['p50']} s, "
        f"p95 {d['p95']} s, max {d['max']} s over {got['customers_done']} customers (1 worker)"
        + c.steal_note(got["cpu_steal_pct"])
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
        + c.steal_note(got["cpu_steal_pct"])
        + (f"; {got['failed']} FAILED: {got['failures']}" if got["failed"] else ""),
        flush=True,
    )
    window, ratio = got["per_root_window"], got["per_root_ratio"]
    drift = (
        f"per root: first {window} {got['per_root_s_first']} s, last {window} {got['per_root_s_last']} s "
        f"({ratio}x; goal ≤ {DRIFT_GOAL:g}x: {'meets' if ratio <= DRIFT_GOAL else 'MISSES'})"
        if ratio is not None
        else "per root: too few roots to compare"
    )
    b = got["customer_bundle"]
    held = (
        f"{b['rows']} rows: {b['own_rows']} own, {b['usage_rows']} xDRs, {b['shared_rows']} shared carried; "
        f"names {b['references']} references, {b['prerequisites']} prerequisites "
        f"(goal under {BUNDLE_GOAL_ROWS} rows: {'meets' if b['rows'] < BUNDLE_GOAL_ROWS else 'MISSES'})"
        if b
        else "none left to read"
    )
    print(
        f"  {'':<10}   customer bundle (configuration migrated first), mean: {held}; max {got['rows_per_customer_max']} rows",
        flush=True,
    )
    print(
        f"  {'':<10}   {drift}; inside the downtime, mean: {_parts_text(got['downtime_parts_mean_s'])}",
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
        mine["two_phase"] = _two_phase(ctx, dialect)
        for workers in (1, 2):
            mine[f"workers_{workers}"] = _throughput(ctx, dialect, workers)
        one, two = mine["workers_1"]["roots_per_s"], mine["workers_2"]["roots_per_s"]
        if one and two:
            mine["speedup_2_workers"] = round(two / one, 2)
            print(f"  {c.LABELS[dialect]:<10} 2 workers: {two / one:.2f}x of 1 worker", flush=True)
