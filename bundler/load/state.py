"""What the steps of one load share: the target connection, the bundle's translated tables,
the id maps, the per-table plans and the decisions taken so far.

Each step (:mod:`~bundler.load.preflight`, :mod:`~bundler.load.decide`,
:mod:`~bundler.load.write`, :mod:`~bundler.load.record`) is a set of functions over one
:class:`LoadState`, made afresh for every attempt of a load.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bundler.ids import IdAllocator
from bundler.keys import Key, key_value
from bundler.ledger import LedgerRows
from bundler.load.cache import TargetCache
from bundler.load.decisions import Decisions, Question
from bundler.load.idmap import IdMap

if TYPE_CHECKING:
    import pyarrow as pa
    import sqlalchemy as sa

    from bundler import tracking
    from bundler.bundle import Bundle
    from bundler.graph import Graph, TableSpec
    from bundler.load.translate import Translator
    from bundler.progress import Progress

#: Asks about a question, given the bundle's row and the target's (sensitive values masked,
#: unless ``--show-sensitive``); answers an action and whether it holds for the whole table.
Asker = Callable[[Question, dict[str, Any], dict[str, Any]], tuple[str, bool]]

#: A table of at most this many rows is kept in memory between the step that reads it
#: before the write (decide, the check of owned rows) and the write, so its file is read
#: once; a bigger one is read twice rather than held whole.
KEEP_ROWS = 250_000


@dataclass
class TablePlan:
    table: str
    scope: str
    created: int = 0
    reused: int = 0
    skipped: int = 0
    differing: list[dict[str, Any]] = field(default_factory=list)
    renamed: int = 0
    merged: int = 0  # reused rows the parts they lacked were added to


class Contended(Exception):
    """Another load committed a conflicting row or held a lock first: run this load again."""


class BundleRows:
    """The bundle's tables, translated to the target's release, one record batch at a time.

    A step before the write that reads a whole table (decide reads every shared row, the
    check of owned rows their natural keys) may keep the batches it read: the write then
    takes them instead of reading the file again.
    """

    def __init__(self, bundle: Bundle, translator: Translator, batch_rows: int) -> None:
        self.bundle = bundle
        self.tr = translator
        self.batch_rows = batch_rows
        self._kept: dict[str, list[pa.RecordBatch]] = {}

    def batches(self, table: str) -> Iterator[pa.RecordBatch]:
        """The table's batches: those a step kept (handed over once), else read from the file."""
        kept = self._kept.pop(table, None)
        if kept is not None:
            yield from kept
            return
        yield from self.tr.batches(self.bundle, table, batch_rows=self.batch_rows)

    def scan(self, table: str, *, keep: bool) -> Iterator[pa.RecordBatch]:
        """The table's batches; with ``keep``, kept for the next reader once all were read."""
        kept: list[pa.RecordBatch] = []
        for batch in self.batches(table):
            if keep:
                kept.append(batch)
            yield batch
        if keep:
            self._kept[table] = kept


class LoadState:
    """One attempt of one load: what its steps read, decide and write."""

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
        self.reader = BundleRows(bundle, translator, batch_rows)
        self.maps: dict[str, IdMap] = {}
        self.plans: dict[str, TablePlan] = {}
        self.decided: list[dict[str, Any]] = []
        # shared tables: source pk -> action (reuse | merge | create | skip), and renames for creates
        self.actions: dict[str, dict[Any, str]] = defaultdict(dict)
        self.renames: dict[str, dict[Any, dict[str, Any]]] = defaultdict(dict)
        self.bundle_keys: dict[str, dict[Any, Key]] = {}
        self.tables = translator.tables(self.manifest.tables)
        self.alloc = IdAllocator(connection)
        self.deferred: list[tuple[TableSpec, str, list[tuple[Any, Any]]]] = []
        # rows of other roots the bundle references and the target lacks yet: table -> value -> key
        self.foreign: dict[str, dict[Any, Key]] = {}
        # references to those rows, written NULL and left open: (table, column, [(source pk, value)])
        self.left_open: list[tuple[TableSpec, str, list[tuple[Any, Any]]]] = []
        self.ledger_rows = 0
        self.ledger: LedgerRows | None = None  # the write's ledger rows, gathered (see write)
        #: groups of earlier bundles a layered bundle refers to -> those the target has not loaded
        self.layers_absent: dict[tuple[str, ...], list[str]] = {}
        self.cache = cache or TargetCache()
        self.asked: list[Question] = []  # questions the asker answered
        self.questions: list[Question] = []  # open questions of the preflight (ambiguous prerequisites)
        # matches still waiting for an answer: what they would map to if reused
        self.tentative: dict[str, dict[Any, Any]] = defaultdict(dict)

    @property
    def bundle_id(self) -> str:
        return self.bundle.bundle_id

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

    def worth_keeping(self, table: str) -> bool:
        """Whether the table's batches are kept for the write (see :data:`KEEP_ROWS`)."""
        entry = self.manifest.tables.get(self.tr.source_of(table))
        return entry is None or entry.rows <= KEEP_ROWS

    def batches(self, table: str) -> Iterator[pa.RecordBatch]:
        yield from self.reader.batches(table)

    def rows(self, table: str, *, keep: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for batch in self.reader.scan(table, keep=keep):
            out.extend(batch.to_pylist())
        return out


# -- values ----------------------------------------------------------------------------------


def first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    return text[0] if text else type(exc).__name__


def typed(text: str) -> Any:
    """A key the ledger keeps as text, as the number it was when it is one."""
    try:
        return int(text)
    except ValueError:
        return text


def source_value(spec: TableSpec, column: str, value: Any) -> Any:
    """A manifest value (JSON) as the column's Python value."""
    ctype = spec.column_map[column].type if column in spec.column_map else "string"
    if ctype.startswith("int") and isinstance(value, str):
        return int(value)
    return value


def pk_text(values: tuple[Any, ...]) -> str:
    """A composite primary key as the ledger's text."""
    return str(values[0]) if len(values) == 1 else json.dumps([key_value(v) for v in values])
