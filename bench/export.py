"""Benchmark (issue 3): export one customer holding ``xdrs`` xDRs, against DuckDB's own COPY.

For SQLite and PostgreSQL each (the goal's databases), and MariaDB beside them: a fresh source is seeded with one retail customer whose
accounts hold all ``xdrs`` xDRs; the customer is exported with every xDR (``xdrs="all"``,
not marked) in a process of its own (:mod:`bench.export_child`), which reports the
seconds and its peak RSS. In the same run DuckDB 1.5.5 (``.venv-duckdb``, see
:mod:`bench.duckdb_baseline`) attaches the same database with its scanner and runs
``COPY (SELECT …) TO … (FORMAT parquet, COMPRESSION zstd)`` of that customer's xDRs: the
exporter's own query (same columns cast to the bundle's types, same WHERE, same ORDER BY)
(best of ``export_runs``) and, for reference, the same without ORDER BY (once). The goal: the export takes at most 1.5x
DuckDB's time for the same rows. (The export's time covers the whole customer — about
ten thousand configuration rows besides the xDRs — so the ratio slightly favours DuckDB.)

Memory: the same export for a customer with a tenth of the xDRs, also in its own process;
peak RSS of both shows whether memory grows with the xDR count. The small export ends
before the read-ahead (two key ranges in flight, a batch waiting for the file writer) is
full, so the big run also reports the highest RSS of each quarter of its time: flat after
the first quarter means memory is bounded by the batch size, not the xDR count.

The first source's bundle and its vendor bundles stay in the work folder for ``inspect``
and ``load``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import bench.common as c


def _duck_type(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    names = {
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.string(): "VARCHAR",
        pa.large_string(): "VARCHAR",
        pa.bool_(): "BOOLEAN",
        pa.float64(): "DOUBLE",
        pa.float32(): "FLOAT",
        pa.date32(): "DATE",
    }
    return names.get(arrow_type, "VARCHAR")


def baseline_sql(accounts: list[int], *, ordered: bool) -> str:
    """The exporter's xDR query for DuckDB: the bundle's columns and types, this customer's accounts."""
    from bundler.graph import graph_for_release

    spec = graph_for_release("r1").table("xdrs")
    columns = ", ".join(
        f'CAST("{f.name}" AS {_duck_type(f.type)}) AS "{f.name}"' for f in spec.arrow_schema()
    )
    where = ", ".join(str(int(a)) for a in accounts)
    order = " ORDER BY " + ", ".join(f'"{p}"' for p in spec.pk) if ordered else ""
    return f"SELECT {columns} FROM src.xdrs WHERE i_account IN ({where}){order}"


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    parts = {"host": u.host or "127.0.0.1", "port": u.port or 5432, "dbname": u.database, "user": u.username}
    if u.password:
        parts["password"] = u.password
    return " ".join(f"{key}={value}" for key, value in parts.items() if value is not None)


def _mysql(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    parts = {
        "host": u.host or "127.0.0.1",
        "port": u.port or 3306,
        "user": u.username,
        "database": u.database,
    }
    if u.password:
        parts["password"] = u.password
    return " ".join(f"{key}={value}" for key, value in parts.items() if value is not None)


def _duckdb(python: Path, dialect: str, url: str, sql: str, out: Path, runs: int) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    if dialect == "sqlite":
        kind, db = "sqlite", str(make_url(url).database)
    elif dialect == "mysql":
        kind, db = "mysql", _mysql(url)
    else:
        kind, db = "postgres", _libpq(url)
    script = str(Path(__file__).with_name("duckdb_baseline.py"))
    return c.run_json(
        [
            str(python),
            script,
            "--type",
            kind,
            "--db",
            db,
            "--sql",
            sql,
            "--out",
            str(out),
            "--runs",
            str(runs),
        ]
    )


def _accounts(engine: Any, customer: int) -> list[int]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT i_account FROM accounts WHERE i_customer = :c ORDER BY i_account"),
                {"c": customer},
            ).scalars()
        )


def _export(url: str, out: Path, customer: int) -> dict[str, Any]:
    return c.run_json(c.python_module("bench.export_child", url, str(out), str(customer)))


def _memory(child: dict[str, Any]) -> dict[str, Any]:
    return {
        "xdrs": child["tables"].get("xdrs", 0),
        "rows": child["rows"],
        "peak_rss_mib": round(child["rss_peak_kib"] / 1024, 1),
        "rss_before_export_mib": round(child["rss_before_kib"] / 1024, 1),
        "export_growth_mib": round((child["rss_peak_kib"] - child["rss_before_kib"]) / 1024, 1),
        "rss_by_quarter_mib": [round(q / 1024) for q in child.get("rss_quarters_kib", [])],
    }


def _big(ctx: c.Context, dialect: str, duck: Path | None, duck_why: str) -> dict[str, Any]:
    from bundler.db import connect

    s = ctx.settings
    label = c.LABELS[dialect]
    out = s.workdir / f"export-{dialect}"
    with c.temp_database(dialect, "export") as url:
        engine = connect(url)
        try:
            started = time.perf_counter()
            counts = c.seed_big_customer(engine, s.xdrs)
            seeded = time.perf_counter() - started
            customer = c.big_customer(engine)
            accounts = _accounts(engine, customer)
            runs = [_export(url, out / f"run{i + 1}", customer) for i in range(s.export_runs)]
            child = min(runs, key=lambda r: r["seconds"])
            child["rss_peak_kib"] = max(r["rss_peak_kib"] for r in runs)
            xdrs = child["tables"].get("xdrs", 0)
            assert xdrs == counts["xdrs"], f"exported {xdrs} xDRs of {counts['xdrs']}"
            result: dict[str, Any] = {
                "xdrs": xdrs,
                "rows": child["rows"],
                "bytes": child["bytes"],
                "xdr_parquet_bytes": child["xdr_bytes"],
                "seconds": round(child["seconds"], 3),
                "runs_seconds": [round(r["seconds"], 3) for r in runs],
                "rows_per_s": c.per_s(child["rows"], child["seconds"]),
                "xdr_rows_per_s": c.per_s(xdrs, child["seconds"]),
                "memory": _memory(child),
                "seed_seconds": round(seeded, 1),
            }
            line = (
                f"  {label:<10} export {child['rows']:>9,} rows ({xdrs:,} xDRs, {c.mib(child['bytes'])} MiB) "
                f"in {child['seconds']:6.2f} s = {c.k(result['rows_per_s'])} rows/s, "
                f"{c.k(result['xdr_rows_per_s'])} xDR rows/s"
                + (
                    f" (best of {len(runs)}: {', '.join(f'{r:.2f}' for r in result['runs_seconds'])} s)"
                    if len(runs) > 1
                    else ""
                )
            )
            print(line, flush=True)
            if duck is not None:
                base: dict[str, Any] = {}
                for ordered in (True, False):
                    sql = baseline_sql(accounts, ordered=ordered)
                    got = _duckdb(
                        duck,
                        dialect,
                        url,
                        sql,
                        s.workdir / f"duckdb-{dialect}.parquet",
                        s.export_runs if ordered else 1,
                    )
                    if got["rows"] != xdrs:
                        raise RuntimeError(f"DuckDB wrote {got['rows']} rows, the export {xdrs}")
                    key = "ordered" if ordered else "unordered"
                    base[key] = {
                        "seconds": min(got["seconds"]),
                        "runs_seconds": got["seconds"],
                        "xdr_rows_per_s": c.per_s(xdrs, min(got["seconds"])),
                        "bytes": got["bytes"],
                    }
                    base["duckdb_version"] = got["duckdb"]
                (s.workdir / f"duckdb-{dialect}.parquet").unlink(missing_ok=True)
                ratio, verdict = c.ratio_line(child["seconds"], base["ordered"]["seconds"], 1.5)
                base["ratio"] = ratio
                base["ratio_vs_unordered"] = round(child["seconds"] / base["unordered"]["seconds"], 2)
                result["duckdb"] = base
                print(
                    f"  {label:<10} DuckDB COPY of the same {xdrs:,} xDRs: {base['ordered']['seconds']:6.2f} s = "
                    f"{c.k(base['ordered']['xdr_rows_per_s'])} rows/s "
                    f"(without ORDER BY {base['unordered']['seconds']:.2f} s, {c.mib(base['ordered']['bytes'])} MiB); "
                    f"export/DuckDB {verdict}",
                    flush=True,
                )
            else:
                result["duckdb"] = {"available": False, "reason": duck_why}
            if ctx.fixture is None:
                vendors = ctx.export_vendors(engine, dialect)
                ctx.fixture = c.Fixture(Path(runs[0]["path"]), vendors, dialect, xdrs)
                for extra in runs[1:]:
                    shutil.rmtree(Path(extra["path"]).parent, ignore_errors=True)
            else:
                shutil.rmtree(out, ignore_errors=True)
        finally:
            engine.dispose()
    return result


def _small(ctx: c.Context, dialect: str) -> dict[str, Any]:
    from bundler.db import connect

    s = ctx.settings
    out = s.workdir / f"export-small-{dialect}"
    with c.temp_database(dialect, "export_small") as url:
        engine = connect(url)
        try:
            c.seed_big_customer(engine, s.small_xdrs)
            customer = c.big_customer(engine)
        finally:
            engine.dispose()
        child = _export(url, out, customer)
    shutil.rmtree(out, ignore_errors=True)
    return {
        **_memory(child),
        "seconds": round(child["seconds"], 3),
        "rows_per_s": c.per_s(child["rows"], child["seconds"]),
    }


def run(results: dict[str, Any], ctx: c.Context) -> None:
    from bench import duckdb_env

    s = ctx.settings
    section = results.setdefault("export", {})
    section["xdrs"] = s.xdrs
    if s.duckdb:
        duck, why = duckdb_env.ensure()
    else:
        duck, why = None, "switched off (--no-duckdb)"
    if duck is None:
        print(f"  DuckDB baseline unavailable: {why}")
    section["duckdb_baseline"] = {"available": duck is not None, "reason": why or None}
    memory = section.setdefault("memory", {})
    # the goal is for SQLite and PostgreSQL; MariaDB (read through PyMySQL) is measured beside them
    for dialect in c.available(("sqlite", "postgresql", "mysql")):
        big = _big(ctx, dialect, duck, why)
        section[dialect] = big
        small = _small(ctx, dialect)
        large = big["memory"]
        memory[dialect] = {"small": small, "big": large}
        growth = large["peak_rss_mib"] - small["peak_rss_mib"]
        memory[dialect]["peak_rss_growth_mib"] = round(growth, 1)
        print(
            f"  {c.LABELS[dialect]:<10} peak RSS of the export process: {small['xdrs']:,} xDRs "
            f"{small['peak_rss_mib']:.0f} MiB, {large['xdrs']:,} xDRs {large['peak_rss_mib']:.0f} MiB "
            f"(after imports {large['rss_before_export_mib']:.0f} MiB) — {growth:+.0f} MiB for "
            f"{large['xdrs'] / max(small['xdrs'], 1):.0f}x the xDRs",
            flush=True,
        )
        if large["rss_by_quarter_mib"]:
            print(
                f"  {c.LABELS[dialect]:<10} RSS during the {large['xdrs']:,}-xDR export, highest of each quarter "
                f"of its time: {' / '.join(str(q) for q in large['rss_by_quarter_mib'])} MiB "
                "(the read-ahead fills in the first quarter; flat after it means bounded)",
                flush=True,
            )
