"""The manifest of a bundle, typed: one builder for every writer, one reader for every verb.

``manifest.json`` is the bundle's table of contents: what it holds, where it comes from,
the checksum of every file. On disk it is JSON (validated by
``bundle_spec/manifest.schema.json``); in the program it is a :class:`Manifest`.

- Writers (export of a root, of configuration, of usage; reverse export) describe what
  they know before the files are finished in a :class:`ManifestDraft`;
  :meth:`ManifestDraft.complete` adds the files' entries and totals.
- Readers go through :func:`read_manifest`: the bytes are bounded in size and depth,
  parsed, refused when of a newer format, upgraded step by step from an older one
  (:data:`UPGRADES`, as dlt migrates its load packages), validated against the schema
  and only then typed. ``inspect verify``, which reports every problem instead of the
  first, uses :func:`manifest_problems` on the raw document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from bundler import __version__
from bundler.errors import BundleInvalid
from bundler.graph import SPEC_DIR

FORMAT = "bundler-bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
TABLES_DIR = "tables"

#: A manifest larger than this is refused before it is parsed (a real one is a few MB at most).
MAX_MANIFEST_BYTES = 256 << 20


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """Format 2 names, per outside table, the bundles whose loads mapped its rows (``from``).

    A version-1 bundle said it by implication: the owned and usage rows it referenced
    outside itself were mapped by the bundles it ``depends_on`` (a usage bundle's accounts,
    brought by its customer bundle); everything else was found by natural key.
    """
    depends = list(doc.get("depends_on") or [])
    outside = doc.get("prerequisites")
    if depends and isinstance(outside, dict):
        for entry in outside.values():
            if isinstance(entry, dict) and entry.get("scope") in ("owned", "usage"):
                entry["from"] = depends
    return doc


#: ``UPGRADES[n]`` turns a manifest of format version ``n`` into one of version ``n + 1``.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


# -- the parts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RootRef:
    """The row a bundle was made from."""

    table: str
    source_pk: int | str
    natural_key: dict[str, Any]

    def to_doc(self) -> dict[str, Any]:
        return {"table": self.table, "source_pk": self.source_pk, "natural_key": self.natural_key}


@dataclass(frozen=True)
class SourceRef:
    """The database a bundle was exported from."""

    system_id: str
    release: str
    dialect: str

    def to_doc(self) -> dict[str, Any]:
        return {"system_id": self.system_id, "release": self.release, "dialect": self.dialect}


@dataclass(frozen=True)
class GraphRef:
    """The entity graph a bundle was written with."""

    system: str
    release: str
    sha256: str

    def to_doc(self) -> dict[str, Any]:
        return {"system": self.system, "release": self.release, "sha256": self.sha256}


@dataclass(frozen=True)
class UsageRef:
    """The usage window: ``start`` inclusive, ``end`` exclusive (ISO 8601, naive UTC)."""

    mode: str
    start: str | None
    end: str | None
    billing_period: str | None = None
    has_period: bool = False  # whether the document names a billing period (null included)
    #: each customer's own window (a reseller bundle: every customer under it), as written
    windows: tuple[dict[str, Any], ...] | None = None
    #: why the window carried no usage although the root has some outside it
    warning: str | None = None
    #: usage tables -> source key after which a row arrived late (its charge moves the balances)
    late_after: dict[str, Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mode": self.mode, "from": self.start, "to": self.end}
        if self.has_period:
            doc["billing_period"] = self.billing_period
        if self.windows is not None:
            doc["windows"] = [dict(w) for w in self.windows]
        if self.warning is not None:
            doc["warning"] = self.warning
        if self.late_after is not None:
            doc["late_after"] = dict(self.late_after)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> UsageRef:
        windows = doc.get("windows")
        return cls(
            doc["mode"],
            doc["from"],
            doc["to"],
            doc.get("billing_period"),
            "billing_period" in doc,
            tuple(windows) if windows is not None else None,
            doc.get("warning"),
            doc.get("late_after"),
        )


@dataclass(frozen=True)
class TableEntry:
    """One table's file: where, how many rows and bytes, its checksum and column types."""

    file: str
    scope: str
    rows: int
    bytes: int
    sha256: str
    columns: dict[str, str]
    status_restored: int | None = None
    encrypted: tuple[str, ...] = ()  # columns encrypted column by column (bundler.secure.columns)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "file": self.file,
            "scope": self.scope,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "columns": self.columns,
        }
        if self.status_restored is not None:
            doc["status_restored"] = self.status_restored
        if self.encrypted:
            doc["encrypted"] = list(self.encrypted)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> TableEntry:
        return cls(
            doc["file"],
            doc["scope"],
            doc["rows"],
            doc["bytes"],
            doc["sha256"],
            dict(doc["columns"]),
            doc.get("status_restored"),
            tuple(doc.get("encrypted", ())),
        )


@dataclass(frozen=True)
class OutsideRow:
    """A referenced value the bundle does not carry, with the referenced row's natural key."""

    value: int | str
    key: dict[str, Any]


@dataclass(frozen=True)
class Outside:
    """Rows of one table a bundle references but does not carry.

    Prerequisites, rows of other roots, and (format 2) shared rows that an earlier bundle
    of the same source carried: ``source_bundles`` names the bundles whose loads mapped
    them, and the load finds them through those loads' ledger, not by natural key.
    """

    column: str
    scope: str
    rows: tuple[OutsideRow, ...]
    source_bundles: tuple[str, ...] = ()

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"column": self.column, "scope": self.scope}
        if self.source_bundles:
            doc["from"] = list(self.source_bundles)
        doc["rows"] = [{"value": r.value, "key": r.key} for r in self.rows]
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Outside:
        return cls(
            doc["column"],
            doc["scope"],
            tuple(OutsideRow(r["value"], r["key"]) for r in doc["rows"]),
            tuple(doc.get("from", ())),
        )


@dataclass(frozen=True)
class Selection:
    """A config bundle's request: a table, and the entries named by natural key (none = all)."""

    table: str
    keys: tuple[str, ...]

    def to_doc(self) -> dict[str, Any]:
        return {"table": self.table, "keys": list(self.keys)}


def source_ref(system: Any) -> SourceRef:
    """The manifest's description of a database (a :class:`bundler.tracking.SystemInfo`)."""
    return SourceRef(system.system_id, system.release, system.dialect)


def graph_ref(graph: Any) -> GraphRef:
    """The manifest's description of an entity graph (a :class:`bundler.graph.Graph`)."""
    return GraphRef(graph.system, graph.release, graph.sha256)


def created_at(now: Any) -> str:
    """A naive UTC datetime as the manifest's ``created_at``."""
    return str(now.isoformat(timespec="seconds")) + "Z"


# -- the manifest ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestDraft:
    """What a writer knows of its bundle before the files are finished."""

    kind: str
    root: RootRef | None
    source: SourceRef
    graph: GraphRef
    created_at: str
    usage: UsageRef
    prerequisites: Mapping[str, Outside] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    marked: bool | None = None
    selection: tuple[Selection, ...] | None = None
    reverse: dict[str, Any] | None = None  # a reverse bundle's section, as the schema gives it
    status_restored: Mapping[str, int] = field(default_factory=dict)

    def complete(self, bundle_id: str, tables: Mapping[str, TableEntry]) -> Manifest:
        """The manifest of the finished bundle: the draft, the files' entries and totals."""
        entries = {
            name: replace(entry, status_restored=self.status_restored.get(name, entry.status_restored))
            for name, entry in sorted(tables.items())
        }
        return Manifest(
            bundle_id=bundle_id,
            draft=self,
            tables=entries,
            totals=Totals(sum(e.rows for e in entries.values()), sum(e.bytes for e in entries.values())),
            tool_version=__version__,
        )


@dataclass(frozen=True)
class Totals:
    rows: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest, read or about to be written."""

    bundle_id: str
    draft: ManifestDraft
    tables: Mapping[str, TableEntry]
    totals: Totals
    tool_version: str
    format_version: int = FORMAT_VERSION

    # the draft's fields, read as the manifest's own
    @property
    def kind(self) -> str:
        return self.draft.kind

    @property
    def root(self) -> RootRef | None:
        return self.draft.root

    @property
    def source(self) -> SourceRef:
        return self.draft.source

    @property
    def graph(self) -> GraphRef:
        return self.draft.graph

    @property
    def created_at(self) -> str:
        return self.draft.created_at

    @property
    def usage(self) -> UsageRef:
        return self.draft.usage

    @property
    def prerequisites(self) -> Mapping[str, Outside]:
        return self.draft.prerequisites

    @property
    def depends_on(self) -> tuple[str, ...]:
        return self.draft.depends_on

    @property
    def marked(self) -> bool | None:
        return self.draft.marked

    @property
    def reverse(self) -> dict[str, Any] | None:
        return self.draft.reverse

    @property
    def selection(self) -> tuple[Selection, ...] | None:
        return self.draft.selection

    def table_rows(self) -> dict[str, int]:
        return {name: entry.rows for name, entry in self.tables.items()}

    def to_doc(self) -> dict[str, Any]:
        """The JSON document, keys in the order bundles have always been written."""
        d = self.draft
        doc: dict[str, Any] = {"kind": d.kind, "root": d.root.to_doc() if d.root else None}
        if d.selection is not None:
            doc["selection"] = [s.to_doc() for s in d.selection]
        doc.update(source=d.source.to_doc(), graph=d.graph.to_doc(), created_at=d.created_at)
        if d.marked is not None:
            doc["marked"] = d.marked
        doc.update(
            usage=d.usage.to_doc(),
            prerequisites={t: o.to_doc() for t, o in d.prerequisites.items()},
            depends_on=list(d.depends_on),
        )
        if d.reverse is not None:
            doc["reverse"] = d.reverse
        doc.update(
            format=FORMAT,
            format_version=self.format_version,
            bundle_id=self.bundle_id,
            tool={"name": "bundler", "version": self.tool_version},
            tables={t: e.to_doc() for t, e in self.tables.items()},
            totals={"rows": self.totals.rows, "bytes": self.totals.bytes},
        )
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_doc(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Manifest:
        """A manifest from a document that :func:`manifest_problems` found nothing wrong with."""
        root = doc["root"]
        selection = doc.get("selection")
        draft = ManifestDraft(
            kind=doc["kind"],
            root=RootRef(root["table"], root["source_pk"], root["natural_key"]) if root else None,
            source=SourceRef(**doc["source"]),
            graph=GraphRef(**doc["graph"]),
            created_at=doc["created_at"],
            usage=UsageRef.from_doc(doc["usage"]),
            prerequisites={t: Outside.from_doc(o) for t, o in doc["prerequisites"].items()},
            depends_on=tuple(doc["depends_on"]),
            marked=doc.get("marked"),
            selection=tuple(Selection(s["table"], tuple(s["keys"])) for s in selection)
            if selection is not None
            else None,
            reverse=doc.get("reverse"),
        )
        tables = {t: TableEntry.from_doc(e) for t, e in doc["tables"].items()}
        totals = doc.get("totals") or {
            "rows": sum(e.rows for e in tables.values()),
            "bytes": sum(e.bytes for e in tables.values()),
        }
        return cls(
            bundle_id=doc["bundle_id"],
            draft=draft,
            tables=tables,
            totals=Totals(totals["rows"], totals["bytes"]),
            tool_version=doc["tool"]["version"],
            format_version=doc["format_version"],
        )


# -- reading ---------------------------------------------------------------------------------


def parse_manifest_bytes(raw: bytes, name: str) -> Any:
    """The JSON value of a manifest's bytes, bounded in size and nesting (BundleInvalid if not)."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleInvalid(
            name,
            [f"manifest.json is {len(raw)} bytes, more than the {MAX_MANIFEST_BYTES} this bundler reads"],
        )
    try:
        return json.loads(raw)
    except RecursionError:
        raise BundleInvalid(name, ["manifest.json nests too deep to be a manifest"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleInvalid(name, [f"manifest.json is not valid JSON: {exc}"]) from None


def version_problem(doc: Mapping[str, Any]) -> str | None:
    """What is wrong with a document's format version, if anything."""
    version = doc.get("format_version")
    if type(version) is not int:  # neither 2.0 nor true is a version
        return f"manifest.json has format_version {version!r}: it must be a whole number"
    if version > FORMAT_VERSION:
        return (
            f"manifest.json has format version {version}, newer than this bundler reads ({FORMAT_VERSION}); "
            "upgrade bundler to read it"
        )
    if version < 1:
        return f"manifest.json has format version {version}: there is no such version"
    return None


def upgrade(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """A manifest of an older format version brought to the current one, step by step."""
    version = doc["format_version"]
    while version < FORMAT_VERSION:
        step = UPGRADES.get(version)
        if step is None:
            raise BundleInvalid(
                name,
                [f"manifest.json has format version {version}: no upgrade path to {FORMAT_VERSION}"],
                hint="load it with the bundler release that wrote it",
            )
        doc = step(dict(doc))
        version += 1
        doc["format_version"] = version
    return doc


@cache
def _validator() -> Any:
    import jsonschema

    schema = json.loads((SPEC_DIR / "manifest.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def manifest_problems(doc: Any) -> list[str]:
    """Everything wrong with a manifest document against its format version and JSON Schema."""
    if not isinstance(doc, dict):
        return ["manifest.json is not a JSON object"]
    problem = version_problem(doc)
    if problem is not None:
        return [problem]
    problems = []
    try:
        errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    except RecursionError:
        return ["manifest.json nests too deep to be a manifest"]
    for error in errors:
        at = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"manifest.json does not match its schema at {at}: {error.message}")
    return problems


def read_manifest(raw: bytes, name: str) -> Manifest:
    """The manifest of a bundle named ``name`` from its bytes: bounded, upgraded, validated, typed."""
    doc = parse_manifest_bytes(raw, name)
    if not isinstance(doc, dict):
        raise BundleInvalid(name, ["manifest.json is not a JSON object"])
    problem = version_problem(doc)
    if problem is not None:
        raise BundleInvalid(name, [problem])
    doc = upgrade(doc, name)
    problems = manifest_problems(doc)
    if problems:
        raise BundleInvalid(name, problems)
    return Manifest.from_doc(doc)
