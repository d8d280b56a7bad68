"""Upgrade steps as data: their rules, how they are read and validated, and the path between releases.

An upgrade step (``bundle_spec/upgrades/<from>-<to>.json``, validated by
``bundle_spec/upgrade.schema.json``) lists the rules that turn the tables of one release
into those of the next. :func:`upgrade_path` chains the steps (r1 → r2 → r3) along the
shortest path the step files offer, or refuses a pair of releases with no path between
them by name (:class:`NoUpgradePath`). How the rules act on a layout and on Arrow data is
in :mod:`bundler.load.translate_layout` and :mod:`bundler.load.translate_ops`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import BundlerError, ExitCode, SpecError
from bundler.graph import SPEC_DIR
from bundler.keys import Key, describe

UPGRADES_DIR = SPEC_DIR / "upgrades"
UPGRADE_SCHEMA = SPEC_DIR / "upgrade.schema.json"


# -- errors ------------------------------------------------------------------------------------


class NoUpgradePath(BundlerError):
    """No chain of upgrade steps leads from the bundle's release to the target's."""

    exit_code = ExitCode.FAILED

    def __init__(
        self, from_release: str, to_release: str, known: Sequence[UpgradeStep], directory: Path
    ) -> None:
        self.from_release = from_release
        self.to_release = to_release
        steps = ", ".join(s.name for s in known) or "none"
        super().__init__(
            f"no upgrade path from release {from_release} to release {to_release} "
            f"(known upgrade steps: {steps})",
            hint=f"load it into a target of release {from_release}, or add an upgrade step to {directory}",
        )


class UnmappedCode(BundlerError):
    """A value of a code column that the upgrade's ``map_codes`` rule does not name."""

    exit_code = ExitCode.FAILED

    def __init__(
        self,
        *,
        step: UpgradeStep,
        table: str,
        column: str,
        value: Any,
        bundle: str | None = None,
        row: Key | None = None,
        count: int = 1,
        others: Sequence[Any] = (),
    ) -> None:
        self.bundle = bundle
        self.table = table
        self.column = column
        self.value = value
        self.row = row
        where = f"bundle {bundle}: " if bundle else ""
        at = f" of row {describe(row)}" if row else ""
        more = ""
        if count > 1:
            listed = ", ".join(repr(v) for v in others[:5])
            more = f" ({count} rows have unmapped codes{': ' + listed if listed else ''})"
        super().__init__(
            f"{where}{table}.{column}{at} holds {value!r}, a code the upgrade {step.name} does not map{more}",
            hint=f"add it to the map_codes rule of {table}.{column} in {step.path}, or change it in the source",
        )


# -- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenameTable:
    from_table: str
    to_table: str
    kind = "rename_table"


@dataclass(frozen=True)
class RenameColumn:
    table: str
    from_column: str
    to_column: str
    kind = "rename_column"


@dataclass(frozen=True)
class AddColumn:
    table: str
    column: str
    default: str | int | float | None
    type: str
    kind = "add_column"


@dataclass(frozen=True)
class DropColumn:
    table: str
    column: str
    kind = "drop_column"


@dataclass(frozen=True)
class MapCodes:
    table: str
    column: str
    map: Mapping[str, str | int]
    unmapped: str = "error"
    kind = "map_codes"


@dataclass(frozen=True)
class SplitTable:
    table: str
    into: str
    columns: tuple[str, ...]
    key: Mapping[str, str]
    skip_when_all_null: bool = False
    kind = "split_table"


Rule = RenameTable | RenameColumn | AddColumn | DropColumn | MapCodes | SplitTable


@dataclass(frozen=True)
class UpgradeStep:
    """One upgrade step file: the rules from release ``from_release`` to ``to_release``."""

    from_release: str
    to_release: str
    rules: tuple[Rule, ...]
    description: str = ""
    path: str = "<memory>"

    @property
    def name(self) -> str:
        return f"{self.from_release} → {self.to_release}"


def _rule(doc: dict[str, Any]) -> Rule:
    kind = doc["kind"]
    if kind == "rename_table":
        return RenameTable(doc["from"], doc["to"])
    if kind == "rename_column":
        return RenameColumn(doc["table"], doc["from"], doc["to"])
    if kind == "add_column":
        return AddColumn(doc["table"], doc["column"], doc["default"], doc["type"])
    if kind == "drop_column":
        return DropColumn(doc["table"], doc["column"])
    if kind == "map_codes":
        return MapCodes(doc["table"], doc["column"], dict(doc["map"]), doc.get("unmapped", "error"))
    if kind == "split_table":
        return SplitTable(
            doc["table"],
            doc["into"],
            tuple(doc["columns"]),
            dict(doc["key"]),
            bool(doc.get("skip_when_all_null", False)),
        )
    raise SpecError(f"unknown upgrade rule kind {kind!r}")  # pragma: no cover - the schema refuses it


def parse_step(doc: Any, *, path: str = "<memory>") -> UpgradeStep:
    """Validate an upgrade step document against its JSON Schema and type it."""
    import jsonschema

    schema = json.loads(UPGRADE_SCHEMA.read_text())
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path)
    )
    if errors:
        # The most specific message: the deepest path (an `allOf`/`if` wrapper says little).
        first = max(errors, key=lambda e: len(e.absolute_path))
        at = "/".join(str(p) for p in first.absolute_path) or "(top)"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise SpecError(
            f"upgrade step {path} does not validate at {at}: {first.message}{more}",
            hint=f"fix it to match {UPGRADE_SCHEMA}",
        )
    return UpgradeStep(
        from_release=doc["from"],
        to_release=doc["to"],
        rules=tuple(_rule(r) for r in doc["rules"]),
        description=doc.get("description", ""),
        path=path,
    )


#: (path, bytes) -> the step they make: a lineup's every load asks for its upgrade path, and
#: validating the step files against their schema took ~5 ms each time
_STEPS: dict[tuple[str, bytes], UpgradeStep] = {}


def load_step(path: str | Path) -> UpgradeStep:
    """Read, validate and type one upgrade step file (validated once per content)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read upgrade step {path}: {exc.strerror}") from None
    known = _STEPS.get((str(path), raw))
    if known is not None:
        return known
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"upgrade step {path} is not valid JSON: {exc}") from None
    step = parse_step(doc, path=str(path))
    _STEPS[(str(path), raw)] = step
    return step


def known_steps(directory: str | Path | None = None) -> list[UpgradeStep]:
    """Every upgrade step file of ``directory`` (default ``bundle_spec/upgrades/``)."""
    folder = Path(directory) if directory is not None else UPGRADES_DIR
    steps = [load_step(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    seen: dict[tuple[str, str], UpgradeStep] = {}
    for step in steps:
        pair = (step.from_release, step.to_release)
        if pair in seen:
            raise SpecError(
                f"two upgrade steps {step.name}: {seen[pair].path} and {step.path}", hint="keep one"
            )
        if step.from_release == step.to_release:
            raise SpecError(f"upgrade step {step.path} goes from release {step.from_release} to itself")
        seen[pair] = step
    return steps


def upgrade_path(
    from_release: str, to_release: str, *, directory: str | Path | None = None
) -> list[UpgradeStep]:
    """The steps, in order, from ``from_release`` to ``to_release``: the fewest the step files allow.

    The same release needs none (``[]``). Raises :class:`NoUpgradePath` when no chain of
    steps leads there (a downgrade, or a release no step names).
    """
    if from_release == to_release:
        return []
    steps = known_steps(directory)
    by_from: dict[str, list[UpgradeStep]] = {}
    for step in steps:
        by_from.setdefault(step.from_release, []).append(step)
    came: dict[str, UpgradeStep | None] = {from_release: None}
    queue = deque([from_release])
    while queue:
        release = queue.popleft()
        for step in by_from.get(release, []):
            if step.to_release in came:
                continue
            came[step.to_release] = step
            if step.to_release == to_release:
                path: list[UpgradeStep] = []
                at: UpgradeStep | None = step
                while at is not None:
                    path.append(at)
                    at = came[at.from_release]
                return path[::-1]
            queue.append(step.to_release)
    raise NoUpgradePath(
        from_release, to_release, steps, Path(directory) if directory is not None else UPGRADES_DIR
    )
