"""Id maps: source values to target values, per table, applied to Arrow columns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


class IdMap:
    """For one table: the value a reference holds in the source → the value in the target.

    For a table with a surrogate key that is the primary key (source id → new target id);
    for a table referenced by a natural column (a currency's code) it maps the code.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        self.values: dict[Any, Any] = {}
        self._arrays: tuple[pa.Array, pa.Array, pa.DataType] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, value: Any) -> bool:
        return value in self.values

    def get(self, value: Any) -> Any:
        return self.values.get(value)

    def set(self, source: Any, target: Any) -> None:
        self.values[source] = target
        self._arrays = None

    def update(self, pairs: dict[Any, Any]) -> None:
        self.values.update(pairs)
        self._arrays = None

    def apply(self, column: pa.Array) -> tuple[pa.Array, pa.Array]:
        """The column with every value mapped, and a mask of non-null values that have no mapping."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if self._arrays is None or self._arrays[2] != column.type:
            keys = pa.array(list(self.values.keys()), type=column.type)
            targets = list(self.values.values())
            self._arrays = (keys, pa.array(targets, type=column.type), column.type)
        keys, targets, _ = self._arrays
        idx = pc.index_in(column, value_set=keys)
        mapped = pc.take(targets, idx)
        missing = pc.and_(pc.is_valid(column), pc.is_null(idx))
        return mapped, missing
