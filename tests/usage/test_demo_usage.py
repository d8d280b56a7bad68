"""Issue 15: the demo's data always has usage in the current billing period, the 1st of a
month included, and the same ``--now`` gives the same rows."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from bundler.cli import main
from bundler.db import connect
from bundler.export import ExportOptions, export_root

FIRST = "2026-12-01T00:30:00"  # half an hour into December (UTC): earlier still in New York
SMALL = [
    "--customers", "3", "--resellers", "1", "--accounts-per-customer", "2",
    "--xdrs-per-account", "8", "--vendors", "1", "--destinations", "60",
]  # fmt: skip


def _seed(url: str) -> sa.Engine:
    result = CliRunner().invoke(main, ["db", "seed", url, "--now", FIRST, *SMALL])
    assert result.exit_code == 0, result.output
    return connect(url)


def _xdrs_digest(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM xdrs ORDER BY i_xdr")).all()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_seeded_on_the_first_every_customer_carries_current_usage(new_db: Any, tmp_path: Path) -> None:
    source = _seed(new_db("sqlite"))
    assert _xdrs_digest(source) == _xdrs_digest(_seed(new_db("sqlite")))  # same --now, same rows
    with source.connect() as conn:
        latest = conn.execute(sa.text("SELECT max(bill_time) FROM xdrs")).scalar()
        roots = conn.execute(
            sa.text(
                "SELECT name, i_customer_type FROM customers c WHERE i_parent IS NULL AND bill_status <> 'C' "
                # every root with accounts (a vendor's customer counterpart has none: no usage)
                "AND EXISTS (SELECT 1 FROM accounts a WHERE a.i_customer = c.i_customer "
                "OR a.i_customer IN (SELECT i_customer FROM customers s WHERE s.i_parent = c.i_customer)) "
                "ORDER BY i_customer"
            )
        ).all()
    assert str(latest) < "2026-12-01 00:30:00"  # up to the moment it ran, not after
    now = datetime.fromisoformat(FIRST)
    for name, ctype in roots:
        kind = "reseller" if ctype == 2 else "customer"
        result = export_root(source, kind, name, tmp_path, options=ExportOptions(now=now, mark=False))
        usage = result.manifest.to_doc()["usage"]
        assert result.manifest.tables["xdrs"].rows > 0, (name, usage)
        assert "warning" not in usage
        if kind == "reseller":  # every customer under it has its own window
            assert len(usage["windows"]) > 1
