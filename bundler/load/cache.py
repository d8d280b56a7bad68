"""What the loads of one run into the same target share: its reflected tables, and the
shared rows earlier loads of the run committed."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from bundler.errors import DatabaseError

if TYPE_CHECKING:
    from bundler.graph import Graph
    from bundler.tracking import SystemInfo


def reflect(connection: sa.Connection, name: str, metadata: sa.MetaData | None = None) -> sa.Table:
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
      row removed since is not reused;
    - what the ledger of earlier bundles a layered bundle refers to says (table and source
      pk -> target pk): asked once per run, not by every root's preflight. It is kept
      with the count of those bundles' ledger rows (:meth:`through_stamp`), which every
      load reads again: a clean of such a bundle meanwhile empties it;
    - the target's graph and identity (what ``bundler_system`` says), read once.

    Thread-safe.
    """

    def __init__(self) -> None:
        self._metadata = sa.MetaData()
        self._tables: dict[str, sa.Table] = {}
        self._known: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        self._through: dict[tuple[tuple[str, ...], str], dict[str, str]] = defaultdict(dict)
        self._stamps: dict[tuple[str, ...], int] = {}
        self._graphs: dict[str | None, tuple[Graph, SystemInfo]] = {}
        self._lock = threading.Lock()

    def system_graph(self, connection: sa.Connection, spec: str | Path | None) -> tuple[Graph, SystemInfo]:
        """The target's graph and identity (:func:`bundler.context.system_graph`), resolved
        once per run: three catalog and table reads less in every load."""
        from bundler.context import system_graph

        key = None if spec is None else str(spec)
        with self._lock:
            known = self._graphs.get(key)
        if known is None:
            known = system_graph(connection, spec)
            with self._lock:
                self._graphs[key] = known
        return known

    def table(self, connection: sa.Connection, name: str) -> sa.Table:
        with self._lock:
            if name not in self._tables:
                self._tables[name] = reflect(connection, name, self._metadata)
            return self._tables[name]

    def warm(self, connection: sa.Connection, names: Iterable[str]) -> int:
        """Reflect the tables of ``names`` the target has, all at once, ahead of the loads; how
        many were reflected. Without it the first load of a run reflected each table it had not
        met yet inside its root's downtime (4-5 ms a table on PostgreSQL, ~30 tables new to the
        first customer of a lineup whose configuration was loaded first); the 74 tables of the
        billing target reflect at once in 74-181 ms, a third to a half of one by one (measured)."""
        with self._lock:
            wanted = sorted(set(names) - set(self._tables))
            if not wanted:
                return 0
            present = set(sa.inspect(connection).get_table_names())
            wanted = [n for n in wanted if n in present]
            if wanted:
                self._metadata.reflect(bind=connection, only=wanted, resolve_fks=False)
                for name in wanted:
                    self._tables[name] = self._metadata.tables[name]
            return len(wanted)

    def known(self, source_system: str, table: str, pks: Iterable[str]) -> dict[str, str]:
        with self._lock:
            mine = self._known.get((source_system, table), {})
            return {pk: mine[pk] for pk in pks if pk in mine}

    def through_stamp(self, bundles: tuple[str, ...], stamp: int) -> None:
        """The count of ``bundles``' ledger rows now: a change forgets what was kept of them."""
        with self._lock:
            if self._stamps.get(bundles) != stamp:
                self._stamps[bundles] = stamp
                for key in [k for k in self._through if k[0] == bundles]:
                    del self._through[key]

    def through(self, bundles: tuple[str, ...], table: str, pks: Iterable[str]) -> dict[str, str]:
        """What was kept of the ledger of ``bundles`` for these source pks of ``table``."""
        with self._lock:
            mine = self._through.get((bundles, table), {})
            return {pk: mine[pk] for pk in pks if pk in mine}

    def remember_through(self, bundles: tuple[str, ...], table: str, pairs: dict[str, str]) -> None:
        with self._lock:
            if bundles in self._stamps:
                self._through[(bundles, table)].update(pairs)

    def remember(self, source_system: str, table: str, pairs: dict[str, str]) -> None:
        """Record what a committed load mapped."""
        with self._lock:
            self._known[(source_system, table)].update(pairs)
