"""Sensitive columns are masked in every output, unless --show-sensitive."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from bundler.cli import main
from bundler.export import ExportOptions, export_root
from tests.export import fixture
from tests.export.fixture import NOW

SECRETS = ("s3cr3t", "ZOË ÅSTRÖM", "************4242", "1234", "9999")


def _with_new_pin(bundle: Path, to: Path) -> Path:
    """A copy of ``bundle`` whose SIM card PIN changed (checksums kept consistent)."""
    copy = Path(shutil.copytree(bundle, to / bundle.name))
    file = copy / "tables" / "sim_cards.parquet"
    table = pq.read_table(file)
    i = table.schema.get_field_index("pin")
    table = table.set_column(
        i, table.schema.field(i), pa.array(["9999"] * table.num_rows, table.schema.field(i).type)
    )
    pq.write_table(table, file)
    doc = json.loads((copy / "manifest.json").read_text())
    doc["tables"]["sim_cards"].update(
        bytes=file.stat().st_size, sha256=hashlib.sha256(file.read_bytes()).hexdigest()
    )
    (copy / "manifest.json").write_text(json.dumps(doc))
    return copy


def test_sensitive_values_are_absent_from_every_output(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    acme = export_root(
        source, "customer", "acme", tmp_path / "a", options=ExportOptions(now=NOW, xdrs="all")
    ).path
    changed = _with_new_pin(acme, tmp_path / "b")
    runner = CliRunner()
    commands = [
        ["inspect", "summary", str(acme), "--json"],
        ["inspect", "diff", str(acme), str(changed)],
        ["inspect", "diff", str(acme), str(changed), "--json"],  # outputs[2]
    ]
    every = "SELECT * FROM accounts, payment_methods, sim_cards"
    for fmt in ("table", "json"):
        commands.append(["inspect", "query", str(acme), every, "--format", fmt])
    outputs = []
    for args in commands:
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
        assert not [s for s in SECRETS if s in result.output], (args, result.output)
        outputs.append(result.stdout)
    sims = next(t for t in json.loads(outputs[2])["tables"] if t["table"] == "sim_cards")
    assert sims["changed"] == 1 and sims["changed_columns"] == {"pin": 1}  # compared on real values
    shown = runner.invoke(
        main, ["inspect", "query", str(acme), "SELECT pin FROM sim_cards", "--show-sensitive"]
    )
    assert "1234" in shown.stdout
    revealed = runner.invoke(main, ["inspect", "diff", str(acme), str(changed), "--show-sensitive"])
    assert "'1234' → '9999'" in revealed.stdout
