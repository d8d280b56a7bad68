"""Layered bundles checked with their layers (``inspect verify --with BUNDLE…``).

Alone, a layered bundle verifies with its references declared: the outside rows that name
(``from``) the earlier bundles whose loads map them. Given those bundles too, verify checks
that each of them comes from the same source system and carries every row it is named for,
so a layer that a load would stop at (exit 5) is found before the bundles travel.
"""

from __future__ import annotations

from collections.abc import Mapping

from bundler.bundle import Bundle
from bundler.errors import BundleInvalid
from bundler.inspect.verify_report import Problem, VerifyReport
from bundler.keys import describe
from bundler.manifest import MANIFEST, Outside

SHOWN = 5  # rows named in a problem; the rest are counted


def check_layers(bundle: Bundle, report: VerifyReport, layers: Mapping[str, Bundle]) -> None:
    """Every outside row a bundle says an earlier bundle carried is carried by it (when given)."""
    try:
        manifest = bundle.manifest
    except BundleInvalid:
        return  # reported by the manifest checks
    for bundle_id, layer in sorted(layers.items()):
        try:
            system = layer.manifest.source.system_id
        except BundleInvalid as exc:
            report.problems.append(
                Problem(MANIFEST, f"--with {layer.name} does not verify: {exc.problems[0]}")
            )
            continue
        if bundle_id in manifest.depends_on and system != manifest.source.system_id:
            report.problems.append(
                Problem(
                    MANIFEST,
                    f"depends on bundle {bundle_id} of source system {system}, not {manifest.source.system_id}",
                )
            )
    for table, entry in sorted(manifest.prerequisites.items()):
        if entry.source_bundles:
            _check_entry(report, table, entry, layers)


def _check_entry(report: VerifyReport, table: str, entry: Outside, layers: Mapping[str, Bundle]) -> None:
    absent_layers = [b for b in entry.source_bundles if b not in layers]
    if absent_layers:
        report.warnings.append(
            f"{table}: {len(entry.rows)} outside row(s) come from {', '.join(absent_layers)}, "
            "not given with --with: not checked"
        )
        return
    carried: set[str] = set()
    for bundle_id in entry.source_bundles:
        layer = layers[bundle_id]
        if table in layer.manifest.tables:
            column = layer.read_table(table, columns=[entry.column]).column(0)
            carried.update(str(v) for v in column.to_pylist() if v is not None)
    absent = [r for r in entry.rows if str(r.value) not in carried]
    if absent:
        shown = "; ".join(describe(r.key) for r in absent[:SHOWN])
        more = f"; … and {len(absent) - SHOWN} more" if len(absent) > SHOWN else ""
        report.problems.append(
            Problem(
                MANIFEST,
                f"{len(absent)} outside row(s) of {table} are not carried by {', '.join(entry.source_bundles)}, "
                f"which the manifest names for them: {shown}{more}",
                table=table,
            )
        )
