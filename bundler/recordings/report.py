"""What a recordings sync pass reports: per table, in total, and the failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, overload

__all__ = ["MAX_LISTED_FAILURES", "Failure", "PassReport", "TableReport"]

#: Failures listed one by one in a report (all are counted).
MAX_LISTED_FAILURES = 100


@dataclass(frozen=True)
class Failure:
    """A recording that could not be brought over in this pass (it is retried next pass)."""

    table: str
    key: dict[str, Any]
    file_name: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "key": self.key, "file_name": self.file_name, "reason": self.reason}


def _counts_dict(counts: TableReport | PassReport) -> dict[str, Any]:
    """The ``copied``, ``skipped`` and ``failed`` parts of a report's dict."""
    return {
        "copied": {
            "files": counts.copied,
            "bytes": counts.copied_bytes,
            "in_place": counts.in_place,
            "redone": counts.redone,
        },
        "skipped": {"files": counts.skipped, "bytes": counts.skipped_bytes},
        "failed": {"files": counts.failed, "bytes": counts.failed_bytes},
    }


@dataclass
class TableReport:
    """What one pass did for one mirror table.

    ``copied`` recordings are now in the target (file checked, row written);
    ``copied_bytes`` were transferred for them; ``in_place`` of them had their file
    already in the target store from an interrupted pass (checked and reused, nothing
    transferred); ``redone`` files were copied again after a check found them wrong.
    ``skipped`` recordings were already in the target. ``failed`` ones are retried next
    pass; ``retried`` counts earlier failures tried again, ``dropped`` those whose row has
    left the source.
    """

    table: str
    copied: int = 0
    copied_bytes: int = 0
    in_place: int = 0
    redone: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    failed: int = 0
    failed_bytes: int = 0
    retried: int = 0
    dropped: int = 0
    watermark_time: datetime | None = None
    watermark_key: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            **_counts_dict(self),
            "retried": self.retried,
            "dropped": self.dropped,
            "watermark": {
                "time": self.watermark_time.isoformat(sep=" ") if self.watermark_time else None,
                "key": self.watermark_key,
            },
        }


class _Total:
    """A read-only count of a pass report: the sum of the same count over its tables."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, report: None, owner: type) -> _Total: ...
    @overload
    def __get__(self, report: PassReport, owner: type) -> int: ...
    def __get__(self, report: PassReport | None, owner: type) -> _Total | int:
        if report is None:
            return self
        return sum(int(getattr(t, self.name)) for t in report.tables)

    def __set__(self, report: PassReport, value: int) -> None:
        raise AttributeError(f"{self.name} of a pass report is the sum over its tables")


@dataclass
class PassReport:
    """What one pass did: totals, per table, and the failures (the first 100 listed)."""

    started_at: datetime
    seconds: float = 0.0
    stopped: bool = False
    tables: list[TableReport] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    copied = _Total()
    copied_bytes = _Total()
    in_place = _Total()
    redone = _Total()
    skipped = _Total()
    skipped_bytes = _Total()
    failed = _Total()
    failed_bytes = _Total()

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(sep=" ", timespec="seconds"),
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
            **_counts_dict(self),
            "tables": [t.to_dict() for t in self.tables],
            "failures": [f.to_dict() for f in self.failures],
        }
