"""``make bench``: run the benchmarks, print a report, save every number as JSON.

    python -m bench                      # everything: seed export inspect load clean lineup
    python -m bench export load          # a subset, in the order given above
    python -m bench --xdrs 100000        # smaller big runs (default 1,000,000 xDRs)
    python -m bench --quick              # everything shrunk: a smoke run of a few minutes

Numbers go to ``bench/results/latest.json`` and ``bench/results/<UTC timestamp>.json``
(rewritten after each benchmark, so an interrupted run keeps what it measured).
PostgreSQL and MariaDB are used when they answer (``BUNDLER_BENCH_PG_URL``,
``BUNDLER_BENCH_MYSQL_URL``, else the local defaults; ``none`` leaves one out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench.common as c

BENCHMARKS = ("seed", "export", "inspect", "load", "clean", "lineup")
RESULTS = Path(__file__).resolve().parent / "results"
QUICK_XDRS = 50_000


def _parse(argv: list[str]) -> tuple[list[str], c.Settings]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of bundler: " + ", ".join(BENCHMARKS) + ".",
        epilog="example: make bench BENCH_ARGS='export load --xdrs 100000'",
    )
    parser.add_argument(
        "benchmarks", nargs="*", metavar="BENCHMARK", help=f"any of {' '.join(BENCHMARKS)} (default: all)"
    )
    parser.add_argument(
        "--xdrs", type=int, help="xDRs of the big runs: seed, export, inspect, load (default 1,000,000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"shrink everything (xDRs {QUICK_XDRS:,} unless --xdrs)"
    )
    parser.add_argument(
        "--lineup-customers", type=int, help="customers seeded for lineup throughput (default 1,000)"
    )
    parser.add_argument(
        "--lineup-budget",
        type=float,
        help="seconds each lineup throughput run may take before it is stopped; 0 = run to the end (default 100)",
    )
    parser.add_argument(
        "--load-pairs",
        type=int,
        help="load benchmark: pairs of a bundler load and PostgreSQL's COPY of the same xDRs, each pair in a "
        "fresh target; the median ratio is reported (default 3; 1 with --quick)",
    )
    parser.add_argument("--no-duckdb", action="store_true", help="skip the DuckDB export baseline")
    parser.add_argument(
        "--clean-budget",
        type=float,
        help="seconds a reverse export or a clean of the clean benchmark may take before it is stopped; "
        "0 = run to the end (default 600)",
    )
    parser.add_argument(
        "--stale-statistics",
        action="store_true",
        help="clean benchmark without any refresh of the planner statistics (what the refresh saves)",
    )
    args = parser.parse_args(argv)
    unknown = [b for b in args.benchmarks if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose among {', '.join(BENCHMARKS)}")
    chosen = [b for b in BENCHMARKS if not args.benchmarks or b in args.benchmarks]
    s = c.Settings()
    if args.quick:
        s.quick = True
        s.xdrs = QUICK_XDRS
        s.lineup_customers = 100
        s.lineup_budget = 20
        s.typical_customers = 3
        s.inspect_runs = 1
        s.export_runs = 1
        s.load_pairs = 1
    if args.xdrs is not None:
        if args.xdrs < 1_000:
            parser.error("--xdrs must be at least 1000")
        s.xdrs = args.xdrs
    if args.lineup_customers is not None:
        s.lineup_customers = args.lineup_customers
    if args.load_pairs is not None:
        if args.load_pairs < 1:
            parser.error("--load-pairs must be at least 1")
        s.load_pairs = args.load_pairs
    if args.lineup_budget is not None:
        s.lineup_budget = args.lineup_budget
    s.duckdb = not args.no_duckdb
    if args.clean_budget is not None:
        s.clean_budget = args.clean_budget
    s.stale_statistics = args.stale_statistics
    return chosen, s


# -- the environment ----------------------------------------------------------------------


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _server_version(dialect: str) -> str | None:
    url, _ = c.server(dialect)
    if url is None:
        return None
    import sqlalchemy as sa

    from bundler.db import connect

    engine = connect(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT version()")).scalar())
    except Exception:
        return None
    finally:
        engine.dispose()


def _git() -> dict[str, Any]:
    def out(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=c.ROOT)
        return done.stdout.strip()

    return {
        "commit": out("rev-parse", "HEAD") or None,
        "changed_files": len(out("status", "--porcelain").splitlines()),
    }


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


def _meta(chosen: list[str], s: c.Settings, argv: list[str]) -> dict[str, Any]:
    return {
        "argv": argv,
        "benchmarks": chosen,
        "settings": {
            "xdrs": s.xdrs,
            "small_xdrs": s.small_xdrs,
            "quick": s.quick,
            "lineup_customers": s.lineup_customers,
            "lineup_budget_s": s.lineup_budget,
            "typical_customers": s.typical_customers,
            "typical_accounts": s.typical_accounts,
            "typical_xdrs_per_account": s.typical_xdrs_per_account,
            "inspect_runs": s.inspect_runs,
            "export_runs": s.export_runs,
            "load_pairs": s.load_pairs,
            "clean_budget_s": s.clean_budget,
            "stale_statistics": s.stale_statistics,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {
            m: _version(m)
            for m in (
                "bundler",
                "pyarrow",
                "SQLAlchemy",
                "psycopg",
                "PyMySQL",
                "duckdb",
                "adbc-driver-postgresql",
            )
        },
        "servers": {d: _server_version(d) for d in ("postgresql", "mysql")},
        "git": _git(),
    }


# -- running --------------------------------------------------------------------------------


def _save(results: dict[str, Any], stamp: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n"
    (RESULTS / f"{stamp}.json").write_text(text, encoding="utf-8")
    latest = RESULTS / "latest.json"
    latest.write_text(text, encoding="utf-8")
    return latest


def _runner(name: str, ctx: c.Context) -> Callable[[dict[str, Any]], None]:
    s = ctx.settings
    if name == "seed":
        from bench import seed

        return lambda results: seed.run(results, xdrs=s.xdrs)
    if name == "export":
        from bench import export

        return lambda results: export.run(results, ctx)
    if name == "inspect":
        from bench import inspect

        return lambda results: inspect.run(
            results, bundle=ctx.customer_fixture().customer, runs=s.inspect_runs
        )
    if name == "load":
        from bench import load

        return lambda results: load.run(results, ctx)
    if name == "clean":
        from bench import clean

        return lambda results: clean.run(results, ctx)
    from bench import lineup

    return lambda results: lineup.run(results, ctx)


TITLES = {
    "seed": "seed: {xdrs:,} xDRs (plus the operator around them) into each database",
    "export": "export: one customer holding {xdrs:,} xDRs, beside DuckDB's COPY … TO parquet",
    "inspect": "inspect: verify the customer bundle ({xdrs:,} xDRs)",
    "load": "load: the customer bundle ({xdrs:,} xDRs) into an empty r2 target, beside PostgreSQL's COPY",
    "clean": "clean: reverse export and clean of the customer ({xdrs:,} xDRs) just loaded, beside its load",
    "lineup": "lineup: downtime of a typical customer; throughput with 1 and 2 workers",
}


def main(argv: list[str]) -> int:
    chosen, s = _parse(argv)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    print(
        f"bundler benchmarks — {', '.join(chosen)}; big runs {s.xdrs:,} xDRs{' (quick)' if s.quick else ''}"
    )
    print(f"  work folder {s.workdir}; results in {RESULTS.relative_to(c.ROOT)}/latest.json and {stamp}.json")
    results: dict[str, Any] = {
        "meta": _meta(chosen, s, argv),
        "started": started.isoformat(timespec="seconds"),
    }
    load = _loadavg()
    results["load_average"] = {"start": load}
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"  note: load average {load[0]:.1f} on {os.cpu_count()} CPUs before starting — other processes are "
            "busy; the numbers will be lower and noisier than on an idle machine"
        )
    ctx = c.Context(s)
    failed: list[str] = []
    timings: dict[str, float] = {}
    try:
        for name in chosen:
            print(f"\n== {TITLES[name].format(xdrs=s.xdrs)}", flush=True)
            t0, ticks = time.perf_counter(), c.cpu_ticks()
            try:
                _runner(name, ctx)(results)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # one broken benchmark must not stop the others
                failed.append(name)
                results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
                print(f"  FAILED: {type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
            timings[name] = round(time.perf_counter() - t0, 1)
            results["load_average"][f"after {name}"] = _loadavg()
            steal = c.steal_pct(ticks, c.cpu_ticks())
            results.setdefault("cpu_steal_pct", {})[name] = steal
            print(
                f"  ({name}: {timings[name]:.0f} s; load average now {_loadavg()[0]:.1f}"
                + (f"; CPU steal {steal:g}%" if steal is not None else "")
                + ")",
                flush=True,
            )
            results["benchmark_seconds"] = timings
            _save(results, stamp)
    finally:
        shutil.rmtree(s.workdir, ignore_errors=True)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["total_seconds"] = round(sum(timings.values()), 1)
    latest = _save(results, stamp)
    from bench.report import summary

    print()
    print(summary(results))
    print(
        f"\nall numbers: {latest.relative_to(c.ROOT)} (and {stamp}.json); total {results['total_seconds'] / 60:.1f} min"
    )
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
