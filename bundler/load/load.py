"""Load: import a bundle into the target, in one transaction.

1. **verify** the bundle (the checks of ``bundler inspect verify``);
2. **translate** its data from the bundle's release to the target's (declared rules);
3. **preflight**: every prerequisite it names exists in the target (all missing listed);
4. **decide**: each shared row is matched by natural key; matches are reused, created
   or abort the load as the decisions sidecar says; open questions stop the load
   before anything is written and leave a template beside the bundle;
5. **write** tables in dependency order with ids from the target, every reference
   rewritten through the id maps, cycles broken with NULL-then-UPDATE;
6. **record** the load and every row in ``bundler_loads`` and ``bundler_ledger``;
7. **activate** the root.

A failure anywhere rolls everything back.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import Bundle, open_bundle
from bundler.errors import BundleInvalid, BundlerError, DatabaseError, DecisionsNeeded, PrerequisitesMissing
from bundler.export.closure import chunks, natural_keys, sorted_values, table_clause
from bundler.graph import Graph, TableSpec, graph_for_release, load_graph
from bundler.keys import Key, describe, key_text, key_value
from bundler.load.decisions import Decisions, Question, load_decisions, template, write_sidecar
from bundler.load.idmap import IdMap
from bundler.progress import NullProgress, Progress

if TYPE_CHECKING:
    import pyarrow as pa

    from bundler.load.translate import Translator

Asker = Callable[[Question, dict[str, Any], dict[str, Any]], tuple[str, bool]]


@dataclass
class TablePlan:
    table: str
    scope: str
    created: int = 0
    reused: int = 0
    skipped: int = 0
    differing: list[dict[str, Any]] = field(default_factory=list)
    renamed: int = 0


@dataclass
class LoadResult:
    bundle_id: str
    bundle: str
    outcome: str  # loaded | already-loaded | dry-run
    tables: dict[str, TablePlan]
    decisions: list[dict[str, Any]]
    seconds: float
    root_target_pk: Any = None

    @property
    def created(self) -> int:
        return sum(p.created for p in self.tables.values())

    @property
    def reused(self) -> int:
        return sum(p.reused for p in self.tables.values())

    def summary(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "bundle": self.bundle,
            "outcome": self.outcome,
            "rows_created": self.created,
            "rows_reused": self.reused,
            "root_target_pk": self.root_target_pk,
            "tables": {
                t: {"created": p.created, "reused": p.reused, "skipped": p.skipped, "renamed": p.renamed}
                for t, p in sorted(self.tables.items())
            },
            "decisions": self.decisions,
            "reused_with_differences": {
                t: p.differing for t, p in sorted(self.tables.items()) if p.differing
            },
            "seconds": round(self.seconds, 3),
        }


# -- helpers ---------------------------------------------------------------------------------


def _pk_text(values: tuple[Any, ...]) -> str:
    return str(values[0]) if len(values) == 1 else json.dumps([key_value(v) for v in values])


def _reflect(connection: sa.Connection, name: str, metadata: sa.MetaData | None = None) -> sa.Table:
    """The target's table as the database has it (its types decide how values are written).

    Foreign keys are not followed: a load needs the columns only, and following them
    reflected every referenced table again (hundreds of catalog queries per load).
    """
    try:
        return sa.Table(name, metadata or sa.MetaData(), autoload_with=connection, resolve_fks=False)
    except sa.exc.NoSuchTableError:
        raise DatabaseError(
            f"the target has no table {name!r}", hint="is it a database of the release the graph describes?"
        ) from None


class TargetCache:
    """What the loads of one run into the same target share (a lineup keeps one for its run).

    - the target's tables as reflected once (reflecting a customer bundle's ~30 tables
      took ~70 ms of every load; the target's schema does not change under a run);
    - the shared rows earlier loads of the run committed: source system, table and
      source pk -> target pk, what the ledger says of them. The ledger keeps one row per
      load that reused a shared row, so asking it grew with every customer loaded (a
      rate every customer's bundle carries had a ledger row per customer); what the
      cache knows is not asked again. A load still reads every such target row, so a
      row removed since is not reused.

    Thread-safe.
    """

    def __init__(self) -> None:
        self._metadata = sa.MetaData()
        self._tables: dict[str, sa.Table] = {}
        self._known: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        self._lock = threading.Lock()

    def table(self, connection: sa.Connection, name: str) -> sa.Table:
        with self._lock:
            if name not in self._tables:
                self._tables[name] = _reflect(connection, name, self._metadata)
            return self._tables[name]

    def known(self, source_system: str, table: str, pks: Iterable[str]) -> dict[str, str]:
        with self._lock:
            mine = self._known.get((source_system, table), {})
            return {pk: mine[pk] for pk in pks if pk in mine}

    def remember(self, source_system: str, table: str, pairs: dict[str, str]) -> None:
        """Record what a committed load mapped."""
        with self._lock:
            self._known[(source_system, table)].update(pairs)


def target_graph(connection: sa.Connection, spec: str | Path | None) -> tuple[Graph, tracking.SystemInfo]:
    tracking.ensure_tables(connection)
    if spec is not None:
        graph = load_graph(spec)
        if connection.execute(sa.select(tracking.system_table)).first() is None:
            return graph, tracking.register_system(connection, graph.release)
        return graph, tracking.read_system(connection)
    system = tracking.read_system(connection)
    return graph_for_release(system.release), system


class _IdAllocator:
    """New surrogate ids from the target, per table, inside the load's transaction."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        self._next: dict[str, int] = {}
        self._sequence: dict[str, str | None] = {}

    def take(self, table: str, column: str, n: int) -> Sequence[int]:
        if n == 0:
            return []
        if self.dialect == "postgresql":
            if table not in self._sequence:
                self._sequence[table] = self.connection.exec_driver_sql(
                    f"SELECT pg_get_serial_sequence('{table}', '{column}')"
                ).scalar()
            seq = self._sequence[table]
            if seq:
                # one row back, not n: the range when the values came out contiguous (the usual
                # case), the list only when another session took values in between
                low, high, values = self.connection.exec_driver_sql(
                    f"WITH v AS MATERIALIZED (SELECT nextval('{seq}') AS id FROM generate_series(1, {int(n)})) "
                    "SELECT min(id), max(id), CASE WHEN max(id) - min(id) + 1 = count(*) THEN NULL "
                    "ELSE array_agg(id ORDER BY id) END FROM v"
                ).one()
                return range(int(low), int(high) + 1) if values is None else [int(v) for v in values]
        if table not in self._next:
            t = sa.table(table, sa.column(column))
            stmt = sa.select(sa.func.coalesce(sa.func.max(t.c[column]), 0))
            if self.dialect == "mysql":
                stmt = stmt.with_for_update()
            elif self.dialect == "postgresql":
                self.connection.exec_driver_sql(f'LOCK TABLE "{table}" IN SHARE ROW EXCLUSIVE MODE')
            self._next[table] = int(self.connection.execute(stmt).scalar() or 0) + 1
        first = self._next[table]
        self._next[table] = first + n
        return range(first, first + n)


# -- the loader ------------------------------------------------------------------------------


def ledger_map(
    connection: sa.Connection,
    table: str,
    pks: Iterable[str],
    *,
    by: str = "source",
    bundles: Sequence[str] | None = None,
    source_system: str | None = None,
    skip_kind: str | None = None,
) -> dict[str, str]:
    """What the ledger pairs with each of ``pks`` (text) for ``table``, as text.

    ``by="source"``: source pk -> target pk; ``by="target"``: target pk -> source pk (the
    first found). Only the ledger rows of ``bundles``, or of the loads from
    ``source_system`` (not of kind ``skip_kind``), count.
    """
    ledger, loads = tracking.ledger_table, tracking.loads_table
    key, other = (
        (ledger.c.source_pk, ledger.c.target_pk)
        if by == "source"
        else (ledger.c.target_pk, ledger.c.source_pk)
    )
    found: dict[str, str] = {}
    for part in chunks(sorted(set(pks))):
        q = sa.select(key, other).where(ledger.c.table_name == table, key.in_(part))
        if bundles is not None:
            q = q.where(ledger.c.bundle_id.in_(bundles))
        if source_system is not None:
            q = q.join(loads, loads.c.bundle_id == ledger.c.bundle_id).where(
                loads.c.source_system == source_system
            )
            if skip_kind is not None:
                q = q.where(loads.c.kind != skip_kind)
        for mine, theirs in connection.execute(q):
            found.setdefault(mine, theirs)
    return found


class _Load:
    def __init__(
        self,
        connection: sa.Connection,
        bundle: Bundle,
        graph: Graph,
        system: tracking.SystemInfo,
        translator: Translator,
        decisions: Decisions,
        progress: Progress,
        asker: Asker | None,
        batch_rows: int,
        cache: TargetCache | None = None,
    ) -> None:
        self.conn = connection
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.graph = graph
        self.system = system
        self.tr = translator
        self.decisions = decisions
        self.progress = progress
        self.asker = asker
        self.batch_rows = batch_rows
        self.maps: dict[str, IdMap] = {}
        self.plans: dict[str, TablePlan] = {}
        self.decided: list[dict[str, Any]] = []
        # shared tables: source pk text -> action (reuse | create | skip), and renames for creates
        self.actions: dict[str, dict[Any, str]] = defaultdict(dict)
        self.renames: dict[str, dict[Any, dict[str, Any]]] = defaultdict(dict)
        self.bundle_keys: dict[str, dict[Any, Key]] = {}
        self.tables = self.tr.tables(bundle.tables())
        self.alloc = _IdAllocator(connection)
        self.deferred: list[tuple[TableSpec, str, list[tuple[Any, Any]]]] = []
        self.ledger_rows = 0
        self.cache = cache or TargetCache()
        self._asked: list[Question] = []
        # matches still waiting for an answer: what they would map to if reused
        self.tentative: dict[str, dict[Any, Any]] = defaultdict(dict)

    def idmap(self, table: str) -> IdMap:
        if table not in self.maps:
            self.maps[table] = IdMap(table)
        return self.maps[table]

    def plan_for(self, spec: TableSpec) -> TablePlan:
        if spec.name not in self.plans:
            self.plans[spec.name] = TablePlan(spec.name, spec.scope)
        return self.plans[spec.name]

    def sa_table(self, name: str) -> sa.Table:
        return self.cache.table(self.conn, name)

    # -- reading the translated bundle ------------------------------------------------------

    def batches(self, table: str) -> Iterator[pa.RecordBatch]:
        yield from self.tr.batches(self.bundle, table, batch_rows=self.batch_rows)

    def rows(self, table: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for batch in self.batches(table):
            out.extend(batch.to_pylist())
        return out

    # -- 3. preflight -------------------------------------------------------------------------

    def preflight(self) -> None:
        missing: list[str] = []
        depends = self.manifest.get("depends_on") or []
        for source_table, entry in sorted(self.manifest["prerequisites"].items()):
            rows = entry["rows"]
            mapped: dict[Any, Any] = {}
            if depends and entry["scope"] in ("owned", "usage"):
                mapped = self._through_ledger(depends, source_table, [r["value"] for r in rows])
            pending = [r for r in rows if r["value"] not in mapped]
            table, column = source_table, entry["column"]
            if pending:
                translated = [self.tr.translate_key(source_table, r["key"]) for r in pending]
                table = translated[0][0]
                spec = self.graph.table(table)
                found = match_keys(self.conn, self.graph, spec, column, [k for _, k in translated])
                for row, (_, key) in zip(pending, translated, strict=True):
                    target = found.get(key_text(key))
                    if target is None:
                        missing.append(f"{table} {describe(key)}")
                    else:
                        mapped[row["value"]] = target
            target_map = self.idmap(table)
            for row in rows:
                if row["value"] in mapped:
                    target_map.set(
                        _source_value(self.graph.table(table), column, row["value"]), mapped[row["value"]]
                    )
        if missing:
            shown = "; ".join(missing[:20]) + (
                f"; … and {len(missing) - 20} more" if len(missing) > 20 else ""
            )
            raise PrerequisitesMissing(
                f"bundle {self.bundle.bundle_id}: the target lacks {len(missing)} prerequisite(s): {shown}",
                hint="create them in the target (or load the bundles that bring them), then load again",
            )

    def _through_ledger(self, depends: list[str], table: str, values: list[Any]) -> dict[Any, Any]:
        loads = tracking.loads_table
        loaded = set(
            self.conn.execute(sa.select(loads.c.bundle_id).where(loads.c.bundle_id.in_(depends))).scalars()
        )
        absent = [d for d in depends if d not in loaded]
        if absent:
            raise BundlerError(
                f"bundle {self.bundle.bundle_id} depends on bundle {', '.join(absent)}, which this target has not loaded",
                hint="load that bundle first",
            )
        wanted = {str(v): v for v in values}
        found = ledger_map(self.conn, table, wanted, bundles=depends)
        return {wanted[source_pk]: _typed(target_pk) for source_pk, target_pk in found.items()}

    # -- 4. decide ----------------------------------------------------------------------------

    def bundle_key(self, table: str, value: Any) -> Key | None:
        """The natural key of a row the bundle references, in the target release's terms."""
        if table in self.bundle_keys:
            return self.bundle_keys[table].get(value)
        entry = self.manifest["prerequisites"].get(table)
        if entry is not None:
            keys = {r["value"]: self.tr.translate_key(table, r["key"])[1] for r in entry["rows"]}
            self.bundle_keys[table] = keys
            return keys.get(value)
        return None

    def _compute_keys(self, spec: TableSpec, rows: list[dict[str, Any]]) -> None:
        keys: dict[Any, Key] = {}
        target_col = spec.pk[0] if len(spec.pk) == 1 else None
        for row in rows:
            key: Key = {}
            for col in spec.natural_key:
                ref = spec.ref_by_column.get(col)
                value = row[col]
                key[col] = (
                    self.bundle_key(ref.table, value)
                    if ref is not None and value is not None
                    else key_value(value)
                )
            if target_col is not None:
                keys[row[target_col]] = key
        self.bundle_keys[spec.name] = keys

    def decide(self) -> None:
        questions: list[Question] = []
        for spec in self.graph.tables_in_order(("shared",)):
            if spec.name not in self.tables:
                continue
            rows = self.rows(spec.name)
            self._compute_keys(spec, rows)
            self._decide_table(spec, rows, questions)
        if questions:
            path = (
                self.decisions.path or self.bundle.source.parent / f"{self.bundle.bundle_id}.decisions.json"
            )
            write_sidecar(path, template(self.bundle.bundle_id, questions, self.decisions))
            tables = sorted({q.table for q in questions})
            raise DecisionsNeeded(
                f"bundle {self.bundle.bundle_id}: {len(questions)} shared row(s) match rows of the target "
                f"({', '.join(tables)}) and have no decision",
                hint=f"answer them in {path} (reuse, create or abort) and load again with --decisions {path}",
            )

    def _decide_table(self, spec: TableSpec, rows: list[dict[str, Any]], questions: list[Question]) -> None:
        plan = self.plan_for(spec)
        pk = spec.pk[0] if len(spec.pk) == 1 else None
        parents = [r for r in spec.owner_refs if self.graph.table(r.table).scope == "shared"]
        # the natural key of each row in target values: references through the id maps
        target_keys: dict[int, tuple[Any, ...] | None] = {}
        for i, row in enumerate(rows):
            values: list[Any] = []
            for col in spec.natural_key:
                ref = spec.ref_by_column.get(col)
                if ref is not None and row[col] is not None:
                    mapped = self.idmap(ref.table).get(row[col])
                    if mapped is None:
                        values = []
                        break
                    values.append(key_value(mapped))
                else:
                    values.append(key_value(row[col]))
            target_keys[i] = tuple(values) if values else None
        matches = _match_target(self.conn, spec, [k for k in target_keys.values() if k is not None])
        known = self._known_from_source(spec, [row[pk] for row in rows]) if pk and not parents else {}
        for i, row in enumerate(rows):
            src = row[pk] if pk else tuple(row[c] for c in spec.pk)
            parent_states = [self.actions[r.table].get(row[r.column]) for r in parents]
            wanted = target_keys[i]
            match = matches.get(wanted) if wanted is not None else None
            differs: dict[str, dict[str, Any]] | None = None
            if src in known:
                # an earlier load from the same source brought this very row (perhaps as a renamed copy)
                match, action = known[src], "reuse"
            elif parents and any(s in ("create", "skip") for s in parent_states):
                action = "create" if "create" in parent_states else "skip"
            elif parents:  # part of a reused row: the target's version stands
                action = "reuse" if match is not None else "skip"
            elif match is None:
                action = "create"
            else:
                key = self.bundle_keys[spec.name].get(src) if pk else None
                key = key or {c: key_value(row[c]) for c in spec.natural_key}
                differs = _differences(spec, row, match, self)
                answer, origin = self.decisions.action(spec.name, key)
                if answer is None and self.asker is not None:
                    question = Question(spec.name, key, key_value(match[spec.pk[0]]), differs)
                    answer, whole_table = self.asker(question, row, match)
                    if whole_table:
                        self.decisions.set_table(spec.name, answer)
                    else:
                        self.decisions.set_row(spec.name, key, answer)
                    origin = "interactive"
                    self._asked.append(question)
                if answer is None:
                    questions.append(Question(spec.name, key, key_value(match[spec.pk[0]]), differs))
                    if pk:
                        self.tentative[spec.name][src] = match[pk]
                    continue
                if answer == "abort":
                    raise BundlerError(
                        f"bundle {self.bundle.bundle_id}: {spec.name} {describe(key)} matches target row "
                        f"{match[spec.pk[0]]} and the decisions say abort",
                        hint="nothing was written; change the decision to reuse or create to go on",
                    )
                action = answer
                self.decided.append({"table": spec.name, "key": key, "action": answer, "by": origin})
                if answer == "create":
                    self.renames[spec.name][src] = self._rename(spec, row)
                    plan.renamed += 1
            if action == "reuse":
                assert match is not None
                if pk:
                    self.idmap(spec.name).set(src, match[pk])
                plan.reused += 1
                if differs is None:  # not worked out yet when no decision was asked
                    differs = _differences(spec, row, match, self)
                if differs:
                    plan.differing.append(
                        {"key": self.bundle_keys[spec.name].get(src) if pk else src, "differs": differs}
                    )
            elif action == "skip":
                plan.skipped += 1
            else:
                plan.created += 1
            self.actions[spec.name][src] = action

    def _known_from_source(self, spec: TableSpec, source_pks: list[Any]) -> dict[Any, dict[str, Any]]:
        """Target rows that earlier loads from the same source system wrote or reused for these rows.

        The run's cache answers first, the ledger for the rest, and for what the cache
        named but the target no longer holds (the ledger may know better).
        """
        wanted = {str(v): v for v in source_pks}
        system = self.manifest["source"]["system_id"]
        cached = self.cache.known(system, spec.name, wanted)
        pairs = dict(cached)
        pairs.update(
            ledger_map(self.conn, spec.name, (p for p in wanted if p not in cached), source_system=system)
        )
        rows = self._target_rows(spec, set(pairs.values()))
        stale = [src for src, target in cached.items() if target not in rows]
        if stale:
            again = ledger_map(self.conn, spec.name, stale, source_system=system)
            pairs.update(again)
            rows.update(self._target_rows(spec, set(again.values()) - set(rows)))
        # a row cleaned from the target since is no longer known
        return {wanted[src]: rows[target] for src, target in pairs.items() if target in rows}

    def _target_rows(self, spec: TableSpec, pks: set[str]) -> dict[str, dict[str, Any]]:
        """The target's rows of ``spec`` with these primary keys (as text), by key."""
        t = table_clause(spec)
        pk = spec.pk[0]
        out: dict[str, dict[str, Any]] = {}
        for part in chunks(sorted(pks)):
            values = _db_values(spec, pk, [_typed(v) for v in part])
            for row in self.conn.execute(sa.select(t).where(t.c[pk].in_(values))).mappings():
                out[str(row[pk])] = dict(row)
        return out

    def remember_shared(self, cache: TargetCache) -> None:
        """Tell ``cache`` the target row of every shared row this (committed) load created or reused."""
        system = self.manifest["source"]["system_id"]
        for table, actions in self.actions.items():
            if len(self.graph.table(table).pk) != 1:
                continue
            idmap = self.idmap(table)
            pairs = {str(src): str(idmap.get(src)) for src in actions if idmap.get(src) is not None}
            cache.remember(system, table, pairs)

    def _rename(self, spec: TableSpec, row: dict[str, Any]) -> dict[str, Any]:
        """A created copy of a matched row needs a natural key of its own: text columns get a suffix."""
        suffix = f" (from {self.manifest['source']['system_id'][:8]})"
        changes = {
            col: f"{row[col]}{suffix}"
            for col in spec.natural_key
            if col not in spec.ref_by_column and isinstance(row[col], str)
        }
        if not changes:
            raise BundlerError(
                f"{spec.name}: cannot create a second row with natural key {describe({c: row[c] for c in spec.natural_key})}: "
                "it has no text column to tell the two apart",
                hint="decide reuse for it",
            )
        return changes

    def check_owned_conflicts(self) -> None:
        """Owned rows whose natural key the target already has: the load would collide."""
        clashes: list[str] = []
        for spec in self.graph.tables_in_order(("owned",)):
            if spec.name not in self.tables or any(c in spec.ref_by_column for c in spec.natural_key):
                continue
            values = [
                tuple(key_value(row[c]) for c in spec.natural_key)
                for batch in self.batches(spec.name)
                for row in batch.select(list(spec.natural_key)).to_pylist()
            ]
            for key, row in _match_target(self.conn, spec, values).items():
                clashes.append(
                    f"{spec.name} {describe(dict(zip(spec.natural_key, key, strict=True)))} (target {spec.pk[0]} {row[spec.pk[0]]})"
                )
        if clashes:
            raise BundlerError(
                f"bundle {self.bundle.bundle_id}: the target already has {len(clashes)} of its own row(s): "
                + "; ".join(clashes[:10]),
                hint="was it loaded before under another bundle id? clean it from the target first (bundler clean)",
            )

    # -- 5. write -----------------------------------------------------------------------------

    def write(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        from bundler.bulk import insert_arrow

        bundle_id = self.bundle.bundle_id
        task = f"load {bundle_id}"
        self.progress.start(task, total=self.manifest.get("totals", {}).get("rows"))
        for spec in self.graph.tables_in_order(("owned", "shared", "usage")):
            if spec.name not in self.tables:
                continue
            plan = self.plan_for(spec)
            target = self.sa_table(spec.name)
            single_pk = spec.pk[0] if len(spec.pk) == 1 else None
            needs_map = bool(self.graph.referencing[spec.name]) or spec.scope != "usage"
            for batch in self.batches(spec.name):
                if single_pk:
                    source_pks = batch.column(single_pk)
                    row_keys: list[Any] = source_pks.to_pylist()
                else:
                    row_keys = list(zip(*(batch.column(c).to_pylist() for c in spec.pk), strict=True))
                    source_pks = pa.array([_pk_text(k) for k in row_keys], pa.string())
                if spec.scope == "shared":
                    actions = self.actions[spec.name]
                    keep = pa.array([actions.get(k) == "create" for k in row_keys], pa.bool_())
                    batch = batch.filter(keep)
                    source_pks = source_pks.filter(keep)
                    if batch.num_rows == 0:
                        continue
                    batch = self._apply_renames(spec, batch)
                else:
                    plan.created += batch.num_rows
                batch = self._rewrite_references(spec, batch)
                if spec.surrogate:
                    new_ids = pa.array(
                        self.alloc.take(spec.name, spec.surrogate, batch.num_rows),
                        type=batch.schema.field(spec.surrogate).type,
                    )
                    if needs_map:
                        self.idmap(spec.name).update(
                            dict(zip(source_pks.to_pylist(), new_ids.to_pylist(), strict=True))
                        )
                    batch = batch.set_column(
                        batch.schema.get_field_index(spec.surrogate),
                        batch.schema.field(spec.surrogate),
                        new_ids,
                    )
                    target_pks = pc.cast(new_ids, pa.string())
                elif single_pk:
                    target_pks = pc.cast(batch.column(single_pk), pa.string())
                    if needs_map:
                        self.idmap(spec.name).update({v: v for v in batch.column(single_pk).to_pylist()})
                else:
                    target_pks = pa.array(
                        [
                            _pk_text(t)
                            for t in zip(*(batch.column(c).to_pylist() for c in spec.pk), strict=True)
                        ]
                    )
                try:
                    insert_arrow(self.conn, target, batch)
                except sa.exc.IntegrityError as exc:
                    if spec.scope == "shared":  # most likely a concurrent load created it first
                        raise _Contended(f"{spec.name}: {_first_line(exc.orig)}") from exc
                    raise BundlerError(
                        f"bundle {bundle_id}: table {spec.name}: the target refused a row ({_first_line(exc.orig)})",
                        hint="nothing was written; fix the conflict in the target and load again",
                    ) from exc
                self._ledger(spec.name, pc.cast(source_pks, pa.string()), target_pks, "created")
                self.progress.advance(task, batch.num_rows)
            if spec.scope == "shared":
                reused = [
                    (src, self.idmap(spec.name).get(src))
                    for src, a in self.actions[spec.name].items()
                    if a == "reuse"
                ]
                if reused and single_pk:
                    self._ledger(
                        spec.name,
                        pa.array([str(s) for s, _ in reused]),
                        pa.array([str(t) for _, t in reused]),
                        "reused",
                    )
        self._apply_deferred()
        self.progress.finish(task)

    def _apply_renames(self, spec: TableSpec, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow as pa

        renames = self.renames.get(spec.name)
        if not renames or len(spec.pk) != 1:
            return batch
        pks = batch.column(spec.pk[0]).to_pylist()
        for col in {c for change in renames.values() for c in change}:
            idx = batch.schema.get_field_index(col)
            values = batch.column(idx).to_pylist()
            for i, pk in enumerate(pks):
                if pk in renames and col in renames[pk]:
                    values[i] = renames[pk][col]
            batch = batch.set_column(
                idx, batch.schema.field(idx), pa.array(values, type=batch.schema.field(idx).type)
            )
        return batch

    def _rewrite_references(self, spec: TableSpec, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow as pa
        import pyarrow.compute as pc

        for ref in spec.references:
            idx = batch.schema.get_field_index(ref.column)
            column = batch.column(idx)
            if pc.all(pc.is_null(column)).as_py():
                continue
            deferred = ref.table == spec.name or (spec.name, ref.column) in self.graph.deferred
            if deferred:
                pairs = [
                    (pk, v)
                    for pk, v in zip(batch.column(spec.pk[0]).to_pylist(), column.to_pylist(), strict=True)
                    if v is not None
                ]
                if pairs:
                    self.deferred.append((spec, ref.column, pairs))
                batch = batch.set_column(
                    idx, batch.schema.field(idx), pa.nulls(batch.num_rows, type=column.type)
                )
                continue
            mapped, missing = self.idmap(ref.table).apply(column)
            if pc.any(missing).as_py():
                first = pc.index(missing, True).as_py()
                row_pk = {c: batch.column(c)[first].as_py() for c in spec.pk}
                value = column[first].as_py()
                raise BundlerError(
                    f"bundle {self.bundle.bundle_id}: table {spec.name}, row {describe(row_pk)}: "
                    f"{ref.column} = {value!r} references a {ref.table} row that is neither in the bundle "
                    "nor mapped in the target",
                    hint=_unmapped_hint(self, ref.table, value),
                )
            batch = batch.set_column(idx, batch.schema.field(idx), mapped)
        return batch

    def _apply_deferred(self) -> None:
        """Second pass for cycle-breaking and self references: set them now that every id is known."""
        for spec, column, pairs in self.deferred:
            ref = spec.ref_by_column[column]
            target_map = self.idmap(ref.table)
            own = self.idmap(spec.name)
            t = table_clause(spec)
            updates = []
            for source_pk, value in pairs:
                mapped = target_map.get(value)
                if mapped is None:
                    raise BundlerError(
                        f"bundle {self.bundle.bundle_id}: table {spec.name}, row {source_pk}: {column} = {value!r} "
                        f"references a {ref.table} row that is neither in the bundle nor in the target"
                    )
                updates.append({"_pk": own.get(source_pk), "_value": mapped})
            stmt = (
                sa.update(t)
                .where(t.c[spec.pk[0]] == sa.bindparam("_pk"))
                .values({column: sa.bindparam("_value")})
            )
            for part in chunks(updates, 1000):
                self.conn.execute(stmt, part)

    def _ledger(self, table: str, source: pa.Array, target: pa.Array, action: str) -> None:
        import pyarrow as pa

        from bundler.bulk import insert_arrow

        n = len(source)
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([self.bundle.bundle_id] * n, pa.string()),
                pa.array([table] * n, pa.string()),
                source,
                target,
                pa.array([action] * n, pa.string()),
            ],
            names=["bundle_id", "table_name", "source_pk", "target_pk", "action"],
        )
        insert_arrow(self.conn, tracking.ledger_table, batch)
        self.ledger_rows += n

    # -- 6, 7. record and activate -------------------------------------------------------------

    def activate(self) -> Any:
        root = self.manifest.get("root")
        if not root:
            return None
        table, _ = self.tr.translate_key(root["table"], {})
        spec = self.graph.table(table)
        target_pk = self.idmap(table).get(_source_value(spec, spec.pk[0], root["source_pk"]))
        if self.manifest["kind"] == "usage" or target_pk is None:
            return target_pk
        if spec.status is not None:
            t = table_clause(spec)
            self.conn.execute(
                sa.update(t)
                .where(t.c[spec.pk[0]] == target_pk, t.c[spec.status.column] == spec.status.exported)
                .values({spec.status.column: spec.status.active})
            )
        return target_pk

    def record(self, root_target_pk: Any) -> None:
        root = self.manifest.get("root") or {}
        self.conn.execute(
            tracking.loads_table.insert().values(
                bundle_id=self.bundle.bundle_id,
                kind=self.manifest["kind"],
                root_table=root.get("table"),
                root_source_pk=str(root["source_pk"]) if root else None,
                root_target_pk=str(root_target_pk) if root_target_pk is not None else None,
                root_key=key_text(root["natural_key"])[:255] if root else None,
                source_system=self.manifest["source"]["system_id"],
                manifest_sha256=self.bundle.manifest_sha256,
                depends_on=(self.manifest.get("depends_on") or [None])[0],
                loaded_at=tracking.now(),
                outcome="loaded",
                rows_created=sum(p.created for p in self.plans.values()),
                rows_reused=sum(p.reused for p in self.plans.values()),
            )
        )


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    return text[0] if text else type(exc).__name__


def _unmapped_hint(load: _Load, table: str, value: Any) -> str:
    if load.actions.get(table, {}).get(value) == "skip":
        return (
            f"that {table} row belongs to a shared row the decisions reuse, and the target's version lacks it; "
            "decide create for its parent"
        )
    return "the bundle is inconsistent with the target; verify it with bundler inspect verify"


def _typed(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _source_value(spec: TableSpec, column: str, value: Any) -> Any:
    """A manifest value (JSON) as the column's Python value."""
    ctype = spec.column_map[column].type if column in spec.column_map else "string"
    if ctype.startswith("int") and isinstance(value, str):
        return int(value)
    return value


def _differences(
    spec: TableSpec, row: dict[str, Any], target: dict[str, Any], load: _Load
) -> dict[str, dict[str, Any]]:
    """Columns whose values differ between the bundle's row and the matched target row."""
    out: dict[str, dict[str, Any]] = {}
    for col in spec.column_names:
        if col in spec.pk or col not in target:
            continue
        mine = row.get(col)
        ref = spec.ref_by_column.get(col)
        if ref is not None and mine is not None:
            mapped = load.idmap(ref.table).get(mine)
            mine = mapped if mapped is not None else load.tentative[ref.table].get(mine)
        theirs = target[col]
        if mine == theirs:  # the common case, without rendering both (equal values render equal)
            continue
        if key_value(mine) != key_value(theirs):
            out[col] = {"bundle": key_value(row.get(col)), "target": key_value(theirs)}
    return out


def _match_target(
    connection: sa.Connection, spec: TableSpec, keys: Iterable[tuple[Any, ...]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Target rows whose natural key (in target values) is one of ``keys``: key → full row."""
    wanted = set(keys)
    if not wanted:
        return {}
    t = table_clause(spec)
    first = spec.natural_key[0]
    firsts = {k[0] for k in wanted}
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for part in chunks(sorted_values(_db_values(spec, first, firsts))):
        for row in connection.execute(sa.select(t).where(t.c[first].in_(part))).mappings():
            key = tuple(key_value(row[c]) for c in spec.natural_key)
            if key in wanted:
                found[key] = dict(row)
    return found


def _db_values(spec: TableSpec, column: str, values: Iterable[Any]) -> list[Any]:
    """Key values (JSON scalars) back into values a query can compare with the column."""
    from datetime import date, datetime
    from decimal import Decimal

    ctype = spec.column_map[column].type
    out: list[Any] = []
    for v in values:
        if v is None:
            continue
        if ctype.startswith("timestamp"):
            out.append(datetime.fromisoformat(v))
        elif ctype == "date32":
            out.append(date.fromisoformat(v))
        elif ctype.startswith("decimal"):
            out.append(Decimal(v))
        else:
            out.append(v)
    return out


def match_keys(
    connection: sa.Connection, graph: Graph, spec: TableSpec, column: str, keys: list[Key]
) -> dict[str, Any]:
    """Natural keys (possibly nested) → the target's value of ``column`` for the rows that have them."""
    if not keys:
        return {}
    t = table_clause(spec)
    scalar = next((c for c in spec.natural_key if c not in spec.ref_by_column), None)
    if scalar is not None:
        firsts = _db_values(spec, scalar, {k.get(scalar) for k in keys})
        candidates: list[Any] = []
        for part in chunks(sorted_values(firsts)):
            candidates.extend(
                connection.execute(sa.select(t.c[column]).where(t.c[scalar].in_(part))).scalars()
            )
    else:
        candidates = list(connection.execute(sa.select(t.c[column])).scalars())
    target_keys = natural_keys(connection, graph, spec.name, column, candidates)
    return {key_text(k): value for value, k in target_keys.items()}


# -- entry point ----------------------------------------------------------------------------


class _Contended(Exception):
    """Another load committed a conflicting row or held a lock first: run this load again."""


RETRIES = 12


def _contended(exc: sa.exc.DBAPIError) -> bool:
    """A deadlock or serialization failure the database asks us to retry."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig is not None and orig.args else None)
    return code in ("40P01", "40001", 1213, 1205) or "database is locked" in str(orig)


def load_bundle(
    engine: sa.Engine,
    bundle_path: str | Path,
    *,
    decisions: str | Path | None = None,
    dry_run: bool = False,
    spec: str | Path | None = None,
    progress: Progress | None = None,
    asker: Asker | None = None,
    batch_rows: int = 65_536,
    verify: bool = True,
    cache: TargetCache | None = None,
) -> LoadResult:
    """Load one bundle into the target (see the module docstring for the steps).

    ``cache``: what to share with the other loads of a run into the same target (see
    :class:`TargetCache`; a lineup passes one for its whole run).

    Loads running at the same time may race for the same new shared row (two customers
    bringing the same destination): the loser's transaction is rolled back and run again,
    and then finds the row the other load created.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    with open_bundle(bundle_path) as bundle:
        if verify:
            _verify(bundle, spec)
        for attempt in range(1, RETRIES + 1):
            try:
                result = _load_once(
                    engine,
                    bundle,
                    bundle_path,
                    decisions,
                    dry_run,
                    spec,
                    progress,
                    asker,
                    batch_rows,
                    cache,
                )
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                raise DatabaseError(
                    f"bundle {bundle.bundle_id}: the target database went away ({_first_line(exc.orig)})",
                    hint="if that happened while committing, the outcome is unknown: load the bundle again "
                    "(a load that did commit reports already-loaded)",
                ) from exc
            except _Contended as exc:
                if attempt == RETRIES:
                    raise BundlerError(
                        f"bundle {bundle.bundle_id}: gave up after {RETRIES} attempts: {exc}",
                        hint="other loads keep conflicting with this one; load it again later",
                    ) from None
                progress.note(f"{bundle.bundle_id}: another load got there first ({exc}); trying again")
                time.sleep(random.uniform(0.05, 0.25) * attempt)  # jitter: racing loads drift apart
                continue
            result.seconds = time.monotonic() - started
            return result
    raise AssertionError("unreachable")


def _load_once(
    engine: sa.Engine,
    bundle: Bundle,
    bundle_path: str | Path,
    decisions: str | Path | None,
    dry_run: bool,
    spec: str | Path | None,
    progress: Progress,
    asker: Asker | None,
    batch_rows: int,
    cache: TargetCache | None,
) -> LoadResult:
    from bundler.load.translate import translator_for

    manifest = bundle.manifest
    options: dict[str, Any] = {"sqlite_begin": "immediate"}
    with engine.connect().execution_options(**options) as connection:
        with connection.begin():
            graph, system = target_graph(connection, spec)
        with connection.begin() as txn:
            done = connection.execute(
                sa.select(tracking.loads_table).where(tracking.loads_table.c.bundle_id == bundle.bundle_id)
            ).first()
            if done is not None:
                if done.manifest_sha256 != bundle.manifest_sha256:
                    raise BundleInvalid(
                        str(bundle_path),
                        [f"a different bundle with id {bundle.bundle_id} was loaded on {done.loaded_at}"],
                        hint="bundle ids are unique: this one was altered or re-made by hand",
                    )
                root_pk = _typed(done.root_target_pk) if done.root_target_pk else None
                return LoadResult(bundle.bundle_id, str(bundle_path), "already-loaded", {}, [], 0.0, root_pk)
            translator = translator_for(_bundle_graph(manifest, spec), graph)
            sidecar = load_decisions(decisions)
            load = _Load(
                connection,
                bundle,
                graph,
                system,
                translator,
                sidecar,
                progress,
                asker,
                batch_rows,
                cache,
            )
            try:
                load.preflight()
                load.check_owned_conflicts()
                load.decide()
                if asker is not None and load._asked and decisions is not None:
                    write_sidecar(Path(decisions), template(bundle.bundle_id, load._asked, sidecar))
                load.write()
                root_pk = load.activate()
                load.record(root_pk)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise DatabaseError(
                        f"bundle {bundle.bundle_id}: the target database went away during the load "
                        f"({_first_line(exc.orig)})",
                        hint="nothing was committed; load the bundle again when the target is back",
                    ) from exc
                if _contended(exc):
                    raise _Contended(_first_line(exc.orig)) from exc
                raise
            outcome = "loaded"
            if dry_run:
                txn.rollback()
                outcome = "dry-run"
        if cache is not None and outcome == "loaded":  # committed: the next loads may know it
            load.remember_shared(cache)
    return LoadResult(bundle.bundle_id, str(bundle_path), outcome, load.plans, load.decided, 0.0, root_pk)


def _bundle_graph(manifest: dict[str, Any], spec: str | Path | None) -> Graph:
    release = manifest["graph"]["release"]
    if spec is not None:
        graph = load_graph(spec)
        if graph.release == release:
            return graph
    return graph_for_release(release)


def _verify(bundle: Bundle, spec: str | Path | None) -> None:
    try:
        from bundler.inspect.verify import verify_bundle
    except ImportError:  # pragma: no cover - inspect is part of the package
        from bundler.bundle import checksum_problems, manifest_problems

        problems = manifest_problems(bundle.manifest) + checksum_problems(bundle)
        if problems:
            raise BundleInvalid(bundle.name, problems) from None
        return
    report = verify_bundle(bundle.source, graph=load_graph(spec) if spec else None)
    if report.problems:
        raise BundleInvalid(
            bundle.name,
            [str(p) for p in report.problems],
            hint="run bundler inspect verify for the full list",
        )
