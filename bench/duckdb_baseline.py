"""DuckDB's own ``COPY (SELECT …) TO … (FORMAT parquet, COMPRESSION zstd)``: the export baseline.

Runs in the separate environment ``.venv-duckdb`` (DuckDB 1.5.5 and the
``duckdb-extension-{sqlite,postgres,mysql}-scanner`` wheels, whose ``.duckdb_extension`` files are
``LOAD``-ed by path: ``INSTALL`` needs the internet and no wheel of the scanners exists for
the DuckDB 2.x of the main environment). Only the standard library and ``duckdb`` are
imported, so it runs there as a plain script::

    .venv-duckdb/bin/python bench/duckdb_baseline.py --type sqlite --db PATH \\
        --sql "SELECT … FROM src.xdrs WHERE …" --out OUT.parquet [--runs N]

``--type postgres`` takes a libpq connection string as ``--db``, ``--type mysql`` one of
the MySQL scanner (``host=… port=… user=… database=…``). The database is attached
read-only as ``src``. Prints one JSON line: ``{"seconds": [...], "rows": N, "bytes": N,
"duckdb": VERSION}`` (seconds of each run: ATTACH, then COPY; the ATTACH is outside the
timing).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from pathlib import Path

PACKAGES = {
    "sqlite": "duckdb_extension_sqlite_scanner",
    "postgres": "duckdb_extension_postgres_scanner",
    "mysql": "duckdb_extension_mysql_scanner",
}


def extension_file(kind: str) -> Path:
    """The ``.duckdb_extension`` file inside the installed wheel of the scanner for ``kind``."""
    package = importlib.import_module(PACKAGES[kind])
    roots = [Path(p) for p in getattr(package, "__path__", [])] or [Path(str(package.__file__)).parent]
    for root in roots:
        found = sorted(root.rglob("*.duckdb_extension"))
        if found:
            return found[0]
    raise SystemExit(f"no .duckdb_extension file inside {PACKAGES[kind]} ({roots})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--type", choices=sorted(PACKAGES), required=True)
    parser.add_argument("--db", required=True, help="SQLite file, or a PostgreSQL or MySQL connection string")
    parser.add_argument("--sql", required=True, help="the SELECT, reading from src.<table>")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: its default)")
    args = parser.parse_args()

    import duckdb

    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {int(args.threads)}")
    con.execute(f"LOAD '{extension_file(args.type)}'")
    db = args.db.replace("'", "''")
    con.execute(f"ATTACH '{db}' AS src (TYPE {args.type}, READ_ONLY)")
    out = str(args.out).replace("'", "''")
    seconds = []
    for _ in range(max(1, args.runs)):
        if args.out.exists():
            os.unlink(args.out)
        started = time.perf_counter()
        con.execute(f"COPY ({args.sql}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
        seconds.append(round(time.perf_counter() - started, 3))
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": rows[0] if rows else 0,
                "bytes": args.out.stat().st_size,
                "duckdb": duckdb.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
