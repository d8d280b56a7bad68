"""What a reverse transfer tells its operator: the results of ``reverse export`` and
``reverse load``, their human lines, and the report files written beside the bundle."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.keys import describe
from bundler.manifest import Manifest
from bundler.reverse.common import reverse_section, root_of


@dataclass
class ReverseExportResult:
    """What ``reverse export`` wrote, and how it sorted the customer's usage."""

    bundle_id: str
    path: Path
    manifest: Manifest
    returnable: dict[str, int]
    from_source: dict[str, int]
    not_returned: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    warnings: list[str]
    marked_rows: int
    seconds: float
    # with a source to check against: the returnable rows it would not take (a rehearsed load)
    at_load: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        rev = reverse_section(m, self.bundle_id)
        return {
            "bundle_id": self.bundle_id,
            "path": str(self.path),
            "kind": m.kind,
            "root": root_of(m, self.bundle_id).to_doc(),
            "source_system": rev["source_system"],
            "export_bundle": rev["export_bundle"],
            "returnable": dict(self.returnable),
            "already_in_source": dict(self.from_source),
            "not_returned": self.not_returned,
            "rows": self.rows,
            "marked_in_target": self.marked_rows,
            "not_taken_by_source": self.at_load,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        """The human report."""
        root = root_of(self.manifest, self.bundle_id)
        rev = reverse_section(self.manifest, self.bundle_id)
        out = [
            f"{self.path}",
            f"reverse bundle {self.bundle_id}: {root.table} {describe(root.natural_key)} "
            f"for source system {rev['source_system']} "
            f"(export {rev['export_bundle']})",
            f"  marked Exported in the target: {self.marked_rows} row(s)"
            if self.manifest.marked
            else "  no status column: nothing marked; the export records keep the root from a second transfer",
        ]
        for table in sorted(set(self.returnable) | set(self.from_source)):
            out.append(
                f"  {table}: {self.returnable.get(table, 0)} returnable, "
                f"{self.from_source.get(table, 0)} already in the source"
            )
        for row in self.rows:
            balance = row["balance"]
            shown = f", {balance['column']} {balance['value']}" if balance else ""
            out.append(f"  {row['table']} {describe(row['natural_key'])}: status {row['status']!r}{shown}")
            if balance and balance.get("explained"):
                out.append(f"    {explain_line(balance['value'], balance['explained'])}")
        out.extend(not_returned_lines(self.not_returned))
        if self.at_load:
            out.append("  the source will not take these (a rehearsed reverse load said so):")
            out.extend(not_returned_lines(self.at_load)[1:])
        out.extend(f"  warning: {w}" for w in self.warnings)
        return out


@dataclass
class ReverseLoadResult:
    """What ``reverse load`` did in the source: the report for the administrator."""

    bundle_id: str
    bundle: str
    outcome: str  # returned | already-returned | rehearsed
    root: dict[str, Any]
    imported: dict[str, int] = field(default_factory=dict)
    already_in_source: dict[str, int] = field(default_factory=dict)
    not_returned: list[dict[str, Any]] = field(default_factory=list)
    balances: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # table -> amount of the rows the export counted as returned usage that this load could not return
    dropped: dict[str, str] = field(default_factory=dict)
    report_paths: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "bundle": self.bundle,
            "outcome": self.outcome,
            "root": self.root,
            "imported": dict(self.imported),
            "already_in_source": dict(self.already_in_source),
            "not_returned": self.not_returned,
            "balance_adjustments": self.balances,
            "returnable_not_returned": dict(self.dropped),
            "statuses": self.statuses,
            "warnings": list(self.warnings),
            "report": [str(p) for p in self.report_paths],
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        """The human report."""
        root = self.root
        name = f"{root.get('table')} {describe(root.get('natural_key') or {})}"
        if self.outcome == "already-returned":
            return [f"{self.bundle_id}: already applied to this source; nothing changed ({name})"]
        out = [f"reverse bundle {self.bundle_id}: {name} returned to the source"]
        for table in sorted(set(self.imported) | set(self.already_in_source)):
            out.append(
                f"  {table}: {self.imported.get(table, 0)} imported, "
                f"{self.already_in_source.get(table, 0)} already in the source"
            )
        for s in self.statuses:
            out.append(
                f"  status: {s['table']} {describe(s['natural_key'])}: {s['column']} {s['before']!r} → {s['after']!r}"
            )
        out.extend(self._balance_lines())
        out.extend(not_returned_lines(self.not_returned))
        if self.not_returned:
            out.append(
                "  the balances above include the charges of the rows not returned, which the source has no "
                "record of: settle that difference by hand"
            )
        out.extend(f"  warning: {w}" for w in self.warnings)
        return out

    def _balance_lines(self) -> list[str]:
        if not self.balances:
            return []
        out = ["  balance adjustments (set to the target's figures):"]
        for b in self.balances:
            out.append(
                f"    {b['table']} {describe(b['natural_key'])} {b['column']}: "
                f"{b['before']} → {b['after']} ({_signed(b['difference'])})"
            )
            if b.get("explained"):
                out.append(f"      {explain_line(b['after'], b['explained'])}")
        if self.dropped:
            held = ", ".join(f"{t} {_signed(v)}" for t, v in sorted(self.dropped.items()))
            out.append(
                f"    of the usage counted as returned above, not returned by this load: {held} (listed below)"
            )
        return out


def _signed(text: str | None) -> str:
    if text is None:
        return "was empty"
    return text if text.startswith("-") else f"+{text}"


def explain_line(figure: Any, explained: dict[str, Any]) -> str:
    """What a balance set to the target's figure holds: returned usage, and items not returned."""
    held = ", ".join(f"{table} {_signed(amount)}" for table, amount in explained["not_returned"].items())
    return (
        f"the target's figure {figure}: of which usage returned now {_signed(explained['returned_usage'])}; "
        f"items made on the target and not returned: {held or 'none'}"
    )


def not_returned_lines(items: list[dict[str, Any]]) -> list[str]:
    """The rows that cannot be returned, with the reasons (and amounts), as report lines."""
    if not items:
        return ["  not returned: nothing"]
    out = [f"  not returned ({len(items)}):"]
    for item in items:
        when = f" ({item['time']})" if item.get("time") else ""
        amount = item.get("amount")
        money = f" [{amount['column']} {amount['value']}]" if amount else ""
        out.append(
            f"    {item['table']} {describe(item['natural_key'])}{when}{money}: {'; '.join(item['reasons'])}"
        )
    return out


def write_report(result: ReverseLoadResult, folder: Path) -> list[Path]:
    """``<bundle id>.report.json`` and ``.report.txt`` in ``folder``, each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    doc = result.summary()
    doc.pop("report", None)
    doc.pop("seconds", None)
    for suffix, text in (
        (".report.json", json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"),
        (".report.txt", "\n".join(result.lines()) + "\n"),
    ):
        path = folder / f"{result.bundle_id}{suffix}"
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written
