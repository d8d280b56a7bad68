"""The decisions sidecar: reuse, merge, create or abort, for shared rows that match the target.

``merge`` reuses the target's row and adds to it the parts it lacks (a tariff's rates whose
natural keys the target's tariff does not have). A match that differs in a binding column
(a currency, a price) is reused or merged only by a per-key answer; a natural key that
several target rows share is answered only per key, naming the target row (``target_pk``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import SpecError
from bundler.graph import SPEC_DIR
from bundler.keys import Key, key_text

ACTIONS = ("reuse", "merge", "create", "abort")
#: the answers that let the target's row stand in for the bundle's
REUSING = ("reuse", "merge")
FORMAT = "bundler-decisions"


@dataclass(frozen=True)
class Question:
    """A shared row of the bundle that matched a target row and needs an answer."""

    table: str
    key: Key
    target_pk: Any
    differs: dict[str, dict[str, Any]]
    #: binding columns that differ, source against target (answered per key only)
    binding: tuple[str, ...] = ()
    #: a natural key several target rows have: each one's primary key and differing columns
    candidates: tuple[dict[str, Any], ...] = ()

    def entry(self, action: str | None = None, target_pk: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "action": action,
            "target_pk": target_pk if self.candidates else self.target_pk,
            "differs": self.differs,
        }
        if self.binding:
            out["binding"] = {
                col: {"source": self.differs[col]["bundle"], "target": self.differs[col]["target"]}
                for col in self.binding
            }
        if self.candidates:
            out["candidates"] = list(self.candidates)
        return out


@dataclass
class Decisions:
    """Answers by table default, per natural key, and a global default."""

    default: str | None = None
    tables: dict[str, str | None] = field(default_factory=dict)
    rows: dict[tuple[str, str], str | None] = field(default_factory=dict)
    #: per key: the target row a decision names (for a natural key several target rows have)
    targets: dict[tuple[str, str], Any] = field(default_factory=dict)
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

    def target(self, table: str, key: Key) -> Any:
        """The target primary key a per-key decision names, None when it names none."""
        return self.targets.get((table, key_text(key)))

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
                if row.get("candidates") and row.get("target_pk") is not None:
                    decisions.targets[(table, key_text(row["key"]))] = row["target_pk"]
    return decisions


def template(bundle_id: str, questions: list[Question], decisions: Decisions) -> dict[str, Any]:
    """A sidecar listing every open question, keeping the answers already given."""
    doc: dict[str, Any] = {
        "$schema": "https://bundler.dev/spec/decisions.schema.json",
        "format": FORMAT,
        "version": 1,
        "comment": (
            "For each shared row below, the target already has a row with the same natural key. "
            "Set action to reuse (use the target's row), merge (use it and add the parts it lacks, such as "
            "a tariff's missing rates), create (add the bundle's row beside it) or abort, "
            "or set a table default (or the top-level default) to answer for many rows; then load again "
            "with --decisions pointing at this file. A row listing binding columns (a currency or a price "
            "differs) is reused or merged only by its own action; a row listing candidates (several target "
            "rows have its key) needs its own action and, to reuse, the target_pk of one candidate."
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
        entry["rows"].append(q.entry(action, decisions.target(q.table, q.key)))
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
