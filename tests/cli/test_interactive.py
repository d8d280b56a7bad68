"""--interactive: one key per answer, a counter, a capped summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from bundler.cli import main
from bundler.export import export_root
from bundler.load import load_bundle
from tests.export import fixture
from tests.load.test_load import OPTIONS, overlapping


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
