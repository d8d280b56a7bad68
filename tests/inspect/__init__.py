"""Tests of ``bundler inspect``, and helpers to make (and break) bundles for them.

Bundles are exported from the hand-made fixture of ``tests/export/fixture.py`` into SQLite
(inspect needs no database: SQLite is only the exporter's source). The helpers below make
"hand-crafted" broken bundles: a table rewritten with pyarrow and its manifest entry fixed
to match (rows, bytes, sha256, columns, totals), so only the intended problem remains.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bundler.bundle import MANIFEST, sha256_file

# name -> (kind, ident, ExportOptions kwargs); order matters: "usage" needs "customer-nousage" first
EXPORTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "customer": ("customer", "acme", {"mark": False}),
    "vendor": ("vendor", "Carrier Ä", {"mark": False}),
    "reseller": ("reseller", "reseller-r", {"mark": False}),
    "customer-nousage": ("customer", "acme", {"xdrs": "none"}),
    "usage": ("customer", "acme", {"usage_only": True, "xdrs": "all"}),
}


def export_fixture_bundles(workdir: Path) -> dict[str, Path]:
    """Every kind of bundle of the fixture (customer, vendor, reseller, config, usage) in ``workdir``."""
    from bundler.export import ConfigSelection, ExportOptions, export_config, export_root
    from tests.export.fixture import NOW, build

    workdir.mkdir(parents=True, exist_ok=True)
    engine = build(f"sqlite:///{workdir / 'source.db'}")
    out = workdir / "bundles"
    try:
        paths = {
            name: export_root(engine, kind, ident, out, options=ExportOptions(now=NOW, **opts)).path
            for name, (kind, ident, opts) in EXPORTS.items()
        }
        paths["config"] = export_config(engine, [ConfigSelection("products")], out, now=NOW).path
    finally:
        engine.dispose()
    return paths


def copy_bundle(src: Path, dest_dir: Path) -> Path:
    """A copy of a bundle folder in ``dest_dir`` (to break without touching the original)."""
    dest = dest_dir / src.name
    shutil.copytree(src, dest)
    return dest


def read_manifest(bundle: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    return doc


def write_manifest(bundle: Path, doc: dict[str, Any]) -> None:
    (bundle / MANIFEST).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit ``manifest.json`` by hand: ``change`` alters the parsed document in place."""
    doc = read_manifest(bundle)
    change(doc)
    write_manifest(bundle, doc)


def _fix_totals(doc: dict[str, Any]) -> None:
    doc["totals"] = {
        "rows": sum(e["rows"] for e in doc["tables"].values()),
        "bytes": sum(e["bytes"] for e in doc["tables"].values()),
    }


def write_table(bundle: Path, table: str, data: pa.Table, *, scope: str | None = None) -> None:
    """Write ``tables/<table>.parquet`` and make the manifest agree with it (a consistent forgery)."""
    path = bundle / "tables" / f"{table}.parquet"
    pq.write_table(data, path, compression="zstd", store_decimal_as_integer=True)
    doc = read_manifest(bundle)
    entry = doc["tables"].get(table) or {"file": f"tables/{table}.parquet", "scope": scope or "owned"}
    entry.update(
        rows=data.num_rows,
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        columns={f.name: str(f.type) for f in data.schema},
    )
    doc["tables"][table] = entry
    _fix_totals(doc)
    write_manifest(bundle, doc)


def rewrite_table(bundle: Path, table: str, change: Callable[[pa.Table], pa.Table]) -> None:
    """Read a (small) table, let ``change`` alter it, write it back with a matching manifest."""
    data = pq.read_table(bundle / "tables" / f"{table}.parquet")
    write_table(bundle, table, change(data))


def drop_table(bundle: Path, table: str) -> None:
    """Remove a table consistently: its file and its manifest entry."""
    (bundle / "tables" / f"{table}.parquet").unlink()
    doc = read_manifest(bundle)
    del doc["tables"][table]
    _fix_totals(doc)
    write_manifest(bundle, doc)


def set_column(data: pa.Table, column: str, values: list[Any], type_: pa.DataType | None = None) -> pa.Table:
    """``data`` with ``column`` replaced by ``values`` (of the column's type unless ``type_``)."""
    index = data.schema.get_field_index(column)
    field = data.schema.field(index)
    new_type = type_ or field.type
    return data.set_column(
        index, field.with_type(new_type).with_nullable(True), pa.array(values, type=new_type)
    )
