"""The entity graph: everything schema-specific, loaded from ``bundle_spec/graphs/``.

The engine never names a billing table: it asks the graph which tables exist, how
their rows are identified across systems (natural keys), what they reference, which
references make a row belong to another (owner references), and what a root is.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.errors import SpecError

if TYPE_CHECKING:
    import pyarrow as pa

SPEC_DIR = Path(__file__).resolve().parent.parent / "bundle_spec"
GRAPHS_DIR = SPEC_DIR / "graphs"


class Scope(StrEnum):
    """What a table's rows are to a transfer; the capabilities below say what follows from it.

    A member equals its text (``Scope.USAGE == "usage"``), as the graph file and the
    manifest write it.
    """

    OWNED = "owned"  # belongs to one root; copied; new ids in the target
    SHARED = "shared"  # configuration owned rows reference; copied; matched by natural key
    PREREQUISITE = "prerequisite"  # must exist in the target; travels by natural key only
    USAGE = "usage"  # xDRs: owned, time-windowed, streamed
    MIRROR = "mirror"  # kept mirrored by ``recordings sync``; never in a bundle

    @property
    def copied(self) -> bool:
        """A bundle carries the rows (prerequisites travel by natural key only)."""
        return self in (Scope.OWNED, Scope.SHARED, Scope.USAGE)

    @property
    def of_root(self) -> bool:
        """The rows belong to one root (its own rows and its usage)."""
        return self in (Scope.OWNED, Scope.USAGE)

    @property
    def matched(self) -> bool:
        """The target's rows are found by natural key (reused, or required to exist)."""
        return self in (Scope.SHARED, Scope.PREREQUISITE)


SCOPES = tuple(Scope)
# Scopes whose rows a bundle copies (prerequisites travel by natural key only).
COPIED_SCOPES = tuple(s for s in Scope if s.copied)
_DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")
#: Decimals up to this many digits (Arrow's decimal128).
MAX_DECIMAL_DIGITS = 38
#: A timestamp with a time zone: kept as a UTC instant.
TIMESTAMP_TZ = "timestamp[us, tz=UTC]"


def arrow_type(type_name: str) -> pa.DataType:
    """The exact Arrow type for a graph column type."""
    import pyarrow as pa

    match = _DECIMAL.match(type_name)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if not 0 < precision <= MAX_DECIMAL_DIGITS or scale > precision:
            raise SpecError(
                f"column type {type_name!r}: decimals take 1 to {MAX_DECIMAL_DIGITS} digits, "
                "and no more decimal places than digits"
            )
        return pa.decimal128(precision, scale)
    simple = {
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "json": pa.string(),  # JSON text, carried as the source wrote it
        "binary": pa.binary(),
        "date32": pa.date32(),
        "timestamp[us]": pa.timestamp("us"),
        TIMESTAMP_TZ: pa.timestamp("us", tz="UTC"),
    }
    try:
        return simple[type_name]
    except KeyError:
        raise SpecError(f"unknown column type {type_name!r} in the entity graph") from None


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    nullable: bool
    default: str | None = None


@dataclass(frozen=True)
class Reference:
    """``table.column`` references ``target.target_column``."""

    column: str
    table: str
    target_column: str
    nullable: bool
    owner: bool
    constraint: bool = True


@dataclass(frozen=True)
class Status:
    column: str
    active: str
    exported: str
    terminated: tuple[str, ...]


@dataclass(frozen=True)
class Balance:
    """The balance column of a table; ``where``: only rows with these values have one (debit accounts)."""

    column: str
    where: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    #: how the charge of a usage row it owns moves the balance: +1 add, -1 subtract, 0 not at all
    usage_sign: int = 0

    def holds(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` keeps a balance of its own (``where``)."""
        return all(row.get(c) in allowed for c, allowed in self.where.items())


@dataclass(frozen=True)
class BillingPeriod:
    column: str
    codes: dict[str, str]
    #: the column naming the row's IANA time zone (None: periods in UTC)
    time_zone: str | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    pk: tuple[str, ...]
    pk_kind: str
    scope: Scope
    natural_key: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]
    references: tuple[Reference, ...]
    time_column: str | None = None
    sensitive: tuple[str, ...] = ()
    status: Status | None = None
    billing_period: BillingPeriod | None = None
    doc: str = ""
    balance: Balance | None = None
    amount: str | None = None  # the column holding a row's money amount (a charge, a payment)
    #: usage tables: the column holding a row's charge (moves the owners' balances)
    charge: str | None = None
    #: shared tables: the columns whose difference changes money (a currency, a price); a match
    #: that differs in one is reused only by a per-key decision
    binding: tuple[str, ...] = ()

    @cached_property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @cached_property
    def column_map(self) -> dict[str, ColumnSpec]:
        return {c.name: c for c in self.columns}

    @cached_property
    def ref_by_column(self) -> dict[str, Reference]:
        return {r.column: r for r in self.references}

    @property
    def owner_refs(self) -> tuple[Reference, ...]:
        return tuple(r for r in self.references if r.owner)

    @property
    def is_copied(self) -> bool:
        return self.scope.copied

    @property
    def is_usage(self) -> bool:
        return self.scope is Scope.USAGE

    @property
    def is_shared(self) -> bool:
        return self.scope is Scope.SHARED

    def from_text(self, column: str, text: str) -> Any:
        """A key kept as text (ledger, export records) as the column's value."""
        ctype = self.column_map[column].type if column in self.column_map else "string"
        return int(text) if ctype.startswith("int") else text

    @property
    def surrogate(self) -> str | None:
        """The surrogate key column, when the target generates this table's ids."""
        return self.pk[0] if self.pk_kind == "surrogate" else None

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable) for c in self.columns])


@dataclass(frozen=True)
class RootSpec:
    kind: str
    table: str
    lookup: tuple[str, ...]
    where: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    #: place in ``migrate --all`` (lower first); None: roots of this kind are named one by one
    all: int | None = None


@dataclass(frozen=True)
class EntitySpec:
    """A kind of entity an operator names to ``bundler clean``: rows of ``table``, found by ``lookup``."""

    kind: str
    table: str
    lookup: tuple[str, ...]
    where: dict[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    system: str
    release: str
    tables: dict[str, TableSpec]
    roots: dict[str, RootSpec]
    sha256: str
    path: str
    entities: dict[str, EntitySpec] = field(default_factory=dict)

    def table(self, name: str) -> TableSpec:
        try:
            return self.tables[name]
        except KeyError:
            raise SpecError(
                f"table {name!r} is not in the entity graph of release {self.release} ({self.path})"
            ) from None

    def root(self, kind: str) -> RootSpec:
        try:
            return self.roots[kind]
        except KeyError:
            known = ", ".join(sorted(self.roots)) or "none"
            raise SpecError(
                f"the entity graph {self.path} defines no {kind!r} root (it has: {known})"
            ) from None

    def entity(self, kind: str) -> EntitySpec:
        if kind not in self.entities and kind in self.roots:  # every root kind is an entity too
            root = self.roots[kind]
            return EntitySpec(kind, root.table, root.lookup, root.where)
        try:
            return self.entities[kind]
        except KeyError:
            known = ", ".join(sorted(self.entities)) or "none"
            raise SpecError(
                f"the entity graph {self.path} defines no entity kind {kind!r} (known kinds: {known})"
            ) from None

    def all_kinds(self) -> list[str]:
        """The root kinds ``migrate --all`` takes, in the graph's order: those with a place
        in it (``"all"``), or every kind when the graph gives none a place."""
        placed = [r for r in self.roots.values() if r.all is not None]
        if not placed:
            return list(self.roots)
        return [r.kind for r in sorted(placed, key=lambda r: (r.all, r.kind))]

    def of_another_root(self, table: str, scope: str) -> bool:
        """Whether a bundle's outside rows of ``table`` (of ``scope``) belong to another root, so
        that a load may leave the references to them open until that root is loaded: owned
        rows, not a root itself (a root, a reseller parent or a vendor's customer counterpart,
        is a prerequisite, set up on the target first)."""
        return (
            Scope(scope) is Scope.OWNED
            and table in self.tables
            and table not in {r.table for r in self.roots.values()}
        )

    def usage_parent(self, spec: TableSpec) -> Reference | None:
        """The owner reference of a usage row that belongs to another usage row (an invoice
        line of its invoice): such rows travel in their parent's window."""
        return next(
            (
                r
                for r in spec.owner_refs
                if spec.is_usage and r.table in self.tables and self.tables[r.table].is_usage
            ),
            None,
        )

    def in_scope(self, *scopes: str) -> list[TableSpec]:
        return [t for t in self.tables.values() if t.scope in scopes]

    @cached_property
    def owned_children(self) -> dict[str, list[tuple[TableSpec, Reference]]]:
        """For each table, the tables whose rows belong to its rows, with the owner reference."""
        children: dict[str, list[tuple[TableSpec, Reference]]] = {name: [] for name in self.tables}
        for spec in self.tables.values():
            for ref in spec.owner_refs:
                children[ref.table].append((spec, ref))
        return children

    @cached_property
    def referencing(self) -> dict[str, list[tuple[TableSpec, Reference]]]:
        """For each table, every (table, reference) that points at it."""
        found: dict[str, list[tuple[TableSpec, Reference]]] = {name: [] for name in self.tables}
        for spec in self.tables.values():
            for ref in spec.references:
                found[ref.table].append((spec, ref))
        return found

    @cached_property
    def _ordering(self) -> tuple[tuple[str, ...], frozenset[tuple[str, str]]]:
        return _dependency_order(self)

    @property
    def dependency_order(self) -> tuple[str, ...]:
        """Tables so that every referenced table comes before the tables referencing it.

        Self-references and the nullable references in :attr:`deferred` are left out:
        the loader writes those as NULL first and updates them after.
        """
        return self._ordering[0]

    @property
    def deferred(self) -> frozenset[tuple[str, str]]:
        """(table, column) of the nullable references that break reference cycles."""
        return self._ordering[1]

    def tables_in_order(self, scopes: tuple[str, ...] = COPIED_SCOPES) -> Iterator[TableSpec]:
        for name in self.dependency_order:
            if self.tables[name].scope in scopes:
                yield self.tables[name]


def _dependency_order(graph: Graph) -> tuple[tuple[str, ...], frozenset[tuple[str, str]]]:
    """Tables in the order a load writes them, and the (table, column) references it defers.

    Where references form a cycle, the nullable references of one table are inserted as
    NULL and updated once their rows exist; a cycle of NOT NULL references is refused.
    """
    # remaining[t] = references of t to other tables that must be written first
    remaining: dict[str, set[tuple[str, str]]] = {
        name: {(r.table, r.column) for r in spec.references if r.table != name}
        for name, spec in graph.tables.items()
    }
    order: list[str] = []
    deferred: set[tuple[str, str]] = set()
    while remaining:
        ready = sorted(name for name, deps in remaining.items() if not {d for d, _ in deps} - set(order))
        for name in ready:
            order.append(name)
            del remaining[name]
        if not ready:
            deferred.update(_break_cycle(graph, remaining, order))
    return tuple(order), frozenset(deferred)


def _break_cycle(
    graph: Graph, remaining: dict[str, set[tuple[str, str]]], order: list[str]
) -> list[tuple[str, str]]:
    """Defer the nullable references of one table whose unmet needs are all nullable."""
    for name in sorted(remaining):
        spec = graph.tables[name]
        unmet = [(t, c) for t, c in remaining[name] if t not in order]
        if all(spec.ref_by_column[c].nullable for _, c in unmet):
            remaining[name] = {(t, c) for t, c in remaining[name] if t in order}
            return [(name, c) for _, c in unmet]
    cycle = ", ".join(
        _cycle_members({n: {t for t, _ in deps if t in remaining} for n, deps in remaining.items()})
    )
    raise SpecError(
        f"the entity graph {graph.path} has a cycle of NOT NULL references among: {cycle}",
        hint="make one reference of the cycle nullable so the loader can insert it as NULL and update it after",
    )


def _cycle_members(edges: dict[str, set[str]]) -> list[str]:
    """The tables on a cycle (strongly connected components of more than one table), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    members: list[str] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                members.extend(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(members) or sorted(edges)


def _validate_document(doc: dict[str, Any], where: str) -> None:
    import jsonschema

    schema = json.loads((SPEC_DIR / "graph.schema.json").read_text())
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path)
    )
    if errors:
        first = errors[0]
        at = "/".join(str(p) for p in first.absolute_path) or "(top)"
        raise SpecError(f"entity graph {where} does not validate at {at}: {first.message}")


def _check_consistency(graph: Graph) -> None:
    """Refuse a graph that names a column, table or owner its tables do not have."""
    problems: list[str] = []
    for spec in graph.tables.values():
        problems.extend(_table_problems(graph, spec))
    for label, table, columns in [
        *((f"root {r.kind}", r.table, (*r.lookup, *r.where)) for r in graph.roots.values()),
        *((f"entity {e.kind}", e.table, (*e.lookup, *e.where)) for e in graph.entities.values()),
    ]:
        if table not in graph.tables:
            problems.append(f"{label}: unknown table {table!r}")
            continue
        problems.extend(
            f"{label}: {table} has no column {col!r}"
            for col in columns
            if col not in graph.tables[table].column_map
        )
    if problems:
        raise SpecError(
            f"entity graph {graph.path} is inconsistent: {problems[0]} ({len(problems)} problem(s))"
        )


def _table_problems(graph: Graph, spec: TableSpec) -> list[str]:
    """What a table's spec names that its columns or the graph lack."""
    named = {col: "column" for col in (*spec.pk, *spec.natural_key, *spec.sensitive, *spec.binding)}
    for role, col in (
        ("time column", spec.time_column),
        ("status column", spec.status.column if spec.status else None),
        ("billing period column", spec.billing_period.column if spec.billing_period else None),
        ("balance column", spec.balance.column if spec.balance else None),
        ("time zone column", spec.billing_period.time_zone if spec.billing_period else None),
        ("amount column", spec.amount),
        ("charge column", spec.charge),
    ):
        if col is not None:
            named.setdefault(col, role)
    problems = [
        f"{spec.name}: {role} {col!r} is not among its columns"
        for col, role in named.items()
        if col not in spec.column_map
    ]
    for column in spec.columns:
        try:
            arrow_type(column.type)
        except SpecError as exc:
            problems.append(f"{spec.name}.{column.name}: {exc}")
    for ref in spec.references:
        problems.extend(_reference_problems(graph, spec, ref))
    if spec.is_usage and not spec.owner_refs:
        problems.append(f"{spec.name}: a usage table needs an owner reference")
    if spec.is_usage and spec.time_column is None and graph.usage_parent(spec) is None:
        problems.append(
            f"{spec.name}: a usage table needs a time column, unless it belongs to a usage row "
            "(then it travels in its parent's window)"
        )
    return problems


def _reference_problems(graph: Graph, spec: TableSpec, ref: Reference) -> list[str]:
    where = f"{spec.name}.{ref.column}"
    problems = (
        [] if ref.column in spec.column_map else [f"{where}: reference column is not among its columns"]
    )
    target = graph.tables.get(ref.table)
    if target is None:
        return [*problems, f"{where}: references unknown table {ref.table!r}"]
    if ref.target_column not in target.column_map:
        problems.append(f"{where}: {ref.table} has no column {ref.target_column!r}")
    usage_tree = spec.is_usage and target.is_usage  # an invoice line of its invoice
    if ref.owner and spec.scope.of_root and target.scope is not Scope.OWNED and not usage_tree:
        problems.append(f"{where}: an {spec.scope} row can only belong to an owned row")
    if ref.owner and usage_tree and ref.table == spec.name:
        problems.append(f"{where}: a usage row cannot belong to a row of its own table")
    if ref.owner and spec.is_shared and not target.is_shared:
        problems.append(f"{where}: a shared row can only belong to a shared row")
    return problems


def parse_graph(
    doc: dict[str, Any], *, path: str = "<memory>", sha256: str = "", validate: bool = True
) -> Graph:
    """Validate a graph document (against ``graph.schema.json``) and turn it into typed objects."""
    if validate:
        _validate_document(doc, path)
    tables: dict[str, TableSpec] = {}
    for name, t in doc["tables"].items():
        status = t.get("status")
        period = t.get("billing_period")
        tables[name] = TableSpec(
            name=name,
            pk=tuple(t["pk"]),
            pk_kind=t["pk_kind"],
            scope=Scope(t["scope"]),
            natural_key=tuple(t["natural_key"]),
            columns=tuple(
                ColumnSpec(c["name"], c["type"], c["nullable"], c.get("default")) for c in t["columns"]
            ),
            references=tuple(
                Reference(
                    r["column"],
                    r["table"],
                    r["target_column"],
                    r["nullable"],
                    r["owner"],
                    r.get("constraint", True),
                )
                for r in t["references"]
            ),
            time_column=t.get("time_column"),
            sensitive=tuple(t.get("sensitive", ())),
            status=Status(status["column"], status["active"], status["exported"], tuple(status["terminated"]))
            if status
            else None,
            billing_period=BillingPeriod(period["column"], dict(period["codes"]), period.get("time_zone"))
            if period
            else None,
            doc=t.get("doc", ""),
            balance=Balance(
                t["balance"]["column"],
                {k: tuple(v) for k, v in t["balance"].get("where", {}).items()},
                {"add": 1, "subtract": -1}.get(t["balance"].get("usage", ""), 0),
            )
            if t.get("balance")
            else None,
            amount=t.get("amount"),
            charge=t.get("charge"),
            binding=tuple(t.get("binding", ())),
        )
    roots = {
        kind: RootSpec(
            kind,
            r["table"],
            tuple(r["lookup"]),
            {k: tuple(v) for k, v in r.get("where", {}).items()},
            r.get("all"),
        )
        for kind, r in doc["roots"].items()
    }
    entities = {
        kind: EntitySpec(
            kind, e["table"], tuple(e["lookup"]), {k: tuple(v) for k, v in e.get("where", {}).items()}
        )
        for kind, e in doc.get("entities", {}).items()
    }
    graph = Graph(doc["system"], doc["release"], tables, roots, sha256, path, entities)
    _check_consistency(graph)
    graph.dependency_order  # noqa: B018  (refuses NOT NULL cycles now, not in the middle of a load)
    return graph


def load_graph(path: str | Path, *, validate: bool = True) -> Graph:
    """Load and validate an entity graph file (parsed once per content: a command that
    needs the graph in several steps reads the file again, but checks it only once)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read entity graph {path}: {exc.strerror}") from None
    sha256 = hashlib.sha256(raw).hexdigest()
    cached = _PARSED.get((str(path), sha256))
    if cached is not None and (cached[1] or not validate):
        return cached[0]
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecError(f"entity graph {path} is not valid JSON: {exc}") from None
    graph = parse_graph(doc, path=str(path), sha256=sha256, validate=validate)
    _PARSED[(str(path), sha256)] = (graph, validate)
    return graph


_PARSED: dict[tuple[str, str], tuple[Graph, bool]] = {}


def graph_for_release(release: str) -> Graph:
    """The shipped graph of a release of the reference billing system.

    Shipped graphs are generated and checked against the schema by the test suite, so
    they are not validated again at each start (that took 0.13 s of every command); a
    graph given with ``--spec`` always is. The consistency checks still run.
    """
    path = GRAPHS_DIR / f"{release}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in GRAPHS_DIR.glob("*.json"))) or "none"
        raise SpecError(f"no entity graph for release {release!r} in {GRAPHS_DIR} (known: {known})")
    return _cached(str(path))


_CACHE: dict[str, Graph] = {}


def _cached(path: str) -> Graph:
    if path not in _CACHE:
        _CACHE[path] = load_graph(path, validate=False)
    return _CACHE[path]


def resolve_graph(spec: str | Path | None, release: str) -> Graph:
    """``--spec PATH`` when given, else the shipped graph of ``release``."""
    return load_graph(spec) if spec else graph_for_release(release)
