"""Benchmark (issue 5): load the big customer's bundle into an empty r2 target.

The bundle is the export benchmark's (or one made the same way): one customer with
``xdrs`` xDRs. For each dialect (PostgreSQL, SQLite, MariaDB) a fresh target is prepared
with ``seed_target`` (release r2: prerequisites and part of the configuration) and the
vendor bundles of the same source are loaded (the customer's DIDs belong to the
vendors; the vendors' customer counterparts go first); then the customer's bundle is loaded with the project's decisions sidecar, and
timed (verification, translation, decisions, writing, ledger, commit — the whole
``load_bundle``).

PostgreSQL's own ceiling is measured in the same run and the same database: the bundle's
``xdrs.parquet`` is written as a CSV file (not timed), then ``COPY … FROM STDIN (FORMAT
csv)`` of that file into an empty table made ``LIKE xdrs INCLUDING ALL`` (same columns,
primary key and indexes) is timed, commit included. The goal: the load takes at most 1.3x
COPY's time (issue 14). On a busy machine one pair of numbers says little, so
``load_pairs`` pairs are measured (``--load-pairs``), each in a fresh target, the COPY
second in odd pairs and first in even ones, and the median of the pairs' ratios is the
result. Beside the seconds, the CPU seconds of each: this process's (the client) and the
server's (its backends serving the target database, from ``/proc/<pid>/stat``), and their
ratios, which waiting for a busy CPU does not inflate. The xDRs are recorded in the ledger as runs of keys
(``bundler_ledger_ranges``), not row by row: both counts are reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bench.common as c

COPY_TABLE = "bench_xdrs_copy"
COPY_BLOCK = 1 << 20
#: load / COPY of the same xDRs (issue 14)
COPY_GOAL = 1.3


def _csv_of(parquet: Path, out: Path) -> tuple[int, float]:
    """Write the Parquet file as headerless CSV (PostgreSQL's CSV: NULL is an empty field)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    started = time.perf_counter()
    rows = 0
    source = pq.ParquetFile(parquet)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    with pacsv.CSVWriter(out, source.schema_arrow, write_options=options) as writer:
        for batch in source.iter_batches(batch_size=65_536):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows, time.perf_counter() - started


def copy_baseline(engine: Any, csv_path: Path, names: list[str]) -> dict[str, Any]:
    """Seconds (and backend CPU seconds) of PostgreSQL's ``COPY FROM`` of the CSV of the
    bundle's xDRs (:func:`_csv_of`) into an identical empty table."""
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        with driver.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
            cur.execute(f"CREATE TABLE {COPY_TABLE} (LIKE xdrs INCLUDING ALL)")
        driver.commit()
        columns = ", ".join(f'"{n}"' for n in names)
        with BackendCpu(engine) as cpu:
            started = time.perf_counter()
            with (
                driver.cursor() as cur,
                cur.copy(f"COPY {COPY_TABLE} ({columns}) FROM STDIN (FORMAT csv)") as copy,
                open(csv_path, "rb") as f,
            ):
                while block := f.read(COPY_BLOCK):
                    copy.write(block)
            driver.commit()
            seconds = time.perf_counter() - started
        with driver.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {COPY_TABLE}")
            copied = cur.fetchone()[0]
            cur.execute(f"DROP TABLE {COPY_TABLE}")
        driver.commit()
    finally:
        raw.close()
    return {"rows": copied, "seconds": round(seconds, 3), **cpu.numbers()}


class BackendCpu:
    """CPU seconds spent, while it is entered, by this process and by the PostgreSQL server
    processes serving the engine's database (read from ``/proc/<pid>/stat``: the server must
    run on this machine; otherwise the backend's share is None). The backends are listed
    from ``pg_stat_activity`` every ``POLL_S`` seconds, so one that starts and ends between
    two polls is missed, and the last ``POLL_S`` of one that ends is not counted."""

    POLL_S = 0.05

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.readable = True
        self._stop = threading.Event()

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _poll(self, conn: Any, first: bool = False) -> None:
        import sqlalchemy as sa

        pids = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        ).scalars()
        for pid in pids:
            seconds = self._cpu(pid)
            if seconds is None:
                self.readable = self.readable and pid in self.last  # ended since listed
                continue
            self.first.setdefault(pid, seconds if first else 0.0)
            self.last[pid] = seconds

    def _watch(self, conn: Any) -> None:
        while not self._stop.wait(self.POLL_S):
            self._poll(conn)

    def __enter__(self) -> BackendCpu:
        self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._poll(self._conn, first=True)
        self._thread = threading.Thread(target=self._watch, args=(self._conn,), daemon=True)
        self._client = time.process_time()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client_s = time.process_time() - self._client
        self._stop.set()
        self._thread.join()
        self._poll(self._conn)
        self._conn.close()

    def numbers(self) -> dict[str, Any]:
        backend = sum(self.last[p] - self.first[p] for p in self.last) if self.readable else None
        return {
            "backend_cpu_s": None if backend is None else round(backend, 2),
            "client_cpu_s": round(self.client_s, 2),
            "backends": len(self.last),
        }


def _ledger_rows(engine: Any, bundle_id: str) -> tuple[int, int]:
    """The load's ledger rows and ranges."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(
                conn.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE bundle_id = :b"), {"b": bundle_id}
                ).scalar_one()
            )
            for table in ("bundler_ledger", "bundler_ledger_ranges")
        )


@contextlib.contextmanager
def _prepared(dialect: str, fixture: c.Fixture) -> Iterator[tuple[Any, dict[str, float]]]:
    """A fresh r2 target with the vendors loaded (their counterparts first), not timed in the
    load's seconds: (engine, seconds of each step)."""
    from bundler.db import connect

    with c.temp_database(dialect, "load") as url:
        engine = connect(url)
        try:
            started = time.perf_counter()
            c.prepare_target(engine)
            c.analyze(engine)
            prepared = time.perf_counter() - started
            started = time.perf_counter()
            fixture.load_vendors(engine)
            vendors_s = time.perf_counter() - started
            yield (
                engine,
                {"target_prepare_seconds": round(prepared, 1), "vendor_load_seconds": round(vendors_s, 1)},
            )
        finally:
            engine.dispose()


def _load(engine: Any, fixture: c.Fixture, xdrs: int) -> tuple[Any, float, dict[str, Any]]:
    """Load the customer's bundle: (its result, seconds, CPU seconds on PostgreSQL)."""
    from bundler.load import load_bundle

    cpu = BackendCpu(engine) if engine.dialect.name == "postgresql" else None
    with cpu or contextlib.nullcontext():
        started = time.perf_counter()
        loaded = load_bundle(engine, fixture.customer, decisions=c.DECISIONS)
        seconds = time.perf_counter() - started
    if loaded.outcome != "loaded":
        raise RuntimeError(f"load outcome {loaded.outcome}")
    created = loaded.tables["xdrs"].created if "xdrs" in loaded.tables else 0
    if created != xdrs:
        raise RuntimeError(f"loaded {created} xDRs of {xdrs}")
    return loaded, seconds, cpu.numbers() if cpu else {}


def _cpu_text(cpu: dict[str, Any]) -> str:
    backend = "?" if cpu.get("backend_cpu_s") is None else f"{cpu['backend_cpu_s']:.2f}"
    return f"CPU: server {backend} s, client {cpu.get('client_cpu_s', 0):.2f} s"


def _pair(
    engine: Any, fixture: c.Fixture, xdrs: int, csv: tuple[Path, list[str]], copy_first: bool
) -> dict[str, Any]:
    """One bundler load and one COPY of the same xDRs into the same target, the COPY first or second."""
    base = copy_baseline(engine, *csv) if copy_first else None
    _, seconds, cpu = _load(engine, fixture, xdrs)
    if base is None:
        base = copy_baseline(engine, *csv)
    return _pair_numbers("copy, load" if copy_first else "load, copy", seconds, cpu, base)


def _pair_numbers(order: str, seconds: float, cpu: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    server, copy_server = cpu["backend_cpu_s"], base["backend_cpu_s"]
    known = server is not None and copy_server is not None and copy_server > 0
    return {
        # CPU seconds, server and client together: what a busy machine's waiting leaves out
        "cpu_ratio": round((server + cpu["client_cpu_s"]) / (copy_server + base["client_cpu_s"]), 3)
        if known
        else None,
        "server_cpu_ratio": round(server / copy_server, 3) if known else None,
        "order": order,
        "load_s": round(seconds, 3),
        "copy_s": base["seconds"],
        "ratio": round(seconds / base["seconds"], 3),
        "load_backend_cpu_s": cpu["backend_cpu_s"],
        "load_client_cpu_s": cpu["client_cpu_s"],
        "load_backends": cpu["backends"],
        "copy_backend_cpu_s": base["backend_cpu_s"],
        "copy_client_cpu_s": base["client_cpu_s"],
        "copy_rows": base["rows"],
    }


def _times(ratio: float | None) -> str:
    return "?" if ratio is None else f"{ratio:.2f}x"


def _median(pairs: list[dict[str, Any]], key: str) -> float | None:
    values = [p[key] for p in pairs if p[key] is not None]
    return round(statistics.median(values), 3) if values else None


def _copy_summary(
    pairs: list[dict[str, Any]], xdrs: int, csv_path: Path, csv_seconds: float
) -> dict[str, Any]:
    """COPY's numbers over the pairs: medians, and the median of the pairs' load/COPY ratios."""
    seconds = _median(pairs, "copy_s") or 0.0
    return {
        "rows": xdrs,
        "pairs": pairs,
        "seconds": seconds,
        "rows_per_s": c.per_s(xdrs, seconds),
        "ratio": _median(pairs, "ratio"),
        "ratio_min": min(p["ratio"] for p in pairs),
        "ratio_max": max(p["ratio"] for p in pairs),
        "cpu_ratio": _median(pairs, "cpu_ratio"),
        "server_cpu_ratio": _median(pairs, "server_cpu_ratio"),
        "load_seconds_median": _median(pairs, "load_s"),
        "backend_cpu_s": _median(pairs, "copy_backend_cpu_s"),
        "load_backend_cpu_s": _median(pairs, "load_backend_cpu_s"),
        "load_client_cpu_s": _median(pairs, "load_client_cpu_s"),
        "csv_bytes": csv_path.stat().st_size,
        "csv_seconds": round(csv_seconds, 2),
    }


def _copy_pairs(
    ctx: c.Context, fixture: c.Fixture, xdrs: int, engine: Any, first: tuple[float, dict[str, Any]]
) -> dict[str, Any]:
    """``load_pairs`` pairs of a bundler load and a COPY of the same xDRs, each pair in a fresh
    target, alternating which goes first; ``first`` is the load already made in ``engine``."""
    import pyarrow.parquet as pq

    label = c.LABELS["postgresql"]
    parquet = fixture.customer / "tables" / "xdrs.parquet"
    csv_path = ctx.settings.workdir / "xdrs.csv"
    _, csv_seconds = _csv_of(parquet, csv_path)
    csv = (csv_path, pq.read_schema(parquet).names)
    try:
        seconds, cpu = first
        pairs = [_pair_numbers("load, copy", seconds, cpu, copy_baseline(engine, *csv))]
        for i in range(1, ctx.settings.load_pairs):
            with _prepared("postgresql", fixture) as (target, _):
                pairs.append(_pair(target, fixture, xdrs, csv, copy_first=i % 2 == 1))
        for i, p in enumerate(pairs, 1):
            print(
                f"  {label:<10} pair {i} ({p['order']}): load {p['load_s']:.2f} s "
                f"({_cpu_text({'backend_cpu_s': p['load_backend_cpu_s'], 'client_cpu_s': p['load_client_cpu_s']})}), "
                f"COPY {p['copy_s']:.2f} s "
                f"({_cpu_text({'backend_cpu_s': p['copy_backend_cpu_s'], 'client_cpu_s': p['copy_client_cpu_s']})})"
                f": {p['ratio']:.2f}x (CPU {_times(p['cpu_ratio'])})",
                flush=True,
            )
        wrong = [p["copy_rows"] for p in pairs if p["copy_rows"] != xdrs]
        if wrong:
            raise RuntimeError(f"COPY wrote {wrong[0]} rows of {xdrs}")
        return _copy_summary(pairs, xdrs, csv_path, csv_seconds)
    finally:
        csv_path.unlink(missing_ok=True)


def _one(ctx: c.Context, dialect: str, fixture: c.Fixture) -> dict[str, Any]:
    label = c.LABELS[dialect]
    manifest = json.loads((fixture.customer / "manifest.json").read_text(encoding="utf-8"))
    rows = manifest["totals"]["rows"]
    xdrs = manifest["tables"].get("xdrs", {}).get("rows", 0)
    with _prepared(dialect, fixture) as (engine, prepared):
        loaded, seconds, cpu = _load(engine, fixture, xdrs)
        ledger_rows, ledger_ranges = _ledger_rows(engine, loaded.bundle_id)
        result: dict[str, Any] = {
            "rows": rows,
            "xdrs": xdrs,
            "rows_created": loaded.created,
            "rows_reused": loaded.reused,
            "ledger_rows": ledger_rows,
            "ledger_ranges": ledger_ranges,
            "seconds": round(seconds, 3),
            # of which: the planner statistics refreshed after the commit (issue 20)
            "statistics_seconds": round(loaded.statistics_seconds, 3),
            "statistics_tables": loaded.statistics_refreshed,
            "rows_per_s": c.per_s(rows, seconds),
            "xdr_rows_per_s": c.per_s(xdrs, seconds),
            **cpu,
            **prepared,
        }
        print(
            f"  {label:<10} load {rows:>9,} rows ({xdrs:,} xDRs; {ledger_rows:,} ledger rows, "
            f"{ledger_ranges:,} ranges) "
            f"in {seconds:6.2f} s = {c.k(result['rows_per_s'])} rows/s, "
            f"{c.k(result['xdr_rows_per_s'])} xDR rows/s; of which {loaded.statistics_seconds:.2f} s "
            "refreshing planner statistics" + (f"; {_cpu_text(cpu)}" if cpu else ""),
            flush=True,
        )
        if dialect == "postgresql":
            base = _copy_pairs(ctx, fixture, xdrs, engine, (seconds, cpu))
            result["copy"] = base
            _, verdict = c.ratio_line(base["ratio"], 1.0, COPY_GOAL)
            print(
                f"  {label:<10} COPY FROM of the same {base['rows']:,} xDRs (CSV, {c.mib(base['csv_bytes'])} MiB) "
                f"into an identical empty table: median {base['seconds']:6.2f} s = {c.k(base['rows_per_s'])} rows/s "
                f"(server CPU {base['backend_cpu_s']} s; the load's {base['load_backend_cpu_s']} s, its client "
                f"{base['load_client_cpu_s']} s); load/COPY, median of {len(base['pairs'])} pair(s) "
                f"(range {base['ratio_min']:.2f} to {base['ratio_max']:.2f}x): {verdict}; by CPU seconds "
                f"(server and client) {_times(base['cpu_ratio'])}, the server's alone {_times(base['server_cpu_ratio'])}",
                flush=True,
            )
    return result


def run(results: dict[str, Any], ctx: c.Context) -> None:
    fixture = ctx.customer_fixture()
    section = results.setdefault("load", {})
    section["bundle_source"] = fixture.source_dialect
    for dialect in c.available(("postgresql", "sqlite", "mysql")):
        section[dialect] = _one(ctx, dialect, fixture)
