"""The decisions sidecar: reuse, create or abort, for shared rows that match the target."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import SpecError
from bundler.graph import SPEC_DIR
from bundler.keys import Key, key_text

ACTIONS = ("reuse", "create", "abort")
FORMAT = "bundler-decisions"


@dataclass(frozen=True)
class Question:
    """A shared row of the bundle that matched a target row and needs an answer."""

    table: str
    key: Key
    target_pk: Any
    differs: dict[str, dict[str, Any]]

    def entry(self, action: str | None = None) -> dict[str, Any]:
        return {"key": self.key, "action": action, "target_pk": self.target_pk, "differs": self.differs}


@dataclass
class Decisions:
    """Answers by table default, per natural key, and a global default."""

    default: str | None = None
    tables: dict[str, str | None] = field(default_factory=dict)
    rows: dict[tuple[str, str], str | None] = field(default_factory=dict)
    path: Path | None = None
    doc: dict[str, Any] = field(default_factory=dict)

    def action(self, table: str, key: Key) -> tuple[str | None, str]:
        """The answer for a row, and where it came from (row, table, default, none)."""
        row = self.rows.get((table, key_text(key)))
        if row is not None:
            return row, "row"
        if self.tables.get(table) is not None:
            return self.tables[table], "table"
        if self.default is not None:
            return self.default, "default"
        return None, "none"

    def set_row(self, table: str, key: Key, action: str) -> None:
        self.rows[(table, key_text(key))] = action

    def set_table(self, table: str, action: str) -> None:
        self.tables[table] = action


def _validate(doc: Any, where: str) -> None:
    import jsonschema

    schema = json.loads((SPEC_DIR / "decisions.schema.json").read_text())
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path)
    )
    if errors:
        at = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
        raise SpecError(f"decisions file {where} does not validate at {at}: {errors[0].message}")


def load_decisions(path: str | Path | None) -> Decisions:
    """Read a sidecar; a missing path means no answers at all."""
    if path is None:
        return Decisions()
    p = Path(path)
    if not p.exists():
        return Decisions(path=p)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecError(f"decisions file {p} is not valid JSON: {exc}") from None
    _validate(doc, str(p))
    decisions = Decisions(default=doc.get("default"), path=p, doc=doc)
    for table, entry in doc.get("tables", {}).items():
        decisions.tables[table] = entry.get("default")
        for row in entry.get("rows", []):
            if row.get("action") is not None:
                decisions.rows[(table, key_text(row["key"]))] = row["action"]
    return decisions


def template(bundle_id: str, questions: list[Question], decisions: Decisions) -> dict[str, Any]:
    """A sidecar listing every open question, keeping the answers already given."""
    doc: dict[str, Any] = {
        "$schema": "https://bundler.dev/spec/decisions.schema.json",
        "format": FORMAT,
        "version": 1,
        "comment": (
            "For each shared row below, the target already has a row with the same natural key. "
            "Set action to reuse (use the target's row), create (add the bundle's row beside it) or abort, "
            "or set a table default (or the top-level default) to answer for many rows; then load again "
            "with --decisions pointing at this file."
        ),
        "bundle": bundle_id,
        "default": decisions.default,
        "tables": {},
    }
    tables: dict[str, Any] = doc["tables"]
    for table, default in decisions.tables.items():
        tables.setdefault(table, {"default": default, "rows": []})
    for q in questions:
        entry = tables.setdefault(q.table, {"default": decisions.tables.get(q.table), "rows": []})
        action = decisions.rows.get((q.table, key_text(q.key)))
        entry["rows"].append(q.entry(action))
    # answers given for rows not asked this time are kept
    asked = {(q.table, key_text(q.key)) for q in questions}
    for table, entry in decisions.doc.get("tables", {}).items():
        for row in entry.get("rows", []):
            if (table, key_text(row["key"])) not in asked and row.get("action") is not None:
                tables.setdefault(table, {"default": decisions.tables.get(table), "rows": []})["rows"].append(
                    row
                )
    _validate(doc, "template")
    return doc


def write_sidecar(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def save(decisions: Decisions, path: Path, bundle_id: str, questions: list[Question]) -> None:
    """Write the answers (from --interactive) so a re-run asks nothing."""
    write_sidecar(path, template(bundle_id, questions, decisions))
