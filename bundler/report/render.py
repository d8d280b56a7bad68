"""The report as one HTML file (plotly charts, their JavaScript inline: no network needed)
and the same data as JSON."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from bundler.keys import describe

TABLE_ROWS = 500  # rows of the differences table in the page; the JSON has them all


def _name(root: Any) -> str:
    return describe(root) if isinstance(root, dict) else str(root)


def _figures(data: dict[str, Any]) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    roots = data["roots"]
    done = [r for r in roots if r["state"] == "done" and r.get("downtime_s") is not None]
    figures: list[tuple[str, Any]] = []
    figures.append(
        (
            "Downtime per root",
            go.Figure(go.Histogram(x=[r["downtime_s"] for r in done], name="roots")).update_layout(
                xaxis_title="downtime (s)", yaxis_title="roots"
            ),
        )
    )
    timed = [r for r in done if r.get("start_s") is not None and r.get("end_s") is not None]
    figures.append(
        (
            "Downtime timeline (export start to load end)",
            go.Figure(
                go.Bar(
                    y=[f"{r['kind']} {_name(r['root'])}" for r in timed],
                    x=[r["end_s"] - r["start_s"] for r in timed],
                    base=[r["start_s"] for r in timed],
                    orientation="h",
                )
            ).update_layout(xaxis_title="seconds since the start", height=max(300, 22 * len(timed))),
        )
    )
    tables = data["tables"]
    figures.append(
        (
            "Rows and bytes per table",
            go.Figure(
                [
                    go.Bar(name="rows", x=list(tables), y=[t["rows"] for t in tables.values()]),
                    go.Bar(name="bytes", x=list(tables), y=[t["bytes"] for t in tables.values()], yaxis="y2"),
                ]
            ).update_layout(
                barmode="group",
                yaxis={"title": "rows"},
                yaxis2={"title": "bytes", "overlaying": "y", "side": "right"},
            ),
        )
    )
    points = data["throughput"]
    figures.append(
        (
            "Throughput over time",
            go.Figure(
                go.Scatter(x=[p["t_s"] for p in points], y=[p["rows"] for p in points], mode="lines+markers")
            ).update_layout(xaxis_title="seconds since the start", yaxis_title="rows migrated"),
        )
    )
    failures = data["failures"]
    figures.append(
        (
            "Failures by cause",
            go.Figure(
                go.Bar(
                    x=[f["count"] for f in failures], y=[f["cause"][:80] for f in failures], orientation="h"
                )
            ).update_layout(xaxis_title="roots", height=max(300, 40 * len(failures))),
        )
    )
    per_table = data["reused_with_differences_per_table"]
    figures.append(
        (
            "Reused rows with differences",
            go.Figure(go.Bar(x=list(per_table), y=list(per_table.values()))).update_layout(
                yaxis_title="rows"
            ),
        )
    )
    return figures


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: dict[str, Any], title: str) -> str:
    """The report page: the summary, the charts, then the tables behind them."""
    import plotly.io as pio

    from bundler.plan import human_bytes

    parts = []
    for i, (caption, figure) in enumerate(_figures(data)):
        figure.update_layout(title=caption, margin={"l": 220})
        parts.append(pio.to_html(figure, full_html=False, include_plotlyjs=i == 0, div_id=f"chart-{i}"))
    s = data["summary"]
    facts = [
        ["roots", s.get("roots")],
        ["done", s.get("done")],
        ["failed", s.get("failed")],
        ["already in the target", s.get("skipped_already_migrated")],
        ["rows", s.get("rows")],
        ["bytes", human_bytes(s.get("bytes") or 0)],
        ["seconds", s.get("seconds")],
        ["downtime p50 / p95 / max (s)", " / ".join(str(v) for v in (s.get("downtime_s") or {}).values())],
    ]
    per_root = [
        [
            r["kind"],
            _name(r["root"]),
            r["rows"],
            human_bytes(r["bytes"]),
            r["downtime_s"],
            r["state"] if r["state"] == "done" else f"{r['state']}: {r.get('message')}",
        ]
        for r in data["roots"]
    ]
    failures = [[f["count"], f["cause"]] for f in data["failures"]]
    differing = [
        [d["table"], d["key"], ", ".join(d["differs"]), _name(d["root"])]
        for d in data["reused_with_differences"]
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f'<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style></head><body>',
            f"<h1>{html.escape(title)}</h1>",
            _table(["", ""], facts),
            *parts,
            "<h2>Roots</h2>",
            _table(["kind", "root", "rows", "bytes", "downtime (s)", "outcome"], per_root),
            "<h2>Failures by cause</h2>",
            _table(["roots", "cause"], failures),
            "<h2>Reused rows with differences</h2>",
            _table(["table", "key", "differs in", "root"], differing[:TABLE_ROWS]),
            f"<p>… and {len(differing) - TABLE_ROWS} more in the JSON file</p>"
            if len(differing) > TABLE_ROWS
            else "",
            "</body></html>",
        ]
    )


def write_report(folder: Path, stem: str, data: dict[str, Any], title: str) -> tuple[Path, Path]:
    """``<stem>.html`` and ``<stem>.json`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    page, doc = folder / f"{stem}.html", folder / f"{stem}.json"
    doc.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    page.write_text(render_html(data, title), encoding="utf-8")
    return page, doc
