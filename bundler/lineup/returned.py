"""Roots a reverse transfer returned to the source are open again for the lineup.

A root the lineup migrated and ``bundler reverse`` carried back is recorded as done in the
lineup and as loaded in the target; its export in the source is recorded as ``reversed``.
Such a root is migrated again (the load removes its stale copy in the target first).
"""

from __future__ import annotations

import sqlalchemy as sa

from bundler import tracking
from bundler.db import begin_write
from bundler.lineup.queue import lineup_table, retrying, selection

REVERSED = "reversed"  # bundler_exports.status of an export a reverse bundle undid (bundler.reverse.common)


def reversed_exports(source: sa.Engine, bundle_ids: set[str]) -> set[str]:
    """Those of ``bundle_ids`` that the source records as reversed (returned by a reverse bundle)."""
    wanted = sorted(b for b in bundle_ids if b)
    if not wanted:
        return set()
    exports = tracking.exports_table
    with source.connect() as conn:
        if not sa.inspect(conn).has_table(exports.name):
            return set()
        return set(
            conn.execute(
                sa.select(exports.c.bundle_id).where(
                    exports.c.bundle_id.in_(wanted), exports.c.status == REVERSED
                )
            ).scalars()
        )


def reopen_returned(
    source: sa.Engine, target: sa.Engine, source_system: str, phase: str, wanted: set[tuple[str, str]]
) -> int:
    """Put the selected roots done by a bundle the source has reversed back to pending; how many."""
    t = lineup_table
    with target.connect() as conn:
        done = {
            str(r.bundle_id)
            for r in conn.execute(
                sa.select(t.c.bundle_id)
                .where(t.c.source_system == source_system, t.c.phase == phase, t.c.state == "done")
                .where(selection(wanted))
            )
            if r.bundle_id
        }
    back = reversed_exports(source, done)
    if not back:
        return 0

    def once() -> int:
        with begin_write(target) as conn:
            return int(
                conn.execute(
                    sa.update(t)
                    .where(t.c.source_system == source_system, t.c.phase == phase, t.c.state == "done")
                    .where(t.c.bundle_id.in_(sorted(back)))
                    .values(
                        state="pending",
                        message="returned to the source by a reverse transfer: migrated again",
                    )
                ).rowcount
            )

    return retrying(once)
