"""What both halves of a reverse transfer share: its names, its limits, and how a pk
kept as text (in a ledger, in a tracking table, in a manifest) becomes a column's value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bundler.errors import BundleInvalid
from bundler.graph import Graph, TableSpec
from bundler.manifest import Manifest, RootRef

LIMITS = (
    "usage must be returned before the billing period closes in the source (a closed period "
    "does not bill the xDRs returned into it);",
    "configuration changed on the target (products, tariffs, features, new accounts) is lost: "
    "only usage, balances and statuses go back;",
    "a customer terminated in the source cannot be restored (reverse load refuses it);",
    "an account terminated in the target but alive in the source becomes active again "
    "(reverse load warns about each one).",
)

ROOT_KIND = "customer"
REVERSE_KIND = "reverse"
REVERSED = "reversed"  # bundler_exports.status of an export a reverse bundle undid


@dataclass(frozen=True)
class Origin:
    """The load that brought the root into the target, and where it came from."""

    export_bundle: str  # the bundle id: the source's export
    source_system: str
    root_source_pk: str


def reverse_section(manifest: Manifest, name: str) -> dict[str, Any]:
    """The manifest's ``reverse`` section (BundleInvalid when a bundle named ``name`` has none)."""
    if manifest.reverse is None:
        raise BundleInvalid(name, ["manifest.json of a reverse bundle has no reverse section"])
    return manifest.reverse


def root_of(manifest: Manifest, name: str) -> RootRef:
    """The manifest's root (BundleInvalid when a bundle named ``name`` has none)."""
    if manifest.root is None:
        raise BundleInvalid(name, ["manifest.json of a reverse bundle names no root"])
    return manifest.root


def parent_columns(graph: Graph, spec: TableSpec) -> set[str]:
    """The columns of usage table ``spec`` its usage children reference (none without children):
    a reverse bundle carries the children of the rows it returns, and the load maps these."""
    return {
        ref.target_column
        for child, ref in graph.owned_children[spec.name]
        if graph.usage_parent(child) == ref
    }
