"""A bundle whose own rows (a customer, its accounts) the target already has under the same
natural keys is refused before anything is written, naming each clash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bundler.db import connect
from bundler.errors import BundlerError
from bundler.export import ExportOptions, export_root
from bundler.load import load_bundle, preflight
from tests.export import fixture
from tests.export.fixture import NOW
from tests.load.test_faults import snapshot

OPTIONS = ExportOptions(now=NOW, xdrs="all")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("owned")
    source = fixture.build(f"sqlite:///{folder / 'source.db'}")
    try:
        return {
            name: export_root(source, kind, name, folder / "out", options=OPTIONS).path
            for kind, name in (("vendor", "Carrier Ä"), ("customer", "acme"), ("customer", "bravo"))
        }
    finally:
        source.dispose()


@pytest.mark.parametrize("screen", [1_000, 0], ids=["screened-at-once", "table-by-table"])
def test_own_rows_the_target_has_are_refused_by_name(
    dialect: str, new_db: Any, bundles: dict[str, Path], screen: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found with the owned tables asked at once (a new customer's usual case) and one by one
    (when their keys are many)."""
    monkeypatch.setattr(preflight, "SCREEN_VALUES", screen)
    url = new_db(dialect)
    fixture.build_target(url, "r2").dispose()
    target = connect(url)
    try:
        load_bundle(target, bundles["Carrier Ä"])
        assert load_bundle(target, bundles["acme"]).outcome == "loaded"
        with target.begin() as conn:  # acme's customer and first account now carry bravo's natural keys
            conn.execute(sa.text("UPDATE customers SET name = 'bravo' WHERE name = 'acme'"))
            conn.execute(sa.text("UPDATE accounts SET id = 'bravo-1' WHERE id = 'acme-1'"))
            i_customer = conn.execute(
                sa.text("SELECT i_customer FROM customers WHERE name = 'bravo'")
            ).scalar()
            i_account = conn.execute(sa.text("SELECT i_account FROM accounts WHERE id = 'bravo-1'")).scalar()
        target.dispose()
        before = snapshot(url)
        with pytest.raises(BundlerError) as caught:
            load_bundle(target, bundles["bravo"])
        line = caught.value.line()
        assert "the target already has 2 of its own row(s)" in line
        assert f"customers name='bravo' (target i_customer {i_customer})" in line
        assert f"accounts id='bravo-1' (target i_account {i_account})" in line
        assert "bundler clean" in line and "\n" not in line
        target.dispose()
        assert snapshot(url) == before, "the refused load left traces in the target"
    finally:
        target.dispose()
