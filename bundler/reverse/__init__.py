"""Retrop: carry a customer back from the target to the source, usage and balances.

An emergency measure for a customer who must return to the source system after a load.
Two steps, each a library call the CLI wraps:

``reverse_export(target_engine, customer, out_dir)`` runs against the **target** only:

1. finds the customer and the load that brought it (``bundler_loads``); a customer no
   load brought, or one that came inside its reseller's bundle, is refused, naming why;
2. marks it Exported in the target (the customer and every owned row with a status, as an
   export does; recorded in the target's ``bundler_exports`` with each row's previous
   status, so a failure restores them);
3. reads the customer's usage (xDRs) in one snapshot and sorts each row:

   - **already in the source**: a load from that source created it (the ledger says so;
     a change made to it on the target stays there);
   - **returnable**: every reference maps back to the source. References to owned and
     shared rows map through the ledger of the loads from that source (target pk →
     source pk); references to prerequisites, which loads match by natural key and never
     copy, keep the target's value and travel by natural key in the bundle's
     ``prerequisites``, for ``reverse load`` to match in the source;
   - **not returnable**: some reference is to a row made on the target (an account, an
     invoice, a destination no load brought), or to nothing at all;

   a usage row that belongs to another usage row (an invoice line of its invoice) is read
   with its parents and returns with its parent: its owner reference keeps the target's
   value, which ``reverse load`` maps to the id the source gives the parent; one whose
   parent is not returned (already in the source, or not returnable) is reported;

4. writes a **reverse bundle** (kind ``reverse``, the ordinary format, verified by
   ``inspect verify``): the returnable rows with source ids, the prerequisites they
   need, and in the manifest's ``reverse`` section the source system and export it
   returns to, the customer's rows with their status and balance as they stand in the
   target (a balance where the graph marks one: the customer's, a debit account's), and
   every row that cannot be returned, with the reasons.

``reverse_load(source_engine, bundle)`` runs against the **source**, in one transaction:

1. refuses a bundle of another kind, one made for another source system (or for an
   export this source has no record of), and a customer the source has terminated;
2. checks that the bundle's release and the source's agree on the usage tables (a
   reverse transfer translates nothing: the columns must be the same, or it stops);
3. matches the prerequisites by natural key; rows whose prerequisite the source lacks
   are not returned (and reported); rows whose natural key the source already holds are
   skipped;
4. inserts the rest with new source ids, sets each balance to the target's figure,
   gives every row the export marked Exported its previous status back (warning about a
   row terminated in the target that becomes alive again), records the bundle in the
   source's ``bundler_loads`` and ``bundler_ledger``, and the export as ``reversed``;
5. returns (and the CLI prints and writes beside the bundle) the report for the
   administrator: what was not returned, and every balance adjustment made.

Applying the same reverse bundle again changes nothing and says so.

The limits, stated in ``--help`` too (:data:`LIMITS`): usage must be returned before the
billing period closes; configuration changed on the target is lost; a customer
terminated in the source cannot be restored; an account terminated in the target but
alive in the source becomes active again.

The package, along those steps: :mod:`~bundler.reverse.export` (on the target) reads
with :mod:`~bundler.reverse.reader`; :mod:`~bundler.reverse.load` (on the source) checks
with :mod:`~bundler.reverse.compat` and applies with :mod:`~bundler.reverse.apply`;
:mod:`~bundler.reverse.report` holds the results and reports, :mod:`~bundler.reverse.common`
the names both halves share.

The names below are loaded on first use, so ``bundler --help`` (which imports the
commands) stays free of SQLAlchemy and Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bundler.reverse.common import LIMITS
    from bundler.reverse.export import reverse_export
    from bundler.reverse.load import reverse_load
    from bundler.reverse.report import ReverseExportResult, ReverseLoadResult

__all__ = ["LIMITS", "ReverseExportResult", "ReverseLoadResult", "reverse_export", "reverse_load"]

_HOMES = {
    "LIMITS": "bundler.reverse.common",
    "ReverseExportResult": "bundler.reverse.report",
    "ReverseLoadResult": "bundler.reverse.report",
    "reverse_export": "bundler.reverse.export",
    "reverse_load": "bundler.reverse.load",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
