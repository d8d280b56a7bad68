"""Benchmark: ``inspect verify`` on a customer bundle with one million xDRs.

The bundle is made cheaply: the hand-made fixture's acme customer is exported (a few
dozen rows), then its ``tables/xdrs.parquet`` is replaced by one million xDRs written with
pyarrow directly — every one referencing the bundle's accounts, destinations and invoice
and the declared services, inside the declared usage window, written the way the
exporter writes (zstd, row groups of ``ROW_GROUP_ROWS``) — and its manifest entry is
fixed (rows, bytes, sha256, totals). ``run(results)`` times
:func:`bundler.inspect.verify_bundle` on it (the bundle must verify clean), prints the
seconds and stores them under ``results["inspect"]``. ``python -m bench inspect`` passes
``bundle=`` instead: the real bundle of the export benchmark's customer.

Run alone: ``python -m bench.inspect [XDRS]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

XDRS = 1_000_000
RUNS = 3


def make_bundle(workdir: Path, xdrs: int = XDRS) -> Path:
    """An exported acme bundle whose xDR table holds ``xdrs`` valid rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from bundler.bundle import MANIFEST, sha256_file
    from bundler.bundle_writer import ROW_GROUP_ROWS
    from bundler.export import ExportOptions, export_root
    from bundler.graph import graph_for_release
    from tests.export.fixture import NOW, build

    engine = build(f"sqlite:///{workdir / 'source.db'}")
    try:
        bundle = export_root(
            engine, "customer", "acme", workdir / "out", options=ExportOptions(now=NOW, mark=False)
        )
    finally:
        engine.dispose()
    path = bundle.path
    doc: dict[str, Any] = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    start = datetime.fromisoformat(doc["usage"]["from"])
    end = datetime.fromisoformat(doc["usage"]["to"])
    window_s = int((end - start).total_seconds())

    def ids(table: str, column: str) -> list[Any]:
        return (
            pq.read_table(path / "tables" / f"{table}.parquet", columns=[column]).column(column).to_pylist()
        )

    accounts = ids("accounts", "i_account")
    dests = [*ids("destinations", "i_dest"), None]
    invoices = [*ids("invoices", "i_invoice"), None, None, None]
    services = [r["value"] for r in doc["prerequisites"]["services"]["rows"]]
    schema = graph_for_release(doc["graph"]["release"]).table("xdrs").arrow_schema()

    out = path / "tables" / "xdrs.parquet"
    out.unlink()
    writer = pq.ParquetWriter(
        out, schema, compression="zstd", write_statistics=True, store_decimal_as_integer=True
    )
    step = ROW_GROUP_ROWS
    base = pa.scalar(start, pa.timestamp("us"))
    for first in range(0, xdrs, step):
        n = min(step, xdrs - first)
        seq = pa.array(range(first, first + n), pa.int64())

        def cycle(values: list[Any], type_: pa.DataType, seq: pa.Array = seq) -> pa.Array:
            return pa.array(values, type_).take(_mod(seq, len(values)))

        offsets_us = pc.multiply(_mod(pc.multiply(seq, 7919), window_s), 1_000_000)
        bill = pc.add(base, pc.cast(offsets_us, pa.duration("us")))
        connect = pc.subtract(bill, pa.scalar(60_000_000, pa.duration("us")))
        connect = pc.if_else(pc.less(connect, base), base, connect)
        amounts = pc.cast(pc.cast(_mod(seq, 100_000), pa.int32()), pa.decimal128(16, 5))
        text = pc.cast(seq, pa.string())
        batch = pa.table(
            {
                "i_xdr": pc.add(seq, 1),
                "i_account": cycle(accounts, pa.int32()),
                "i_service": cycle(services, pa.int32()),
                "i_dest": cycle(dests, pa.int32()),
                "i_invoice": cycle(invoices, pa.int32()),
                "call_id": pc.binary_join_element_wise("bench-", text, ""),
                "cli": pc.binary_join_element_wise("4420", text, ""),
                "cld": pc.binary_join_element_wise("4930", text, ""),
                "connect_time": connect,
                "disconnect_time": bill,
                "bill_time": bill,
                "charged_amount": amounts,
                "charged_quantity": pc.cast(_mod(seq, 3600), pa.int32()),
                "used_quantity": pc.cast(_mod(seq, 3600), pa.int32()),
                "account_balance": amounts,
                "country": pa.nulls(n, pa.string()),
                "description": pa.nulls(n, pa.string()),
            }
        )
        writer.write_table(batch.cast(schema), row_group_size=ROW_GROUP_ROWS)
    writer.close()
    entry = doc["tables"]["xdrs"]
    entry.update(rows=xdrs, bytes=out.stat().st_size, sha256=sha256_file(out))
    doc["totals"] = {
        "rows": sum(e["rows"] for e in doc["tables"].values()),
        "bytes": sum(e["bytes"] for e in doc["tables"].values()),
    }
    (path / MANIFEST).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _mod(values: Any, m: int) -> Any:
    """``values % m`` for int64 arrays (pyarrow has no modulo kernel)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    quotient = pc.divide(values, pa.scalar(m, pa.int64()))
    return pc.subtract(values, pc.multiply(quotient, pa.scalar(m, pa.int64())))


def run(results: dict[str, Any], *, xdrs: int = XDRS, bundle: Path | None = None, runs: int = RUNS) -> None:
    """Time ``verify_bundle`` on ``bundle`` (or on one made with ``xdrs`` synthetic xDRs).

    The numbers go under ``results["inspect"]["verify"]``.
    """
    section = results.setdefault("inspect", {})
    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as tmp:
        made = 0.0
        kind = "exported"
        if bundle is None:
            started = time.perf_counter()
            bundle = make_bundle(Path(tmp), xdrs)
            made = time.perf_counter() - started
            kind = "synthetic"
        section["verify"] = _verify(bundle, runs, kind, made)


def _verify(bundle: Path, runs: int, kind: str, made: float) -> dict[str, Any]:
    from bundler.bundle import MANIFEST
    from bundler.inspect import verify_bundle

    manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    xdrs = manifest["tables"].get("xdrs", {}).get("rows", 0)
    rows = manifest["totals"]["rows"]
    size = manifest["totals"]["bytes"]
    timings = []
    for _ in range(runs):
        report = verify_bundle(bundle)
        if not report.ok:
            raise SystemExit("the benchmark bundle does not verify:\n" + "\n".join(report.lines()))
        timings.append(report.seconds)
    best, first = min(timings), timings[0]
    origin = f"; bundle made in {made:.1f} s" if made else ""
    print(
        f"  inspect verify {kind} bundle, {rows:,} rows ({xdrs:,} xDRs, {size / 2**20:.1f} MiB of Parquet): "
        f"{first:.2f} s = {rows / first / 1000:,.0f}k rows/s (best of {runs}: {best:.2f} s{origin})",
        flush=True,
    )
    return {
        "bundle": kind,
        "xdrs": xdrs,
        "rows": rows,
        "parquet_bytes": size,
        "seconds": round(first, 3),
        "best_seconds": round(best, 3),
        "rows_per_s": round(rows / first),
        "runs": runs,
    }


if __name__ == "__main__":
    found: dict[str, Any] = {}
    run(found, xdrs=int(sys.argv[1]) if len(sys.argv) > 1 else XDRS)
    print(json.dumps(found, indent=2))
