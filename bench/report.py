"""The closing table of ``python -m bench``: the key numbers of each benchmark and the goals."""

from __future__ import annotations

from typing import Any

DIALECTS = ("sqlite", "postgresql", "mysql")
HEADERS = ("SQLite", "PostgreSQL", "MariaDB")


def _rate(n: Any) -> str:
    return "" if n is None else f"{n / 1000:,.1f}k/s"


def _s(n: Any) -> str:
    return "" if n is None else f"{n:,.2f} s"


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _ratio(r: Any, goal: float) -> str:
    if r is None:
        return ""
    return f"{r:.2f}x {'ok' if r <= goal else 'MISS'}"


def _downtime(d: Any) -> str:
    if not isinstance(d, dict) or d.get("p50") is None:
        return ""
    return f"{d['p50']:.2f}/{d['p95']:.2f}/{d['max']:.2f} s"


def _lineup(run: Any) -> str:
    if not isinstance(run, dict):
        return ""
    return f"{run['roots_per_s']:.2f} roots/s, {_rate(run['rows_per_s'])}"


def rows(results: dict[str, Any]) -> list[tuple[str, list[str], str]]:
    """(what, one cell per dialect, goal) for the table."""
    out: list[tuple[str, list[str], str]] = []

    def add(label: str, cell: Any, goal: str = "") -> None:
        cells = [cell(d) for d in DIALECTS]
        if any(cells):
            out.append((label, cells, goal))

    seed = results.get("seed", {})
    add("seed: total rows/s", lambda d: _rate(_get(seed, d, "rows_per_s")))
    add("seed: xDR rows/s", lambda d: _rate(_get(seed, d, "xdr_rows_per_s")))
    add("seed: seconds", lambda d: _s(_get(seed, d, "seconds")))

    ex = results.get("export", {})
    add("export: seconds", lambda d: _s(_get(ex, d, "seconds")))
    add("export: rows/s (all tables)", lambda d: _rate(_get(ex, d, "rows_per_s")))
    add("export: xDR rows/s", lambda d: _rate(_get(ex, d, "xdr_rows_per_s")))
    add("DuckDB COPY: seconds", lambda d: _s(_get(ex, d, "duckdb", "ordered", "seconds")))
    add("DuckDB COPY: xDR rows/s", lambda d: _rate(_get(ex, d, "duckdb", "ordered", "xdr_rows_per_s")))
    add("export / DuckDB", lambda d: _ratio(_get(ex, d, "duckdb", "ratio"), 1.5), "≤ 1.5x")
    mem = ex.get("memory", {})

    def rss(d: str) -> str:
        small, big = _get(mem, d, "small"), _get(mem, d, "big")
        if not small or not big:
            return ""
        return f"{small['peak_rss_mib']:.0f} → {big['peak_rss_mib']:.0f} MiB"

    add("export peak RSS: ⅒ → all xDRs", rss, "flat")

    verify = _get(results, "inspect", "verify")
    if verify:
        cell = f"{verify['seconds']:.2f} s, {_rate(verify['rows_per_s'])}"
        out.append(("inspect verify", [cell, "", ""], ""))

    ld = results.get("load", {})
    add("load: seconds", lambda d: _s(_get(ld, d, "seconds")))
    add("load: rows/s", lambda d: _rate(_get(ld, d, "rows_per_s")))
    add("load: xDR rows/s", lambda d: _rate(_get(ld, d, "xdr_rows_per_s")))
    add("COPY FROM: seconds", lambda d: _s(_get(ld, d, "copy", "seconds")))
    add("COPY FROM: rows/s", lambda d: _rate(_get(ld, d, "copy", "rows_per_s")))
    add("load / COPY (median of pairs)", lambda d: _ratio(_get(ld, d, "copy", "ratio"), 1.3), "≤ 1.3x")
    add("load / COPY by CPU s (server+client)", lambda d: _ratio(_get(ld, d, "copy", "cpu_ratio"), 1.3))
    add("load / COPY by server CPU s", lambda d: _ratio(_get(ld, d, "copy", "server_cpu_ratio"), 1.3))

    cl = results.get("clean", {})
    add("clean bench: load seconds", lambda d: _s(_get(cl, d, "load_seconds")))
    add("clean bench: statistics refresh", lambda d: _s(_get(cl, d, "load_statistics_seconds")))
    add("reverse export: seconds", lambda d: _s(_get(cl, d, "reverse_export_seconds")))
    add("clean: seconds", lambda d: _s(_get(cl, d, "clean_seconds")))
    add("clean / load", lambda d: _ratio(_get(cl, d, "clean_ratio"), 2.0), "≤ 2x")

    lu = results.get("lineup", {})
    add(
        "lineup typical: downtime p50/p95/max",
        lambda d: _downtime(_get(lu, d, "typical", "customer_downtime_s")),
        "p95 ≤ 0.5 s",
    )
    add(
        "two-phase typical: 1st phase downtime",
        lambda d: _downtime(_get(lu, d, "two_phase", "customer_downtime_s")),
        "p95 ≤ 0.15 s",
    )
    add(
        "two-phase typical: 2nd phase per customer",
        lambda d: _s(_get(lu, d, "two_phase", "usage_phase", "seconds_per_customer")),
    )
    for w in (1, 2):
        add(f"lineup {w} worker(s): throughput", lambda d, w=w: _lineup(_get(lu, d, f"workers_{w}")))
        add(
            f"lineup {w} worker(s): customer downtime p50/p95/max",
            lambda d, w=w: _downtime(_get(lu, d, f"workers_{w}", "customer_downtime_s")),
        )
    add("lineup 1 worker: per root, last / first", lambda d: _drift(_get(lu, d, "workers_1")), "≤ 1.1x")
    add(
        "small customer bundle: rows",
        lambda d: _bundle(_get(lu, d, "workers_1", "customer_bundle")),
        "< 300 rows",
    )
    return out


def _drift(run: Any) -> str:
    if not isinstance(run, dict) or run.get("per_root_ratio") is None:
        return ""
    w = run["per_root_window"]
    return f"{_ratio(run['per_root_ratio'], 1.1)} ({w} vs {w})"


def _bundle(b: Any) -> str:
    """A customer bundle's rows: own + xDRs + shared carried (+ references named)."""
    if not isinstance(b, dict):
        return ""
    return (
        f"{b['rows']} {'ok' if b['rows'] < 300 else 'MISS'} "
        f"({b['own_rows']}+{b['usage_rows']} xDRs+{b['shared_rows']} shared; {b['references']} refs)"
    )


def summary(results: dict[str, Any]) -> str:
    table = rows(results)
    if not table:
        return "(no numbers)"
    head = ("", *HEADERS, "goal")
    body = [(label, *cells, goal) for label, cells, goal in table]
    widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(str(v).ljust(widths[i]) for i, v in enumerate(r)).rstrip()  # noqa: E731
    parts = [line(head), "  ".join("-" * w for w in widths)]
    parts += [line(r) for r in body]
    return "\n".join(parts)
