"""A reverse transfer carries a usage tree back: the lines of a loan made on the target
return with their loan, their loan ids mapped to the ids the source gives the loans."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bundler.export import ExportOptions, export_root
from bundler.load import load_bundle
from bundler.reverse import reverse_export, reverse_load
from tests.foreign import library
from tests.foreign.test_library import NOW, _graph

LOANED = datetime(2026, 11, 10, 8, 15, 0, 250, tzinfo=timezone(timedelta(hours=1)))
DUE = datetime(2026, 11, 24, 18, 30)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"], indirect=True)
def test_reverse_carries_usage_children_with_their_parents(new_db: Any, dialect: str, tmp_path: Path) -> None:
    source = library.build(new_db(), dialect)
    spec = _graph(source, tmp_path / "library.json")
    first = export_root(
        source, "member", "C-17", tmp_path / "a", spec=spec, options=ExportOptions(xdrs="all", now=NOW)
    )
    target = library.create_empty(new_db(), dialect)
    load_bundle(target, first.path, spec=spec)
    with target.begin() as conn:
        member = conn.execute(sa.text("SELECT member_id FROM members WHERE card_no = 'C-17'")).scalar_one()
        old_loan, title, other = conn.execute(
            sa.text("SELECT MIN(loan_id), MIN(title_id), MAX(title_id) FROM loan_lines")
        ).one()
        conn.execute(
            sa.text(
                "INSERT INTO loans (loan_id, member_id, branch, loaned_at, fee) "
                "VALUES (900, :m, 'KRK', :at, :fee)"
            ),
            {"m": member, "at": library._ts(LOANED, dialect), "fee": library._dec(Decimal("1.5"), dialect)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO loan_lines (line_id, loan_id, title_id, returned, due_at) VALUES "
                "(9000, 900, :t, :yes, :due), (9001, 900, :o, NULL, NULL), (9002, :old, :t, :no, NULL)"
            ),
            {"t": title, "o": other, "old": old_loan, "yes": True, "no": False, "due": DUE},
        )

    exported = reverse_export(target, "C-17", tmp_path / "back", spec=spec, now=NOW, kind="member")
    assert exported.returnable == {"loans": 1, "loan_lines": 2}
    assert exported.from_source == {"loans": 2, "loan_lines": 3}
    (left,) = [r for r in exported.not_returned if r["table"] == "loan_lines"]
    assert left["target_pk"] == 9002 and "its loans row is not returned" in left["reasons"][0]
    assert str(left["natural_key"]["loan_id"]["loaned_at"]).startswith("2026-11-02")

    loaded = reverse_load(source, exported.path, spec=spec)
    assert loaded.imported == {"loans": 1, "loan_lines": 2}
    with source.connect() as conn:
        (loan,) = conn.execute(
            sa.text("SELECT loan_id, branch FROM loans WHERE loan_id NOT IN (100, 101, 102)")
        ).all()
        lines = conn.execute(
            sa.text(
                "SELECT loan_id, returned, due_at FROM loan_lines WHERE line_id NOT IN (1000, 1001, 1002, 1003)"
                " ORDER BY line_id"
            )
        ).all()
    assert loan.branch == "KRK" and loan.loan_id not in (100, 101, 102)
    assert [(a, b, None if c is None else str(c)[:19]) for a, b, c in lines] == [
        (loan.loan_id, True, "2026-11-24 18:30:00"),
        (loan.loan_id, None, None),
    ]
