"""--interactive: one key per answer, a counter, a capped summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler.cli import main
from bundler.export import export_root
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import ROWS
from tests.load.test_load import OPTIONS, overlapping
from tests.load.test_money_and_keys import _target, _without_unique


def test_interactive_takes_single_keys_and_counts(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "out", options=OPTIONS).path
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS).path
    target_url = new_db("sqlite")
    load_bundle(fixture.build_target(target_url, "r2", shared=overlapping()), vendor)
    sidecar = tmp_path / "answers.json"
    # product_groups: reuse (Enter), just this row (Enter); then 'c' + 'y' for the rest; 'x' is ignored
    keys = "\r\rxcy" + "r" * 10 + "n" * 10
    done = CliRunner().invoke(
        main,
        ["load", "--target", target_url, str(acme), "--interactive", "--decisions", str(sidecar)],
        input=keys,
    )
    assert done.exit_code == 0, done.output
    assert (
        "question 1 of 3: product_groups" in done.stderr
        and "[R/m/c/a]" in done.stderr
        and "[y/N]" in done.stderr
    )
    doc = json.loads(sidecar.read_text())
    assert doc["tables"]["products"]["default"] == "create"  # "c", then "y": the whole table
    assert "question 3 of 3: tariffs" in done.stderr and "created 52 row(s), reused 4" in done.stdout


def test_interactive_ambiguous_key_lists_candidates_and_takes_a_number(
    new_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fixture.build_metadata  # a target whose access level names are not unique
    loose = _without_unique("r2", "access_levels", "name")
    monkeypatch.setattr(fixture, "build_metadata", lambda r: loose if r == "r2" else original(r))
    level = ROWS["access_levels"][0]
    twin = dict(level, i_acl=40, description="the same name, another level")
    shared = {t: ROWS[t] for t in ("product_groups", "destinations", "tariffs", "products", "rates")}
    source = fixture.build(new_db("sqlite"))
    target = _target(new_db, "sqlite", source, tmp_path, access_levels=[level, twin], **shared)
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS).path
    sidecar = tmp_path / "answers.json"
    sidecar.write_text(json.dumps({"format": "bundler-decisions", "version": 1, "default": "reuse"}))
    url = target.url.render_as_string(hide_password=False)
    done = CliRunner().invoke(
        main,
        ["load", "--target", url, str(acme), "--interactive", "--decisions", str(sidecar)],
        input="2\nr",  # the second candidate, reused
    )
    assert done.exit_code == 0, done.output
    assert "matches 2 target rows" in done.stderr
    assert "1) target_pk 101" in done.stderr and "2) target_pk 140" in done.stderr
    assert "description: bundle" in done.stderr  # the twin's differing column is shown
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT i_acl FROM customers WHERE name = 'acme'")).scalar_one() == 140
    (row,) = json.loads(sidecar.read_text())["tables"]["access_levels"]["rows"]
    assert (row["action"], row["target_pk"]) == ("reuse", 140)
