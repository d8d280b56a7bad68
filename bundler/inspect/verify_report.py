"""What ``inspect verify`` finds: :class:`Problem` and the :class:`VerifyReport` of a bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import BundleInvalid
from bundler.manifest import MANIFEST, TABLES_DIR

__all__ = ["SHOWN", "Problem", "VerifyReport", "first_line", "split_problem"]

SHOWN = 5  # examples shown per problem (values, rows)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle: the file it is in, the table and row where relevant."""

    file: str
    message: str
    table: str | None = None
    row: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "table": self.table,
            "row": self.row,
            "message": self.message,
            "text": str(self),
        }


@dataclass
class VerifyReport:
    """The outcome of verifying one bundle: every problem found, and warnings that are not problems."""

    bundle: str
    bundle_id: str | None = None
    kind: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tables: int = 0
    rows: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line per problem, each starting with the bundle."""
        return [f"{self.bundle}: {p}" for p in self.problems]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "bundle_id": self.bundle_id,
            "kind": self.kind,
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": list(self.warnings),
            "tables": self.tables,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }

    def raise_if_invalid(self) -> None:
        """Raise :class:`BundleInvalid` listing every problem, if there is any."""
        if self.problems:
            raise BundleInvalid(
                self.bundle, [str(p) for p in self.problems], hint="run bundler inspect verify on it"
            )


def split_problem(text: str, default_file: str) -> Problem:
    """A problem line of :mod:`bundler.bundle` (``file: message`` or ``manifest.json …``) as a Problem."""
    if text.startswith(MANIFEST):
        return Problem(MANIFEST, text[len(MANIFEST) :].lstrip(": ").strip() or text)
    file, sep, message = text.partition(": ")
    if sep and (
        file.startswith(f"{TABLES_DIR}/")
        or "/" in file
        or file.endswith((".parquet", ".sig"))
        or _stray(message)
    ):
        table = Path(file).name.removesuffix(".parquet") if file.endswith(".parquet") else None
        return Problem(file, message, table=table)
    return Problem(default_file, text)


def _stray(message: str) -> bool:
    """The message of :func:`~bundler.bundle.checksum_problems` about a file the bundle should not hold."""
    return message.startswith("present in the bundle but not")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
