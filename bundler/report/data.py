"""The report's data, from a lineup summary, the task times and the bundles' manifests."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bundler.report.recorder import RunRecorder

_BUNDLE_ID = re.compile(r"\b(?:customer|reseller|vendor|config|usage|reverse)-[^\s:,;()]+")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")


def cause_of(message: str | None, root: str = "") -> str:
    """A failure's cause, the same for every root it struck: the root's own name, bundle ids
    and the path of the kept bundle left out."""
    text = (message or "unknown").split(" (bundle kept:")[0]
    if root:
        text = text.replace(root, "<root>")
    return _BUNDLE_ID.sub("<bundle>", text)


def root_object(text: str) -> Any:
    """A root key as the lineup keeps it (JSON text), as an object."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def failure_groups(per_root: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed roots grouped by cause, the most frequent first."""
    from bundler.keys import describe

    groups: dict[str, list[Any]] = defaultdict(list)
    for r in per_root:
        if r["state"] == "failed":
            root = r["root"] if isinstance(r["root"], dict) else root_object(r["root"])
            shown = describe(root) if isinstance(root, dict) else str(root)
            groups[cause_of(r["message"], shown)].append({"kind": r["kind"], "root": root})
    return [
        {"cause": cause, "count": len(roots), "roots": roots}
        for cause, roots in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]


def report_data(summary: dict[str, Any], recorder: RunRecorder | None, bundles: Path) -> dict[str, Any]:
    """Everything the report shows, as plain JSON data."""
    from bundler.bundle import BUNDLE_SUFFIX, open_bundle
    from bundler.errors import BundlerError

    roots = []
    for r in summary["per_root"]:
        entry = {**r, "root": root_object(r["root"]) if isinstance(r["root"], str) else r["root"]}
        bundle = r.get("bundle_id")
        if recorder is not None and bundle:
            entry["start_s"] = recorder.starts.get(f"export {bundle}")
            entry["end_s"] = recorder.finishes.get(f"load {bundle}")
        roots.append(entry)
    tables: dict[str, dict[str, int]] = defaultdict(lambda: {"rows": 0, "bytes": 0})
    for r in roots:
        path = bundles / f"{r.get('bundle_id')}{BUNDLE_SUFFIX}"
        if r["state"] != "done" or not r.get("bundle_id") or not path.is_dir():
            continue
        try:
            with open_bundle(path) as opened:
                for name, table in opened.manifest.tables.items():
                    tables[name]["rows"] += table.rows
                    tables[name]["bytes"] += table.bytes
        except BundlerError:
            continue
    finished = sorted(
        (r["end_s"], r["rows"]) for r in roots if r.get("end_s") is not None and r["state"] == "done"
    )
    throughput, total = [], 0
    for at, rows in finished:
        total += rows
        throughput.append(
            {"t_s": round(at, 3), "rows": total, "rows_per_s": round(total / at, 1) if at else None}
        )
    differing = [
        {"kind": "config", "root": "configuration first", "table": table, **d}
        for table, items in sorted(
            ((summary.get("configuration") or {}).get("reused_with_differences") or {}).items()
        )
        for d in items
    ] + [
        {"kind": r["kind"], "root": r["root"], "table": table, **d}
        for r in roots
        for table, items in sorted((r.get("reused_with_differences") or {}).items())
        for d in items
    ]
    reused = Counter(d["table"] for d in differing)
    return {
        "summary": {k: v for k, v in summary.items() if k not in ("per_root", "failures")},
        "roots": roots,
        "tables": dict(sorted(tables.items())),
        "throughput": throughput,
        "failures": failure_groups(roots),
        "reused_with_differences": differing,
        "reused_with_differences_per_table": dict(reused),
    }
