"""``inspect verify``: the bundle's kind agrees with its root, and every row it carries for a root
belongs to that root.

A load trusts the bundle's rows to be the root's: it gives them new ids under the root in
the target. A row that does not belong (another customer's xDRs added to a bundle, their
account declared as an outside row) would be written into someone else's account. So:

- **the kind** (:func:`check_kind`, from the manifest alone): a bundle of a root kind of the
  graph (``graph.roots``: customer, reseller, vendor in the billing graphs) has a root row of
  that kind's table; a ``usage`` bundle has a root of some root kind, depends on the bundle
  that carried it, and carries only usage and shared tables; a ``reverse`` bundle carries
  only usage tables; a ``config`` bundle has no root and carries only shared tables;
- **the root row** (:meth:`Ownership.prepare`): it is in the bundle and is of the bundle's
  kind (the root kind's ``where``, e.g. a reseller's customer type);
- **ownership** (:meth:`Ownership.condition`, :meth:`Ownership.report`): following owner
  references (``TableSpec.owner_refs``) upward from any owned or usage row reaches the root
  row, through rows the bundle carries (xdrs.i_account → an account of the bundle → the
  customer that is the root; a reseller's sub-customers through their parent). An owner
  reference to a row declared only outside the bundle does not count.

Ownership is decided in DuckDB over the Parquet files: per owner table, one query keeps the
owner-side columns of the rows that belong (a recursive query where a table owns its own
rows); per table, one condition added to the table's screening query counts the rows that
do not. Memory holds the owner tables' key columns, never the usage rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bundler.graph import Graph, Reference, Scope, TableSpec
from bundler.inspect.query import literal, qident
from bundler.inspect.verify_report import SHOWN
from bundler.manifest import MANIFEST

if TYPE_CHECKING:
    import duckdb

    from bundler.inspect.verify_manifest import ReadableTable, Verification

__all__ = ["Ownership", "check_kind"]

#: bundle kinds that are not root kinds of a graph
CONFIG, USAGE, REVERSE = "config", "usage", "reverse"
#: what a bundle of each of those kinds may carry
_CARRIES = {
    CONFIG: (Scope.SHARED,),
    USAGE: (Scope.USAGE, Scope.SHARED),
    REVERSE: (Scope.USAGE,),
}


# -- the kind, from the manifest ------------------------------------------------------------------


def check_kind(v: Verification) -> None:
    """The manifest's kind agrees with its root, its dependencies and the scopes of its tables."""
    graph = v.graph
    kind = v.doc.get("kind")
    if graph is None or not isinstance(kind, str):
        return  # no graph to check against, or a kind the schema check reports
    root = v.doc.get("root")
    table = root.get("table") if isinstance(root, dict) else None
    if isinstance(root, dict) and (not isinstance(table, str) or table not in graph.tables):
        v.problem(MANIFEST, f"the root table {table!r} is not in the entity graph")
        table = None
    if kind in graph.roots:
        _root_kind(v, graph, kind, root, table)
    elif kind == CONFIG:
        if root is not None:
            v.problem(MANIFEST, "a config bundle has no root, but this one names one")
    elif kind in (USAGE, REVERSE):
        _usage_kind(v, graph, kind, root, table)
    else:
        known = ", ".join(sorted(graph.roots)) or "none"
        v.problem(
            MANIFEST,
            f"kind {kind!r} is neither a root kind of the entity graph ({known}) nor config, usage or reverse",
        )
    allowed = _CARRIES.get(kind)
    if allowed is not None:
        _carries_only(v, graph, kind, allowed)


def _root_kind(v: Verification, graph: Graph, kind: str, root: Any, table: str | None) -> None:
    """A customer, reseller or vendor bundle: a root row of the kind's table, carried."""
    spec = graph.roots[kind]
    if not isinstance(root, dict):
        v.problem(MANIFEST, f"a {kind} bundle needs a root")
        return
    if table is None:
        return
    if table != spec.table:
        v.problem(
            MANIFEST, f"the root of a {kind} bundle is a row of {spec.table}, but this one is of {table}"
        )
    if table not in v.listed:
        v.problem(v.bundle.table_file(table), f"the root's table {table} is not in the bundle", table=table)


def _usage_kind(v: Verification, graph: Graph, kind: str, root: Any, table: str | None) -> None:
    """A usage or reverse bundle: a root of some root kind (not carried); a usage bundle has dependencies."""
    if not isinstance(root, dict):
        v.problem(MANIFEST, f"a {kind} bundle needs a root (the row whose usage it carries)")
    elif table is not None:
        tables = sorted({r.table for r in graph.roots.values()})
        if table not in tables:
            v.problem(
                MANIFEST,
                f"the root of a {kind} bundle is a row of a root table ({', '.join(tables)}), "
                f"but this one is of {table}",
            )
    depends = v.doc.get("depends_on")
    if kind == USAGE and isinstance(depends, list) and not depends:
        v.problem(
            MANIFEST,
            "a usage bundle depends on the bundle that carried its root, but depends_on is empty",
        )


def _carries_only(v: Verification, graph: Graph, kind: str, allowed: tuple[Scope, ...]) -> None:
    """Every table the manifest lists is of a scope a bundle of ``kind`` carries."""
    wrong = sorted(
        f"{name} ({graph.tables[name].scope})"
        for name in v.listed
        if name in graph.tables and graph.tables[name].scope not in allowed
    )
    if wrong:
        scopes = " and ".join(str(s) for s in allowed)
        v.problem(
            MANIFEST, f"a {kind} bundle carries only {scopes} tables, but this one carries {', '.join(wrong)}"
        )


# -- the root row and ownership, from the data --------------------------------------------------------


@dataclass(frozen=True)
class _Root:
    kind: str
    spec: TableSpec
    source_pk: Any

    @property
    def text(self) -> str:
        return f"{self.spec.name} {self.spec.pk[0]}={self.source_pk}"

    def condition(self) -> str:
        """SQL: the row of the root table that is the root."""
        return f"CAST({qident(self.spec.pk[0])} AS VARCHAR) = {literal(str(self.source_pk))}"


class Ownership:
    """Which rows of each owned and usage table belong to the root (DuckDB temp tables and SQL conditions).

    ``declared``: the outside rows the manifest declares, table → (temp table of the values
    in column ``v``, the column they are of), to say why an owner reference does not count.
    """

    def __init__(
        self, v: Verification, con: duckdb.DuckDBPyConnection, declared: dict[str, tuple[str, str]]
    ) -> None:
        self.v = v
        self.con = con
        self.declared = declared
        self.root: _Root | None = None
        self._owned: dict[str, str] = {}  # owner table → temp table of its belonging rows' owner-side columns
        self._conditions: dict[str, str] = {}  # table → SQL condition: the row belongs to the root

    def prepare(self) -> None:
        """Check the root row; then, owner tables first, keep the rows of each that belong."""
        self.root = self._root_row()
        if self.root is None:
            return
        order, cyclic = self._order()
        if cyclic:
            self.v.report.warnings.append(
                "not checked that the rows of " + ", ".join(cyclic) + " belong to the root: "
                "the entity graph's owner references among them form a cycle"
            )
        for t in order:
            self._decide(t)

    def condition(self, t: ReadableTable) -> str | None:
        """SQL over ``t``: the row belongs to the root; None when that is not checked for ``t``."""
        return self._conditions.get(t.name)

    # -- the root row ------------------------------------------------------------------------------

    def _root_row(self) -> _Root | None:
        """The root of a root-kind bundle when its row is in the bundle and of the bundle's kind."""
        graph = self.v.graph
        kind, root = self.v.doc.get("kind"), self.v.doc.get("root")
        if graph is None or kind not in graph.roots or not isinstance(root, dict):
            return None  # other kinds carry no rows of a root (check_kind says so when they do)
        table = root.get("table")
        spec = graph.tables.get(table) if isinstance(table, str) else None
        t = self.v.readable.get(spec.name) if spec is not None else None
        if spec is None or t is None or len(spec.pk) != 1 or spec.pk[0] not in t.good_columns:
            return None  # reported already: not in the graph, not carried, or unreadable
        found = _Root(str(kind), spec, root.get("source_pk"))
        where = dict(graph.roots[str(kind)].where) if spec.name == graph.roots[str(kind)].table else {}
        columns = [c for c in where if c in t.good_columns]
        selected = ", ".join(["1", *(f"CAST({qident(c)} AS VARCHAR)" for c in columns)])
        row = self.con.execute(
            f"SELECT {selected} FROM {qident(spec.name)} WHERE {found.condition()} LIMIT 1"
        ).fetchone()
        at = f"{spec.pk[0]}={found.source_pk}"
        if row is None:
            self.v.problem(t.file, f"the root row {at} is not in the bundle", table=spec.name, row=at)
            return None
        for column, value in zip(columns, row[1:], strict=True):
            allowed = [str(a).lower() if isinstance(a, bool) else str(a) for a in where[column]]
            if value not in allowed:
                self.v.problem(
                    t.file,
                    f"the root row {at} is not a {kind}: its {column} is {value}, a {kind} has "
                    f"{column} in ({', '.join(allowed)})",
                    table=spec.name,
                    row=at,
                )
        return found

    # -- which rows belong ----------------------------------------------------------------------------

    def _order(self) -> tuple[list[ReadableTable], list[str]]:
        """The owned and usage tables carried, every owner table before the tables it owns; and the
        tables left out because their owner references form a cycle."""
        pending = {
            name: t for name, t in self.v.readable.items() if t.spec is not None and t.spec.scope.of_root
        }
        order: list[ReadableTable] = []
        while pending:
            ready = sorted(
                name
                for name, t in pending.items()
                if t.spec is not None
                and not any(r.table in pending and r.table != name for r in t.spec.owner_refs)
            )
            if not ready:
                return order, sorted(pending)
            for name in ready:
                order.append(pending.pop(name))
        return order, []

    def _decide(self, t: ReadableTable) -> None:
        """The condition of ``t``'s rows that belong, and the temp table of them when they own carried rows."""
        assert t.spec is not None
        seed = self._condition_of(t)
        own = [r for r in t.spec.owner_refs if r.table == t.name]
        if seed is None or any(r.column not in t.good_columns for r in own):
            return  # undecided: an owner column or an owner table is unreadable (reported already)
        if not self._keep(t, seed, own):
            if own:
                return  # the columns its own rows reference are unreadable (reported already)
            self._conditions[t.name] = seed
            return
        # a row of a table that owns its own rows belongs when it is the seed, or its owner row belongs
        same = " OR ".join(_member(r, self._owned[t.name]) for r in own)
        self._conditions[t.name] = f"COALESCE({seed} OR {same}, false)" if own else seed

    def _condition_of(self, t: ReadableTable) -> str | None:
        """SQL over ``t``: the row is the root, or an owner reference names a row of another table
        that belongs. None when that cannot be decided (an owner table is unreadable)."""
        assert t.spec is not None and self.root is not None
        parts = [self.root.condition()] if t.name == self.root.spec.name else []
        for ref in t.spec.owner_refs:
            if ref.table == t.name:
                continue  # the same table: followed by _keep
            if ref.column not in t.good_columns:
                return None
            if ref.table not in self.v.listed:
                continue  # the owner is not carried: this reference makes no row belong
            if ref.table not in self._owned:
                return None  # the owner table is unreadable, or its own ownership is undecided
            parts.append(_member(ref, self._owned[ref.table]))
        return f"COALESCE({' OR '.join(parts)}, false)" if parts else "false"

    def _keep(self, t: ReadableTable, seed: str, own: list[Reference]) -> bool:
        """A temp table of the owner-side columns of ``t``'s rows that belong, when ``t`` owns carried
        rows (its own rows too: then followed down from the seed). False: none made."""
        assert t.spec is not None and self.v.graph is not None
        carried = [
            ref
            for child, ref in self.v.graph.owned_children[t.name]
            if child.name in self.v.readable and child.scope.of_root
        ]
        columns = sorted({ref.target_column for ref in carried})
        if not columns or any(c not in t.good_columns for c in columns):
            return False
        name = _owned_name(t.name)
        cols = ", ".join(qident(c) for c in columns)
        if own:
            join = " OR ".join(f"c.{qident(r.column)} = b.{qident(r.target_column)}" for r in own)
            picked = ", ".join(f"c.{qident(c)}" for c in columns)
            select = (
                f"WITH RECURSIVE b AS (SELECT {cols} FROM {qident(t.name)} WHERE {seed} "
                f"UNION SELECT {picked} FROM {qident(t.name)} c JOIN b ON {join}) SELECT * FROM b"
            )
        else:
            select = f"SELECT DISTINCT {cols} FROM {qident(t.name)} WHERE {seed}"
        self.con.execute(f"CREATE TEMP TABLE {name} AS {select}")
        self._owned[t.name] = name
        return True

    # -- reporting ---------------------------------------------------------------------------------------

    def report(self, t: ReadableTable) -> None:
        """One problem naming the rows of ``t`` that do not belong to the root, and why.

        Rows with an owner reference that resolves nowhere are left to the check of that
        reference, which names them already.
        """
        assert t.spec is not None and self.root is not None
        condition = self._conditions.get(t.name)
        pk = [c for c in t.spec.pk if c in t.good_columns]
        if condition is None or not pk:
            return
        refs = [r for r in t.spec.owner_refs if r.column in t.good_columns]
        row_text = " || ', ' || ".join(f"{literal(c + '=')} || CAST({qident(c)} AS VARCHAR)" for c in pk)
        picked = [f"{row_text} AS __row", *(qident(c) for c in pk)]
        picked += [f"CAST({qident(r.column)} AS VARCHAR) AS __v{i}" for i, r in enumerate(refs)]
        picked += [f"{self._state(r)} AS __s{i}" for i, r in enumerate(refs)]
        dangling = " OR ".join(f"(__v{i} IS NOT NULL AND __s{i} = 'absent')" for i in range(len(refs)))
        shown_cols = [f"__v{i}" for i in range(len(refs))] + [f"__s{i}" for i in range(len(refs))]
        rows = self.con.execute(
            f"SELECT {', '.join(['__row', 'count(*) OVER ()', *shown_cols])} FROM "
            f"(SELECT {', '.join(picked)} FROM {qident(t.name)} WHERE NOT {condition}) "
            f"WHERE NOT ({dangling or 'false'}) ORDER BY {', '.join(qident(c) for c in pk)} LIMIT {SHOWN}"
        ).fetchall()
        if not rows:
            return
        total, n = rows[0][1], len(refs)
        by_reason: dict[str, list[str]] = {}
        for row in rows:
            at = row[0] if len(pk) == 1 else f"({row[0]})"
            by_reason.setdefault(self._why(t.spec, refs, row[2 : 2 + n], row[2 + n :]), []).append(at)
        shown = "; ".join(f"{', '.join(at)} ({why})" for why, at in by_reason.items())
        more = f"; and {total - len(rows)} more" if total > len(rows) else ""
        self.v.problem(
            t.file,
            f"{total} row(s) do not belong to the root {self.root.text}: {shown}{more}",
            table=t.name,
            row=rows[0][0],
        )

    def _state(self, ref: Reference) -> str:
        """SQL: where the row an owner reference names is: 'carried', 'declared' or 'absent'."""
        col = qident(ref.column)
        cases = []
        if ref.table in self.v.readable and ref.target_column in self.v.readable[ref.table].good_columns:
            cases.append(
                f"WHEN {col} IN (SELECT {qident(ref.target_column)} FROM {qident(ref.table)}) THEN 'carried'"
            )
        declared = self.declared.get(ref.table)
        if declared is not None and declared[1] == ref.target_column:
            cases.append(f"WHEN {col} IN (SELECT v FROM {declared[0]} WHERE v IS NOT NULL) THEN 'declared'")
        return f"CASE {' '.join(cases)} ELSE 'absent' END" if cases else "'absent'"

    def _why(
        self, spec: TableSpec, refs: list[Reference], values: tuple[Any, ...], states: tuple[Any, ...]
    ) -> str:
        """Why one row does not belong, from its owner references' values and where their rows are."""
        if not spec.owner_refs:
            return f"{spec.name} rows belong to no other row: only the root itself may be carried"
        for ref, value, state in zip(refs, values, states, strict=True):
            if value is None:
                continue
            named = f"{ref.table} {ref.target_column}={value}"
            if state == "carried":
                return f"{ref.column}={value}: {named} does not belong to the root either"
            if state == "declared":
                return f"{ref.column}={value}: {named} is only declared as an outside row, not carried"
            return f"{ref.column}={value}: {named} is not in the bundle"
        return (
            f"{', '.join(r.column for r in refs)} {'is' if len(refs) == 1 else 'are'} NULL: it has no owner"
        )


def _member(ref: Reference, owned: str) -> str:
    """SQL: the owner reference ``ref`` names a row kept in the temp table ``owned``."""
    target = qident(ref.target_column)
    return f"{qident(ref.column)} IN (SELECT {target} FROM {owned} WHERE {target} IS NOT NULL)"


def _owned_name(table: str) -> str:
    """The temp table of the rows of ``table`` that belong to the root."""
    return qident(f"__owned_{table}")
