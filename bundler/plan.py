"""Plan before acting: what a migration, an export or a load would do, changing nothing.

- :func:`list_roots` — every root of a source, by kind in the graph's order, with its status
  and its size (rows it owns, usage left out);
- :func:`plan_migration` — for each root a migration names, in lineup order: a bundle made
  in a scratch folder without marking anything (an audit copy, so the source records
  nothing), checked against the target in a transaction that is rolled back; then every
  missing prerequisite once (grouped by table, with what brings it) and every open
  decision once, with the roots that need them;
- :func:`plan_bundles` — the same check for bundles already made (``load --plan``).

Nothing is marked, loaded or written, in either database: no sidecar, no ledger, no status,
no ``bundler_*`` table (where one is missing, the check reads an empty temporary one of its
own connection, which is closed for good after it), no recovery of exports that died.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler.errors import BundlerError
from bundler.keys import describe

if TYPE_CHECKING:
    from bundler.graph import Graph
    from bundler.lineup import RootSelector
    from bundler.progress import Progress

__all__ = ["BundleCheck", "Plan", "RootPlan", "check_bundle", "list_roots", "plan_bundles", "plan_migration"]


@dataclass
class RootPlan:
    """One root (or bundle) of a plan: its size, and why it cannot go, if so."""

    kind: str
    key: dict[str, Any]
    pk: str | None
    status: str | None = None
    rows: int = 0
    bytes: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "root": self.key,
            "pk": self.pk,
            "status": self.status,
            "rows": self.rows,
            "bytes": self.bytes,
            "tables": self.tables,
            "problem": self.problem,
        }


@dataclass
class BundleCheck:
    """What a load of one bundle would stop on: missing prerequisites and open decisions."""

    missing: list[tuple[str, str]] = field(default_factory=list)  # (table, key as text)
    questions: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (table, key, differing)


@dataclass
class Plan:
    roots: list[RootPlan] = field(default_factory=list)
    #: (table, key) -> the roots that need it, and what brings it
    missing: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: (table, key) -> the roots whose loads ask, and the differing columns
    decisions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: (table, key) -> missing in the target now, brought by roots of this plan that go first
    brought: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(self, root: RootPlan, check: BundleCheck, brings: dict[str, str]) -> None:
        self.roots.append(root)
        who = f"{root.kind} {describe(root.key)}"
        for table, key in check.missing:
            entry = self.missing.setdefault(
                (table, key), {"table": table, "key": key, "brought_by": brings.get(table), "needed_by": []}
            )
            entry["needed_by"].append(who)
        for table, key, differs in check.questions:
            entry = self.decisions.setdefault(
                (table, key), {"table": table, "key": key, "differs": differs, "asked_by": []}
            )
            entry["asked_by"].append(who)

    def settle(self, graph: Graph) -> None:
        """Rows of a table that a kind of this plan owns come with that kind's bundles, which
        the lineup loads first: listed apart (``brought_in_plan``), not as missing."""
        kinds = {r.kind for r in self.roots if not r.problem}
        for key, entry in list(self.missing.items()):
            kind = _owning_kind(graph, entry["table"])
            if kind in kinds and graph.table(entry["table"]).scope.of_root:
                entry["brought_by"] = f"the {kind} bundles of this plan (they go first)"
                self.brought[key] = self.missing.pop(key)

    @property
    def ready(self) -> bool:
        return not self.missing and not self.decisions and not any(r.problem for r in self.roots)

    def summary(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "roots": [r.to_dict() for r in self.roots],
            "rows": sum(r.rows for r in self.roots),
            "bytes": sum(r.bytes for r in self.roots),
            "missing_prerequisites": list(self.missing.values()),
            "brought_in_plan": list(self.brought.values()),
            "open_decisions": list(self.decisions.values()),
        }

    def lines(self) -> list[str]:
        """The plan for people: roots, then prerequisites by table, then decisions."""
        out = [f"{len(self.roots)} root(s), in lineup order:"]
        for i, r in enumerate(self.roots, 1):
            state = f"  !! {r.problem}" if r.problem else (f"  ({r.status})" if r.status else "")
            out.append(
                f"  {i:>4}. {r.kind:<9} {describe(r.key):<40} {r.rows:>10,} rows {human_bytes(r.bytes):>10}{state}"
            )
        total = sum(r.bytes for r in self.roots)
        out.append(f"expected bundles: {sum(r.rows for r in self.roots):,} rows, {human_bytes(total)}")
        if self.missing:
            out.append(f"missing in the target: {len(self.missing)} prerequisite(s)")
            by_table: dict[str, list[dict[str, Any]]] = {}
            for entry in self.missing.values():
                by_table.setdefault(entry["table"], []).append(entry)
            for table, entries in by_table.items():
                roots = {r for e in entries for r in e["needed_by"]}
                out.append(
                    f"  {table}: {len(entries)}, needed by {len(roots)} root(s); {entries[0]['brought_by']}"
                )
                out += [f"    {e['key']}" for e in entries[:SHOWN]]
                if len(entries) > SHOWN:
                    out.append(f"    … and {len(entries) - SHOWN} more (see --json)")
        if self.brought:
            tables = sorted({e["table"] for e in self.brought.values()})
            out.append(
                f"brought by roots of this plan that go first: {len(self.brought)} row(s) of {', '.join(tables)}"
            )
        if self.decisions:
            out.append(
                f"open decisions: {len(self.decisions)} (answer them in a decisions file, --decisions)"
            )
            for entry in list(self.decisions.values())[:SHOWN]:
                differs = f" differs in {', '.join(entry['differs'])}" if entry["differs"] else ""
                out.append(f"  {entry['table']} {entry['key']}{differs} ({len(entry['asked_by'])} root(s))")
            if len(self.decisions) > SHOWN:
                out.append(f"  … and {len(self.decisions) - SHOWN} more (see --json)")
        out.append("ready: nothing missing, nothing to decide" if self.ready else "not ready (see above)")
        return out


SHOWN = 10


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# -- what brings a missing row -----------------------------------------------------------------


def bringers(graph: Graph) -> dict[str, str]:
    """Per table, what puts its rows in a target: a root kind's bundle, a configuration
    bundle, or nobody (a prerequisite is created in the target by hand)."""
    out: dict[str, str] = {}
    for name, spec in graph.tables.items():
        if spec.is_shared:
            out[name] = f"brought by a configuration bundle: bundler export --config {name}"
        elif spec.scope.of_root:
            kind = _owning_kind(graph, name)
            out[name] = (
                f"brought by the {kind} bundles: migrate --{kind} NAME (or --all: {kind}s go in the graph's order)"
                if kind
                else "brought by the bundle of the root that owns it"
            )
        else:
            out[name] = "never created by a load: create it in the target first"
    return out


def _owning_kind(graph: Graph, table: str) -> str | None:
    """The root kind whose closure holds ``table`` (following owner references up)."""
    seen: set[str] = set()
    todo = [table]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for kind, root in graph.roots.items():
            if root.table == name:
                return kind
        todo += [ref.table for ref in graph.table(name).owner_refs]
    return None


# -- checking a bundle against the target ------------------------------------------------------


def check_bundle(
    target: sa.Engine,
    bundle_path: str | Path,
    *,
    decisions: str | Path | None = None,
    spec: str | Path | None = None,
) -> BundleCheck:
    """Preflight and decide a bundle against the target, in a transaction rolled back; a
    target without bundler's tables reads empty temporary ones (nothing is created)."""
    from bundler import tracking
    from bundler.bundle import open_bundle
    from bundler.context import bundle_graph, system_graph
    from bundler.load.decide import _compute_keys, _TableDecision
    from bundler.load.decisions import Question, load_decisions
    from bundler.load.preflight import _map_prerequisites
    from bundler.load.state import LoadState
    from bundler.load.translate import translator_for
    from bundler.progress import NullProgress

    check = BundleCheck()
    with open_bundle(bundle_path) as bundle, target.connect() as connection:
        txn = connection.begin()
        shadowed = False
        try:
            graph, system = system_graph(connection, spec, create=False)
            shadowed = tracking.shadow_missing_tables(connection)
            translator = translator_for(bundle_graph(bundle.manifest.graph.release, spec), graph)
            state = LoadState(
                connection,
                bundle,
                graph,
                system,
                translator,
                load_decisions(decisions),
                NullProgress(),
                None,
                65_536,
            )
            for table, entry in sorted(state.manifest.prerequisites.items()):
                missing: list[str] = []
                _map_prerequisites(state, table, entry, missing)
                check.missing += [(table, text.removeprefix(f"{table} ")) for text in missing]
            if check.missing:
                return check  # the decisions need the prerequisites' ids
            questions: list[Question] = []
            for table_spec in graph.tables_in_order(("shared",)):
                if table_spec.name in state.tables:
                    rows = state.rows(table_spec.name, keep=state.worth_keeping(table_spec.name))
                    _compute_keys(state, table_spec, rows)
                    _TableDecision(state, table_spec, rows).run(questions)
            check.questions = [(q.table, describe(q.key), sorted(q.differs)) for q in questions]
        finally:
            txn.rollback()
            if shadowed:
                connection.invalidate()  # its temporary tables go with it, not back to the pool
    return check


def plan_bundles(
    target: sa.Engine,
    bundles: Sequence[str | Path],
    *,
    decisions: str | Path | None = None,
    spec: str | Path | None = None,
) -> Plan:
    """``load --plan``: each bundle's size and what its load would stop on."""
    from bundler import tracking
    from bundler.bundle import open_bundle
    from bundler.context import system_graph

    plan = Plan()
    with target.connect() as connection, connection.begin() as txn:
        graph, _ = system_graph(connection, spec, create=False)
        txn.rollback()
    brings = bringers(graph)
    loads = tracking.loads_table
    with target.connect() as connection:
        has = sa.inspect(connection).has_table(loads.name)
        loaded = set(connection.execute(sa.select(loads.c.bundle_id)).scalars()) if has else set()
    for path in bundles:
        with open_bundle(path) as bundle:
            m = bundle.manifest
            root = RootPlan(
                m.kind,
                dict(m.root.natural_key) if m.root else {"bundle": m.bundle_id},
                str(m.root.source_pk) if m.root else None,
                rows=m.totals.rows,
                bytes=m.totals.bytes,
                tables=m.table_rows(),
            )
        if m.bundle_id in loaded:
            root.status = "already loaded"
            plan.add(root, BundleCheck(), brings)
            continue
        try:
            check = check_bundle(target, path, decisions=decisions, spec=spec)
        except BundlerError as exc:
            root.problem, check = exc.line(), BundleCheck()
        plan.add(root, check, brings)
    return plan


# -- planning a migration ----------------------------------------------------------------------


def plan_migration(
    source: sa.Engine,
    target: sa.Engine | None,
    selectors: Sequence[RootSelector],
    *,
    xdrs: str = "current",
    decisions: str | Path | None = None,
    spec: str | Path | None = None,
    target_spec: str | Path | None = None,
    progress: Progress | None = None,
) -> Plan:
    """The plan of a migration (or, without ``target``, of an export) of the selected roots."""
    from bundler.context import database_graph
    from bundler.export import ExportOptions, export_root
    from bundler.lineup.lineup import select_roots
    from bundler.progress import NullProgress

    progress = progress or NullProgress()
    with source.connect() as connection:
        graph = database_graph(connection, spec)
    brings = bringers(graph)
    roots = select_roots(source, selectors, spec=spec)
    done = _in_target(source, target) if target is not None else set()
    plan = Plan()
    scratch = Path(tempfile.mkdtemp(prefix="bundler-plan-"))
    progress.start("plan", total=len(roots))
    try:
        for kind, pk, key_text in roots:
            root = RootPlan(kind, _key(key_text), str(pk))
            check = BundleCheck()
            if (kind, str(pk)) in done:
                root.status = "in the target"  # the lineup skips it
                plan.add(root, check, brings)
                progress.advance("plan", 1)
                continue
            try:
                _check_status(source, graph, kind, pk, xdrs)
                exported = export_root(
                    source,
                    kind,
                    pk,
                    scratch,
                    spec=spec,
                    options=ExportOptions(xdrs=xdrs, mark=False, plan=True),
                )
                root.rows, root.bytes = exported.manifest.totals.rows, exported.manifest.totals.bytes
                root.tables = exported.manifest.table_rows()
                if target is not None:
                    check = check_bundle(target, exported.path, decisions=decisions, spec=target_spec)
                shutil.rmtree(exported.path, ignore_errors=True)
            except BundlerError as exc:
                root.problem = exc.line()
            plan.add(root, check, brings)
            progress.advance("plan", 1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        progress.finish("plan")
    plan.settle(graph)
    return plan


def _check_status(source: sa.Engine, graph: Graph, kind: str, pk: Any, xdrs: str) -> None:
    """Refuse the root as its export would (Exported, terminated, claimed), writing nothing: a
    source without bundler's tables reads empty temporary ones."""
    from bundler import tracking
    from bundler.export import ExportOptions
    from bundler.export.export import _check_root_status
    from bundler.marking import find_root

    with source.connect() as connection:
        shadowed = tracking.shadow_missing_tables(connection)
        try:
            _check_root_status(connection, find_root(connection, graph, kind, pk), ExportOptions(xdrs=xdrs))
        finally:
            connection.rollback()
            if shadowed:
                connection.invalidate()


def _in_target(source: sa.Engine, target: sa.Engine) -> set[tuple[str, str]]:
    """(kind, source pk) of the roots of this source the target has loaded."""
    from bundler import tracking

    with source.connect() as connection:
        system = tracking.read_system(connection).system_id
    loads = tracking.loads_table
    with target.connect() as connection:
        if not sa.inspect(connection).has_table(loads.name):
            return set()
        rows = connection.execute(
            sa.select(loads.c.kind, loads.c.root_source_pk).where(loads.c.source_system == system)
        ).all()
    return {(str(r.kind), str(r.root_source_pk)) for r in rows}


def _key(text: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        return {"key": text}
    return value if isinstance(value, dict) else {"key": value}


# -- listing the roots of a source -----------------------------------------------------------


def list_roots(source: sa.Engine, *, spec: str | Path | None = None) -> list[RootPlan]:
    """Every root of the source, top-level ones of each kind in the graph's order, with its
    status and the rows it owns (usage left out)."""
    from bundler.context import database_graph
    from bundler.sql import Closure, natural_keys, table_clause

    out: list[RootPlan] = []
    with source.connect() as connection:
        graph = database_graph(connection, spec)
        for kind in _kinds_in_order(graph):
            root_spec = graph.root(kind)
            table = graph.table(root_spec.table)
            t = table_clause(table)
            stmt = sa.select(t).order_by(t.c[table.pk[0]])
            for col, allowed in root_spec.where.items():
                stmt = stmt.where(t.c[col].in_(allowed))
            for ref in table.owner_refs:
                if ref.table == table.name:
                    stmt = stmt.where(t.c[ref.column].is_(None))
            rows = [dict(r) for r in connection.execute(stmt).mappings()]
            pk = table.pk[0]
            keys = natural_keys(connection, graph, table.name, pk, [r[pk] for r in rows]) if rows else {}
            for row in rows:
                closure = Closure(connection, graph, follow_shared=False)
                closure.add(table.name, [row])
                closure.run()
                tables = {name: len(rows) for name, rows in closure.rows.items() if rows}
                status = str(row[table.status.column]) if table.status is not None else None
                out.append(
                    RootPlan(
                        kind,
                        dict(keys[row[pk]]),
                        str(row[pk]),
                        status=status,
                        rows=sum(tables.values()),
                        tables=tables,
                    )
                )
    return out


def _kinds_in_order(graph: Graph) -> list[str]:
    from bundler.lineup.queue import kind_order

    order = kind_order(graph)
    return sorted(graph.roots, key=lambda k: order[k])
