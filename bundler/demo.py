"""``bundler demo``: a source and a target in SQLite, and a migration between them.

Creates ``demo/source.db`` (release r1) and ``demo/target.db`` (release r2), seeds both
(the target with part of the source's configuration under other ids, some of it
different, so the load has real decisions to take), migrates the vendors, a reseller and
a batch of customers with the decisions sidecar the project ships
(``examples/decisions.json``), and prints what happened and what to try next.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
DECISIONS = ROOT / "examples" / "decisions.json"


def _program() -> str:
    """How to call bundler as this process was called: ``bundler`` when that is on the PATH,
    else the path it was run by (``.venv/bin/bundler``)."""
    called = Path(sys.argv[0])
    if called.name != "bundler":
        return "bundler" if shutil.which("bundler") else f"{sys.executable} -m bundler"
    on_path = shutil.which("bundler")
    if on_path and Path(on_path).resolve() == called.resolve():
        return "bundler"
    return shlex.quote(str(called))


def run_demo(
    folder: Path,
    *,
    customers: int = 8,
    workers: int = 2,
    echo: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build the demo in ``folder``; returns the lineup's summary."""
    import click

    echo = echo or click.echo
    from bundler import tracking
    from bundler.billing.seed import init_db, seed_source, seed_target
    from bundler.db import begin_write, connect
    from bundler.lineup import LineupOptions, RootSelector, run_lineup
    from bundler.lineup.commands import print_summary

    folder.mkdir(parents=True, exist_ok=True)
    for name in (
        "source.db",
        "target.db",
        "source.db-wal",
        "source.db-shm",
        "target.db-wal",
        "target.db-shm",
    ):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / "bundles", ignore_errors=True)
    source_url, target_url = f"sqlite:///{folder / 'source.db'}", f"sqlite:///{folder / 'target.db'}"
    source, target = connect(source_url, create=True), connect(target_url, create=True)

    # the operator's usage runs up to now, so each customer's current billing period holds some
    today = now or tracking.now().replace(microsecond=0)
    echo(f"seeding {source_url} (release r1) …")
    counts = seed_source(
        source, release="r1", customers=12, resellers=2, xdrs_per_account=60, destinations=1500, now=today
    )
    with begin_write(source) as conn:
        tracking.register_system(conn, "r1")
    echo(
        f"  {sum(counts.values()):,} rows: {counts['customers']} customers, {counts['accounts']} accounts, "
        f"{counts['xdrs']:,} xDRs, {counts['rates']:,} rates"
    )
    # call recordings with real files in a store, for `bundler recordings sync`
    from bundler.billing.recordings import make_recordings

    store = folder / "recordings" / "source"
    shutil.rmtree(folder / "recordings", ignore_errors=True)
    store.mkdir(parents=True)
    with begin_write(source) as conn:
        conn.execute(sa.text("DELETE FROM call_recordings"))  # the seed's have no files
    made = make_recordings(
        source, str(store), 40, seed=1, when=today - timedelta(days=3), step=timedelta(minutes=90)
    )
    echo(f"  {len(made)} call recordings in {store}")
    echo(f"seeding {target_url} (release r2) with half of that configuration, some of it different …")
    init_db(target, "r2")
    target_counts = seed_target(
        target, release="r2", overlap=0.5, differing=0.3, destinations=1500, now=today
    )
    with begin_write(target) as conn:
        tracking.register_system(conn, "r2")
    echo(f"  {sum(target_counts.values()):,} rows of prerequisites and configuration, no customers")

    reseller, chosen = _pick_roots(source, customers)
    counterparts = vendor_counterparts(source)
    if counterparts:  # a vendor keeps its bilateral traffic exchange: its customer side goes first
        echo(f"pre-configuring the vendors' customer counterparts on the target: {', '.join(counterparts)} …")
        first_run = run_lineup(
            source,
            target,
            [RootSelector("customer", tuple(counterparts))],
            LineupOptions(folder / "bundles", decisions=DECISIONS),
        )
        if first_run.failed:
            print_summary(first_run.summary())
    selectors = [
        RootSelector("vendor", all=True),
        RootSelector("reseller", (reseller,)),
        RootSelector("customer", tuple(chosen)),
    ]
    echo(
        f"migrating the vendors, reseller {reseller!r} and {len(chosen)} customers, {workers} at a time, "
        f"with the decisions in {DECISIONS.relative_to(ROOT)} …"
    )
    result = run_lineup(
        source,
        target,
        selectors,
        LineupOptions(folder / "bundles", decisions=DECISIONS, now=today),
        workers=workers,
    )
    summary = result.summary()
    echo("")
    print_summary(summary)
    first = next((o for o in result.done if o.kind == "customer"), None)
    bundles = sorted((folder / "bundles").glob("customer-*.bundle"))
    echo("")
    prog = _program()
    q = shlex.quote
    echo(f"next, try{' (or . .venv/bin/activate and then bundler …)' if prog != 'bundler' else ''}:")
    echo(f"  {prog} inspect summary {q(str(folder))}/bundles/*.bundle")
    if bundles:
        echo(f"  {prog} inspect verify {q(str(bundles[0]))}")
        echo(
            f"  {prog} inspect query {q(str(bundles[0]))} 'SELECT i_account, count(*) AS calls, sum(charged_amount) AS charged FROM xdrs GROUP BY 1'"
        )
    echo(f"  {prog} list --source {q(source_url)}")
    if first is not None:
        name = _name(first.root_key)
        echo(
            f"  {prog} reverse export --target {q(target_url)} --customer {q(name)} --out {q(str(folder))}/reverse"
        )
        echo(f"  {prog} clean --target {q(target_url)} --customer {q(name)} --dry-run")
    echo(
        f"  {prog} recordings sync --source {q(source_url)} --target {q(target_url)} "
        f"--from {q(str(folder))}/recordings/source --to {q(str(folder))}/recordings/target"
    )
    echo(
        f"  {prog} migrate --source {q(source_url)} --target {q(target_url)} --all "
        f"--decisions {DECISIONS.relative_to(ROOT)} --bundles {q(str(folder))}/bundles --plan"
    )
    source.dispose()
    target.dispose()
    return summary


def _name(root_key: str) -> str:
    import json

    return str(json.loads(root_key).get("name", root_key))


def vendor_counterparts(source: sa.Engine) -> list[str]:
    """The customers that vendors also are (bilateral traffic exchange): the target must have
    them before their vendors are loaded."""
    with source.connect() as conn:
        return [
            str(name)
            for name in conn.execute(
                sa.text(
                    "SELECT c.name FROM customers c JOIN vendors v ON v.i_customer = c.i_customer "
                    "ORDER BY c.i_customer"
                )
            ).scalars()
        ]


def _pick_roots(source: sa.Engine, customers: int) -> tuple[str, list[str]]:
    """The first reseller and the first ``customers`` open top-level retail customers and distributors."""
    with source.connect() as conn:
        reseller = (
            conn.execute(
                sa.text(
                    "SELECT name FROM customers WHERE i_customer_type = 2 AND i_parent IS NULL "
                    "AND bill_status <> 'C' ORDER BY i_customer"
                )
            )
            .scalars()
            .first()
        )
        chosen = list(
            conn.execute(
                sa.text(
                    "SELECT name FROM customers WHERE i_customer_type IN (1, 3) AND i_parent IS NULL "
                    "AND bill_status = 'O' AND i_customer NOT IN "
                    "(SELECT i_customer FROM vendors WHERE i_customer IS NOT NULL) ORDER BY i_customer"
                )
            ).scalars()
        )[:customers]
    return str(reseller), [str(c) for c in chosen]
