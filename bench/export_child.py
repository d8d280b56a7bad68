"""One export in a process of its own, so its peak memory is its own (run by bench.export).

``python -m bench.export_child URL OUT_DIR CUSTOMER_ID`` exports the customer with all its
xDRs (``xdrs="all"``, not marked) and prints one JSON line: the seconds, the rows per table,
bytes, the bundle's path, and the process's peak RSS in KiB before the export (after
imports and connecting) and after it.

Peak RSS is Linux's ``VmHWM`` of ``/proc/self/status``: the high-water mark of this
process image. ``getrusage(...).ru_maxrss`` is not used where ``/proc`` is there: Linux
carries it across ``fork`` and ``exec``, so a child started by a big parent reports at
least the parent's size.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_kib() -> int:
    """The process's peak resident set size so far, in KiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(url: str, out_dir: str, ident: str) -> None:
    import pyarrow  # imported before the baseline is taken, as the export needs it
    import pyarrow.parquet  # noqa: F401

    from bundler.db import connect
    from bundler.export import ExportOptions, export_root

    engine = connect(url)
    before = peak_rss_kib()
    started = time.perf_counter()
    result = export_root(
        engine, "customer", int(ident), out_dir, options=ExportOptions(xdrs="all", mark=False)
    )
    seconds = time.perf_counter() - started
    peak = peak_rss_kib()
    engine.dispose()
    manifest = result.manifest
    print(
        json.dumps(
            {
                "seconds": seconds,
                "path": str(result.path),
                "rows": manifest["totals"]["rows"],
                "bytes": manifest["totals"]["bytes"],
                "tables": {t: e["rows"] for t, e in manifest["tables"].items()},
                "xdr_bytes": manifest["tables"].get("xdrs", {}).get("bytes", 0),
                "rss_before_kib": before,
                "rss_peak_kib": peak,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
