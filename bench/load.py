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
COPY's time (issue 14). The xDRs are recorded in the ledger as runs of keys
(``bundler_ledger_ranges``), not row by row: both counts are reported.
"""

from __future__ import annotations

import json
import time
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


def copy_baseline(engine: Any, bundle: Path, workdir: Path) -> dict[str, Any]:
    """Seconds of PostgreSQL's ``COPY FROM`` of the bundle's xDRs into an identical empty table."""
    import pyarrow.parquet as pq

    parquet = bundle / "tables" / "xdrs.parquet"
    csv_path = workdir / "xdrs.csv"
    rows, csv_seconds = _csv_of(parquet, csv_path)
    names = ", ".join(f'"{n}"' for n in pq.read_schema(parquet).names)
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        with driver.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
            cur.execute(f"CREATE TABLE {COPY_TABLE} (LIKE xdrs INCLUDING ALL)")
        driver.commit()
        started = time.perf_counter()
        with (
            driver.cursor() as cur,
            cur.copy(f"COPY {COPY_TABLE} ({names}) FROM STDIN (FORMAT csv)") as copy,
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
    size = csv_path.stat().st_size
    csv_path.unlink()
    if copied != rows:
        raise RuntimeError(f"COPY wrote {copied} rows of {rows}")
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": c.per_s(rows, seconds),
        "csv_bytes": size,
        "csv_seconds": round(csv_seconds, 2),
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


def _one(ctx: c.Context, dialect: str, fixture: c.Fixture) -> dict[str, Any]:
    from bundler.db import connect
    from bundler.load import load_bundle

    label = c.LABELS[dialect]
    manifest = json.loads((fixture.customer / "manifest.json").read_text(encoding="utf-8"))
    rows = manifest["totals"]["rows"]
    xdrs = manifest["tables"].get("xdrs", {}).get("rows", 0)
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
            started = time.perf_counter()
            loaded = load_bundle(engine, fixture.customer, decisions=c.DECISIONS)
            seconds = time.perf_counter() - started
            if loaded.outcome != "loaded":
                raise RuntimeError(f"load outcome {loaded.outcome}")
            created = loaded.tables["xdrs"].created if "xdrs" in loaded.tables else 0
            if created != xdrs:
                raise RuntimeError(f"loaded {created} xDRs of {xdrs}")
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
                "target_prepare_seconds": round(prepared, 1),
                "vendor_load_seconds": round(vendors_s, 1),
            }
            print(
                f"  {label:<10} load {rows:>9,} rows ({xdrs:,} xDRs; {ledger_rows:,} ledger rows, "
                f"{ledger_ranges:,} ranges) "
                f"in {seconds:6.2f} s = {c.k(result['rows_per_s'])} rows/s, "
                f"{c.k(result['xdr_rows_per_s'])} xDR rows/s; of which {loaded.statistics_seconds:.2f} s "
                "refreshing planner statistics",
                flush=True,
            )
            if dialect == "postgresql":
                base = copy_baseline(engine, fixture.customer, ctx.settings.workdir)
                ratio, verdict = c.ratio_line(seconds, base["seconds"], COPY_GOAL)
                base["ratio"] = ratio
                result["copy"] = base
                print(
                    f"  {label:<10} COPY FROM of the same {base['rows']:,} xDRs (CSV, {c.mib(base['csv_bytes'])} MiB) "
                    f"into an identical empty table: {base['seconds']:6.2f} s = {c.k(base['rows_per_s'])} rows/s; "
                    f"load/COPY {verdict}",
                    flush=True,
                )
        finally:
            engine.dispose()
    return result


def run(results: dict[str, Any], ctx: c.Context) -> None:
    fixture = ctx.customer_fixture()
    section = results.setdefault("load", {})
    section["bundle_source"] = fixture.source_dialect
    for dialect in c.available(("postgresql", "sqlite", "mysql")):
        section[dialect] = _one(ctx, dialect, fixture)
