"""Vectorised operations (pyarrow.compute) that translate one record batch, and natural keys.

Each rule of an upgrade step compiles (:mod:`bundler.load.translate_layout`) to one of
these operations; a table of the target release is made from one table of the bundle by
applying its list of operations to each batch in turn, so memory is bounded by the batch
size. :meth:`Op.key` does the same to a natural key (a JSON-scalar mapping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bundler.graph import arrow_type
from bundler.keys import key_value
from bundler.load.upgrade_rules import MapCodes, SplitTable, UnmappedCode, UpgradeStep

if TYPE_CHECKING:
    import pyarrow as pa


class Frame:
    """The named columns of one batch while it is being translated."""

    def __init__(self, columns: dict[str, pa.Array], num_rows: int) -> None:
        self.columns = columns
        self.num_rows = num_rows


@dataclass
class BatchContext:
    bundle: str | None
    table: str


class Op:
    def apply(self, frame: Frame, ctx: BatchContext) -> Frame:  # pragma: no cover - abstract
        raise NotImplementedError

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        return key


class RenameOp(Op):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def apply(self, frame: Frame, ctx: BatchContext) -> Frame:
        return Frame(
            {(self.new if n == self.old else n): a for n, a in frame.columns.items()}, frame.num_rows
        )

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        return {(self.new if n == self.old else n): v for n, v in key.items()}


class DropOp(Op):
    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = frozenset(columns)

    def apply(self, frame: Frame, ctx: BatchContext) -> Frame:
        return Frame({n: a for n, a in frame.columns.items() if n not in self.columns}, frame.num_rows)

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        return {n: v for n, v in key.items() if n not in self.columns}


class AddOp(Op):
    def __init__(self, column: str, type_name: str, default: Any) -> None:
        import pyarrow as pa

        self.column = column
        self.type = arrow_type(type_name)
        self.scalar = pa.scalar(None, self.type) if default is None else _cast_scalar(default, self.type)
        self.key_value = key_value(self.scalar.as_py())

    def apply(self, frame: Frame, ctx: BatchContext) -> Frame:
        import pyarrow as pa

        if self.scalar.is_valid:
            array = pa.repeat(self.scalar, frame.num_rows)
        else:
            array = pa.nulls(frame.num_rows, self.type)
        return Frame({**frame.columns, self.column: array}, frame.num_rows)

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        return {**key, self.column: self.key_value}


def _cast_scalar(value: Any, type_: pa.DataType) -> pa.Scalar:
    import pyarrow as pa

    if isinstance(value, bool):
        raise TypeError("a boolean is no column value")
    if pa.types.is_string(type_) or pa.types.is_decimal(type_) or isinstance(value, str):
        return pa.scalar(str(value)).cast(type_)
    return pa.scalar(value).cast(type_)


class MapOp(Op):
    def __init__(self, rule: MapCodes, step: UpgradeStep, type_name: str, pk: tuple[str, ...]) -> None:
        import pyarrow as pa

        self.rule, self.step, self.pk = rule, step, pk
        type_ = arrow_type(type_name)
        olds = list(rule.map)
        self.old = pa.array(olds, pa.string()).cast(type_)
        self.new = pa.array([str(v) for v in rule.map.values()], pa.string()).cast(type_)
        # natural keys hold JSON scalars (bundler.keys.key_value): map those the same way
        self.key_map = {
            key_value(o): key_value(n)
            for o, n in zip(self.old.to_pylist(), self.new.to_pylist(), strict=True)
        }

    def apply(self, frame: Frame, ctx: BatchContext) -> Frame:
        import pyarrow.compute as pc

        values = frame.columns[self.rule.column]
        index = pc.index_in(values, value_set=self.old)
        mapped = pc.take(self.new, index)
        unmapped = pc.and_(pc.is_null(index), pc.is_valid(values))
        if self.rule.unmapped == "keep":
            mapped = pc.if_else(unmapped, values, mapped)
        elif pc.any(unmapped).as_py():
            first = pc.index(unmapped, True).as_py()
            bad = pc.filter(values, unmapped)
            row = {c: key_value(frame.columns[c][first].as_py()) for c in self.pk if c in frame.columns}
            raise UnmappedCode(
                step=self.step,
                table=self.rule.table,
                column=self.rule.column,
                value=values[first].as_py(),
                bundle=ctx.bundle,
                row=row or {"row": first},
                count=len(bad),
                others=pc.unique(bad).to_pylist(),
            )
        return Frame({**frame.columns, self.rule.column: mapped}, frame.num_rows)

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        column = self.rule.column
        if column not in key or key[column] is None or isinstance(key[column], dict):
            return key
        value = key[column]
        if value in self.key_map:
            return {**key, column: self.key_map[value]}
        if self.rule.unmapped == "keep":
            return key
        raise UnmappedCode(step=self.step, table=table, column=column, value=value, row=key)


class SplitOp(Op):
    def __init__(self, rule: SplitTable) -> None:
        self.rule = rule

    def apply(self, frame: Frame, ctx: BatchContext) -> Frame:
        import pyarrow as pa
        import pyarrow.compute as pc

        src = frame.columns
        columns = {new: src[old] for new, old in self.rule.key.items()}
        columns.update({c: src[c] for c in self.rule.columns})
        if not self.rule.skip_when_all_null:
            return Frame(columns, frame.num_rows)
        keep = pc.is_valid(src[self.rule.columns[0]])
        for c in self.rule.columns[1:]:
            keep = pc.or_(keep, pc.is_valid(src[c]))
        if pc.all(keep).as_py() is not False:
            return Frame(columns, frame.num_rows)
        kept = pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns)).filter(keep)
        return Frame(dict(zip(kept.schema.names, kept.columns, strict=True)), kept.num_rows)
