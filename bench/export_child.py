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
import threading
import time


def _status_kib(field: str) -> int | None:
    """A ``field:`` (in KiB) of ``/proc/self/status``; None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_kib() -> int:
    """The process's peak resident set size so far, in KiB."""
    peak = _status_kib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_kib() -> int:
    """The process's resident set size now, in KiB (0 where /proc is not there)."""
    return _status_kib("VmRSS") or 0


class RssSampler:
    """Samples RSS every ``interval`` seconds in a thread; ``quarters()`` is the highest of each quarter.

    Peak RSS alone cannot tell a pipeline that fills up once from memory that grows with
    the rows: the highest RSS of each quarter of the run can (flat after the first quarter).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_kib())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def quarters(self) -> list[int]:
        n = len(self.samples)
        if n < 4:
            return []
        return [max(self.samples[i * n // 4 : (i + 1) * n // 4]) for i in range(4)]


def main(url: str, out_dir: str, ident: str) -> None:
    import pyarrow  # imported before the baseline is taken, as the export needs it
    import pyarrow.parquet  # noqa: F401

    from bundler.db import connect
    from bundler.export import ExportOptions, export_root

    engine = connect(url)
    before = peak_rss_kib()
    started = time.perf_counter()
    with RssSampler() as sampler:
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
                "rows": manifest.totals.rows,
                "bytes": manifest.totals.bytes,
                "tables": manifest.table_rows(),
                "xdr_bytes": manifest.tables["xdrs"].bytes if "xdrs" in manifest.tables else 0,
                "rss_before_kib": before,
                "rss_peak_kib": peak,
                "rss_quarters_kib": sampler.quarters(),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
