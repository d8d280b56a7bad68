"""Decide what becomes of each shared row of the bundle (rates, destinations, products…).

Each shared row is matched with the target's rows by natural key, in target values (its
references through the id maps). A row is then

- **reused** (the target's row stands in for it) when an earlier load from the same source
  brought it, when it is part of a reused parent, or when the decisions say so; **merged**
  (reused, and the parts the target's row lacks, such as a tariff's missing rates, created
  under it) when the decisions say so;
- **created** when the target has no match, when it is part of a created parent, or when
  the decisions say so (a created copy of a matched row is renamed to stay apart);
- **skipped** when it is part of a reused parent the target's version lacks;
- or the load **aborts**, when the decisions say so.

A match without a decision (and no one at the terminal to ask) is a question: every
question of the bundle is gathered, a template written beside the bundle, and the load
stops before anything is written. So is a match that differs in a binding column (a
currency, a price: the graph's ``binding``) and has no answer of its own (a table or global
default does not reuse it), and a natural key several target rows have (answered per key,
naming the target row).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bundler.errors import BundlerError, DecisionsNeeded
from bundler.graph import Reference, TableSpec
from bundler.keys import Key, describe, key_text, key_value
from bundler.ledger import ledger_map
from bundler.load.decisions import REUSING, Question, template, write_sidecar
from bundler.load.state import LoadState, TablePlan, typed
from bundler.secure.mask import masked_row, shown
from bundler.sql import chunks, db_values, match_candidates, table_clause


def decide(state: LoadState) -> None:
    """Decide every shared row; raise :class:`DecisionsNeeded` when some matches have no answer."""
    questions: list[Question] = list(state.questions)  # the preflight's (ambiguous prerequisites)
    for spec in state.graph.tables_in_order(("shared",)):
        if spec.name not in state.tables:
            continue
        rows = state.rows(spec.name, keep=state.worth_keeping(spec.name))  # for the write, next
        _compute_keys(state, spec, rows)
        _TableDecision(state, spec, rows).run(questions)
    if questions:
        _stop_for_questions(state, questions)


def _stop_for_questions(state: LoadState, questions: list[Question]) -> None:
    """Write the decisions template beside the bundle (or at --decisions) and stop the load."""
    bundle = state.bundle
    path = state.decisions.path or bundle.source.parent / f"{bundle.bundle_id}.decisions.json"
    write_sidecar(path, template(bundle.bundle_id, questions, state.decisions))
    tables = sorted({q.table for q in questions})
    raise DecisionsNeeded(
        f"bundle {bundle.bundle_id}: {len(questions)} shared row(s) match rows of the target "
        f"({', '.join(tables)}) and have no decision",
        hint=f"answer them in {path} (reuse, merge, create or abort) and load again with --decisions {path}",
    )


# -- natural keys as the bundle has them ------------------------------------------------------


def bundle_key(state: LoadState, table: str, value: Any) -> Key | None:
    """The natural key of a row the bundle references, in the target release's terms."""
    if table in state.bundle_keys:
        return state.bundle_keys[table].get(value)
    entry = state.manifest.prerequisites.get(table)
    if entry is not None:
        keys = {r.value: state.tr.translate_key(table, r.key)[1] for r in entry.rows}
        state.bundle_keys[table] = keys
        return keys.get(value)
    return None


def _compute_keys(state: LoadState, spec: TableSpec, rows: list[dict[str, Any]]) -> None:
    """The natural key of each row of ``spec`` (references as the referenced rows' keys), by pk."""
    keys: dict[Any, Key] = {}
    target_col = spec.pk[0] if len(spec.pk) == 1 else None
    for row in rows:
        key: Key = {}
        for col in spec.natural_key:
            ref = spec.ref_by_column.get(col)
            value = row[col]
            key[col] = (
                bundle_key(state, ref.table, value)
                if ref is not None and value is not None
                else key_value(value)
            )
        if target_col is not None:
            keys[row[target_col]] = key
    state.bundle_keys[spec.name] = keys


# -- one table ---------------------------------------------------------------------------------


class _TableDecision:
    """The decisions for the rows of one shared table."""

    def __init__(self, state: LoadState, spec: TableSpec, rows: list[dict[str, Any]]) -> None:
        self.state = state
        self.spec = spec
        self.rows = rows
        self.plan: TablePlan = state.plan_for(spec)
        self.pk = spec.pk[0] if len(spec.pk) == 1 else None
        self.parents: list[Reference] = [
            r for r in spec.owner_refs if state.graph.table(r.table).scope == "shared"
        ]
        self.target_keys = [self._target_key(row) for row in rows]
        self.matches = match_candidates(state.conn, spec, [k for k in self.target_keys if k is not None])
        self.known = (
            known_from_source(state, spec, [row[self.pk] for row in rows])
            if self.pk and not self.parents
            else {}
        )

    def _target_key(self, row: dict[str, Any]) -> tuple[Any, ...] | None:
        """The row's natural key in target values (references through the id maps), None if unmapped."""
        values: list[Any] = []
        for col in self.spec.natural_key:
            ref = self.spec.ref_by_column.get(col)
            if ref is not None and row[col] is not None:
                mapped = self.state.idmap(ref.table).get(row[col])
                if mapped is None:
                    return None
                values.append(key_value(mapped))
            else:
                values.append(key_value(row[col]))
        return tuple(values) if values else None

    def run(self, questions: list[Question]) -> None:
        for row, wanted in zip(self.rows, self.target_keys, strict=True):
            self._decide_row(row, self.matches.get(wanted, []) if wanted is not None else [], questions)

    def _decide_row(
        self, row: dict[str, Any], candidates: list[dict[str, Any]], questions: list[Question]
    ) -> None:
        src = row[self.pk] if self.pk else tuple(row[c] for c in self.spec.pk)
        differs: dict[str, dict[str, Any]] | None = None
        match = candidates[0] if len(candidates) == 1 else None
        if src in self.known:
            # an earlier load from the same source brought this very row (perhaps as a renamed copy)
            match, action = self.known[src], "reuse"
        elif self.parents and len(candidates) < 2:
            action = self._follow_parents(row, match)
        elif not candidates:
            action = "create"
        else:
            answered = self._answer(src, row, candidates, questions)
            if answered is None:
                return  # an open question
            action, match, differs = answered
        self._count(src, row, match, action, differs)

    def _follow_parents(self, row: dict[str, Any], match: dict[str, Any] | None) -> str:
        """A part of shared rows (a rate of a tariff) goes with them: created, skipped or reused."""
        states = [self.state.actions[r.table].get(row[r.column]) for r in self.parents]
        if "create" in states:
            return "create"
        if "skip" in states:
            return "skip"
        if match is None and "merge" in states:
            return "create"  # a part the target's version lacks, added to it
        return "reuse" if match is not None else "skip"  # part of a reused row: the target's version stands

    def _answer(
        self, src: Any, row: dict[str, Any], candidates: list[dict[str, Any]], questions: list[Question]
    ) -> tuple[str, dict[str, Any] | None, dict[str, dict[str, Any]]] | None:
        """The decision for a matched row, the target row it maps to, and how they differ
        (asked at the terminal if need be); None leaves it open."""
        state, spec = self.state, self.spec
        key = state.bundle_keys[spec.name].get(src) if self.pk else None
        key = key or {c: key_value(row[c]) for c in spec.natural_key}
        answer, origin = state.decisions.action(spec.name, key)
        if len(candidates) > 1:
            answer, match, question, origin = self._ambiguous(key, row, candidates, answer, origin)
            differs = differences(state, spec, row, match) if match is not None else {}
        else:
            match = candidates[0]
            differs = differences(state, spec, row, match)
            binding = tuple(c for c in spec.binding if c in differs)
            question = Question(spec.name, key, key_value(match[spec.pk[0]]), differs, binding)
            if binding and answer in REUSING and origin in ("table", "default"):
                answer = None  # money would change: only an answer for this very row reuses it
            if answer is None and state.asker is not None:
                answer, origin = self._ask(question, row, match), "interactive"
        if answer is None:
            questions.append(question)
            if self.pk and match is not None:
                state.tentative[spec.name][src] = match[self.pk]
            return None
        if answer == "abort":
            where = (
                f"target row {match[spec.pk[0]]}" if match is not None else f"{len(candidates)} target rows"
            )
            raise BundlerError(
                f"bundle {state.bundle_id}: {spec.name} {describe(key)} matches {where} "
                "and the decisions say abort",
                hint="nothing was written; change the decision to reuse, merge or create to go on",
            )
        state.decided.append({"table": spec.name, "key": key, "action": answer, "by": origin})
        if answer == "create":
            state.renames[spec.name][src] = _rename(state, spec, row)
            self.plan.renamed += 1
        return answer, match, differs

    def _ambiguous(
        self,
        key: Key,
        row: dict[str, Any],
        candidates: list[dict[str, Any]],
        answer: str | None,
        origin: str,
    ) -> tuple[str | None, dict[str, Any] | None, Question, str]:
        """A natural key several target rows have: the answer, if a per-key decision (or the
        operator at the terminal) gives one, the row it names (for reuse or merge), and whence."""
        spec = self.spec
        pk = spec.pk[0]
        listed = tuple(
            {"target_pk": key_value(c[pk]), "differs": differences(self.state, spec, row, c)}
            for c in candidates
        )
        question = Question(spec.name, key, None, {}, (), listed)
        chosen = self.state.decisions.target(spec.name, key)
        match = next((c for c in candidates if key_value(c[pk]) == chosen), None)
        if origin != "row" or (answer in REUSING and match is None):
            pick = getattr(self.state.asker, "pick", None)  # the operator at the terminal picks one
            if pick is None:
                return None, None, question, origin  # never resolved by a default, nor by picking one
            answer, chosen = pick(question, row)
            match = next((c for c in candidates if key_value(c[pk]) == chosen), None)
            self.state.decisions.set_row(spec.name, key, answer)
            if match is not None:
                self.state.decisions.targets[(spec.name, key_text(key))] = chosen
            self.state.asked.append(question)
            origin = "interactive"
        return answer, match, question, origin

    def _ask(self, question: Question, row: dict[str, Any], match: dict[str, Any]) -> str:
        """Ask the terminal; the answer is kept for the row, or for the whole table."""
        state, spec = self.state, self.spec
        assert state.asker is not None
        answer, whole_table = state.asker(
            question, masked_row(spec.name, row, state.graph), masked_row(spec.name, match, state.graph)
        )
        if whole_table and not question.binding:
            state.decisions.set_table(spec.name, answer)
        else:
            state.decisions.set_row(spec.name, question.key, answer)
        state.asked.append(question)
        return answer

    def _count(
        self,
        src: Any,
        row: dict[str, Any],
        match: dict[str, Any] | None,
        action: str,
        differs: dict[str, dict[str, Any]] | None,
    ) -> None:
        """Record the action; a reused row maps to its match, and its differences are listed."""
        state, spec, plan = self.state, self.spec, self.plan
        if action in REUSING:
            assert match is not None
            if self.pk:
                state.idmap(spec.name).set(src, match[self.pk])
            plan.reused += 1
            plan.merged += action == "merge"
            if differs is None:  # not worked out yet when no decision was asked
                differs = differences(state, spec, row, match)
            if differs:
                binding = [c for c in spec.binding if c in differs]
                plan.differing.append(
                    {
                        "key": state.bundle_keys[spec.name].get(src) if self.pk else src,
                        "differs": differs,
                        **({"binding": binding} if binding else {}),
                    }
                )
        elif action == "skip":
            plan.skipped += 1
        else:
            plan.created += 1
        state.actions[spec.name][src] = action


def differences(
    state: LoadState, spec: TableSpec, row: dict[str, Any], target: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Columns whose values differ between the bundle's row and the matched target row."""
    out: dict[str, dict[str, Any]] = {}
    for col in spec.column_names:
        if col in spec.pk or col not in target:
            continue
        mine = row.get(col)
        ref = spec.ref_by_column.get(col)
        if ref is not None and mine is not None:
            mapped = state.idmap(ref.table).get(mine)
            mine = mapped if mapped is not None else state.tentative[ref.table].get(mine)
        theirs = target[col]
        if mine == theirs:  # the common case, without rendering both (equal values render equal)
            continue
        if key_value(mine) != key_value(theirs):
            out[col] = {"bundle": key_value(row.get(col)), "target": key_value(theirs)}
            if col in spec.sensitive:  # in templates, results and questions: masked
                out[col] = {side: shown(value) for side, value in out[col].items()}
    return out


def _rename(state: LoadState, spec: TableSpec, row: dict[str, Any]) -> dict[str, Any]:
    """A created copy of a matched row needs a natural key of its own: text columns get a suffix."""
    suffix = f" (from {state.manifest.source.system_id[:8]})"
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


# -- what earlier loads from the same source brought ----------------------------------------------


def known_from_source(state: LoadState, spec: TableSpec, source_pks: list[Any]) -> dict[Any, dict[str, Any]]:
    """Target rows that earlier loads from the same source system wrote or reused for these rows.

    The run's cache answers first, the ledger for the rest, and for what the cache
    named but the target no longer holds (the ledger may know better).
    """
    wanted = {str(v): v for v in source_pks}
    system = state.manifest.source.system_id
    cached = state.cache.known(system, spec.name, wanted)
    pairs = dict(cached)
    pairs.update(
        ledger_map(state.conn, spec.name, (p for p in wanted if p not in cached), source_system=system)
    )
    rows = _target_rows(state, spec, set(pairs.values()))
    stale = [src for src, target in cached.items() if target not in rows]
    if stale:
        again = ledger_map(state.conn, spec.name, stale, source_system=system)
        pairs.update(again)
        rows.update(_target_rows(state, spec, set(again.values()) - set(rows)))
    # a row cleaned from the target since is no longer known
    return {wanted[src]: rows[target] for src, target in pairs.items() if target in rows}


def _target_rows(state: LoadState, spec: TableSpec, pks: set[str]) -> dict[str, dict[str, Any]]:
    """The target's rows of ``spec`` with these primary keys (as text), by key."""
    t = table_clause(spec)
    pk = spec.pk[0]
    out: dict[str, dict[str, Any]] = {}
    for part in chunks(sorted(pks)):
        values = db_values(spec, pk, [typed(v) for v in part])
        for row in state.conn.execute(sa.select(t).where(t.c[pk].in_(values))).mappings():
            out[str(row[pk])] = dict(row)
    return out
