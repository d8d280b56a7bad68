"""Benchmark: seed a source operator with one million xDRs into each database.

``run(results)`` seeds a fresh database per dialect (SQLite always; PostgreSQL and MariaDB
when their server answers, from ``BUNDLER_BENCH_PG_URL`` / ``BUNDLER_BENCH_MYSQL_URL`` or
the local defaults), times :func:`bundler.billing.seed.seed_source` as a whole and its xDR
part (generation and writing, batch by batch), prints one rows/s line per dialect and
stores the numbers under ``results["seed"][dialect]``. The databases are dropped after.

Run alone: ``python -m bench.seed [XDRS]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

XDRS = 1_000_000
#: The operator around the xDRs: 200 retail customers + resellers' customers, 3 accounts each.
SHAPE: dict[str, Any] = {"customers": 200, "resellers": 5, "sub_resellers": 2, "customers_per_reseller": 5}

SERVERS = {
    "postgresql": ("BUNDLER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "mysql": ("BUNDLER_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
}


class _Timings:
    """A Progress that notes when each task starts and finishes."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self, task: str, total: int | None = None) -> None:
        with self._lock:
            self.started[task] = time.perf_counter()

    def advance(self, task: str, n: int = 1) -> None:
        with self._lock:
            self.rows[task] = self.rows.get(task, 0) + n

    def finish(self, task: str) -> None:
        with self._lock:
            self.finished[task] = time.perf_counter()

    def note(self, message: str) -> None:
        pass

    def seconds(self, task: str) -> float:
        return self.finished[task] - self.started[task]


def _server(dialect: str) -> str | None:
    """Where to create the benchmark database, or None when the server does not answer."""
    if dialect == "sqlite":
        return tempfile.mkdtemp(prefix="bundler-bench-")
    from bundler.db import connect

    env, default = SERVERS[dialect]
    url = os.environ.get(env, "").strip() or default
    if url.lower() == "none":
        return None
    try:
        connect(url, connect_timeout=3).dispose()
    except Exception:
        return None
    return url


def _one(dialect: str, xdrs: int) -> dict[str, Any] | None:
    from bundler.billing.seed import seed_source
    from bundler.db import connect, create_database, drop_database

    server = _server(dialect)
    if server is None:
        print(f"seed {dialect:<10} skipped: server not reachable")
        return None
    url = create_database(server, "bench_seed_" + uuid.uuid4().hex[:8])
    try:
        engine = connect(url)
        timings = _Timings()
        t0 = time.perf_counter()
        counts = seed_source(engine, xdrs=xdrs, progress=timings, **SHAPE)
        total_s = time.perf_counter() - t0
        engine.dispose()
    finally:
        drop_database(url)
        if dialect == "sqlite":
            os.rmdir(server)
    rows = sum(counts.values())
    xdr_s = timings.seconds("seed xdrs")
    vendor_s = timings.seconds("seed vendor_xdrs")
    result = {
        "xdrs": counts["xdrs"],
        "vendor_xdrs": counts["vendor_xdrs"],
        "rows": rows,
        "seconds": round(total_s, 2),
        "rows_per_s": round(rows / total_s),
        "xdr_seconds": round(xdr_s, 2),
        "xdr_rows_per_s": round(counts["xdrs"] / xdr_s),
        "vendor_xdr_seconds": round(vendor_s, 2),
        "rates_seconds": round(timings.seconds("seed rates"), 2),
    }
    print(
        f"seed {dialect:<10} {rows:>9,} rows in {total_s:6.1f} s = {result['rows_per_s']:>7,} rows/s; "
        f"xdrs {counts['xdrs']:,} in {xdr_s:5.1f} s = {result['xdr_rows_per_s']:>7,} rows/s (generated and written)"
    )
    return result


def run(
    results: dict[str, Any],
    *,
    xdrs: int = XDRS,
    dialects: tuple[str, ...] = ("sqlite", "postgresql", "mysql"),
) -> None:
    """Seed ``xdrs`` xDRs (plus the operator around them) into each dialect; record timings."""
    section = results.setdefault("seed", {})
    for dialect in dialects:
        outcome = _one(dialect, xdrs)
        if outcome is not None:
            section[dialect] = outcome


if __name__ == "__main__":
    import json

    found: dict[str, Any] = {}
    run(found, xdrs=int(sys.argv[1]) if len(sys.argv) > 1 else XDRS)
    print(json.dumps(found, indent=2))
