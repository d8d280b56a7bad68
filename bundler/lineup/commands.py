"""``bundler migrate``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from bundler.options import json_option, print_json, progress_for_cli, spec_option


@click.command("migrate")
@click.option("--source", required=True, metavar="URL", help="Source database (SQLAlchemy URL).")
@click.option("--target", required=True, metavar="URL", help="Target database (SQLAlchemy URL).")
@click.option("--customer", "customers", multiple=True, metavar="ID_OR_NAME", help="A customer (repeatable).")
@click.option("--reseller", "resellers", multiple=True, metavar="ID_OR_NAME", help="A reseller (repeatable).")
@click.option(
    "--vendor",
    "vendors",
    multiple=True,
    metavar="ID_OR_NAME",
    help="A vendor (repeatable); vendors go first (the graph says so).",
)
@click.option(
    "--all",
    "all_",
    is_flag=True,
    help="Every top-level customer and reseller that is not terminated (with roots named too: each once).",
)
@click.option("--where", default=None, metavar="SQL", help="With --all: an SQL condition on the root table.")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Roots migrated at a time."
)
@click.option(
    "--bundles",
    default="bundles",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the bundles (kept after a failure, for the retry).",
)
@click.option(
    "--decisions", type=click.Path(dir_okay=False), default=None, help="Decisions sidecar for every load."
)
@click.option(
    "--xdrs",
    default="current",
    show_default=True,
    metavar="current|all|none|since=DATE",
    help="Usage window.",
)
@click.option(
    "--usage-only", is_flag=True, help="Second phase: the usage of roots migrated earlier with --xdrs none."
)
@spec_option
@json_option
def migrate_command(
    source: str,
    target: str,
    customers: tuple[str, ...],
    resellers: tuple[str, ...],
    vendors: tuple[str, ...],
    all_: bool,
    where: str | None,
    workers: int,
    bundles: str,
    decisions: str | None,
    xdrs: str,
    usage_only: bool,
    spec: str | None,
    as_json: bool,
) -> None:
    """Migrate roots one by one: export, load at once, next; N at a time, resumable.

    The lineup is kept in the target (bundler_lineup): several workers, on several
    machines, can run the same command and share it. Kinds go in the entity graph's
    order (vendors before the customers whose DID numbers they own): no root of a later
    kind is claimed before every root of the earlier kinds is done or failed. A re-run
    skips what the target already holds, finishes or restores an export whose process
    died (see bundler recover), loads a bundle exported but not loaded, and retries what
    failed. A failed root gets its status restored in the source and keeps its bundle;
    the run goes on and exits 1 listing every failure. Ctrl-C stops after the roots in
    flight.

    \b
    Example:
      bundler migrate --source sqlite:///demo/source.db --target sqlite:///demo/target.db --all --workers 2
      bundler migrate --source postgresql://old/porta --target postgresql://new/porta \\
          --customer acme --customer 1042 --decisions decisions.json --json
      bundler migrate --source … --target … --all --xdrs none      (then later: --usage-only)
    """
    from bundler.db import connect
    from bundler.errors import BundlerError, UsageError
    from bundler.lineup import LineupOptions, RootSelector, run_lineup

    selectors = [RootSelector("vendor", tuple(vendors))] if vendors else []
    if resellers:
        selectors.append(RootSelector("reseller", tuple(resellers)))
    if customers:
        selectors.append(RootSelector("customer", tuple(customers)))
    if all_:
        selectors += [
            RootSelector("reseller", all=True, where=where),
            RootSelector("customer", all=True, where=where),
        ]
    elif where:
        raise UsageError("--where goes with --all")
    if not selectors:
        raise UsageError("name what to migrate", hint="--customer, --reseller, --vendor or --all")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo("stopping after the roots in flight (Ctrl-C again to abort at once)", err=True)

    previous = (
        signal.signal(signal.SIGINT, on_signal)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        with progress_for_cli() as progress:
            result = run_lineup(
                connect(source),
                connect(target),
                selectors,
                LineupOptions(
                    Path(bundles), decisions=decisions, xdrs=xdrs, usage_only=usage_only, spec=spec
                ),
                workers=workers,
                progress=progress,
                stop=stop,
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    summary = result.summary()
    summary["open_references"] = _still_open(connect(target))
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)
        for line in summary["open_references"]:
            click.echo(f"  open: {line}")
    if result.failed:
        raise BundlerError(f"{len(result.failed)} of {len(result.outcomes)} root(s) failed (listed above)")


def _still_open(target: Any) -> list[str]:
    """The references loads left open in the target (their root is not migrated yet)."""
    from bundler.load.crossroot import open_references

    with target.connect() as conn:
        return [o.line() for o in open_references(conn)]


def print_summary(summary: dict[str, Any]) -> None:
    d = summary["downtime_s"]

    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}s"

    click.echo(
        f"{summary['done']} root(s) migrated, {summary['failed']} failed, "
        f"{summary['skipped_already_migrated']} already in the target; "
        f"{summary['rows']:,} rows, {summary['bytes']:,} bytes in {summary['seconds']:.1f}s"
    )
    click.echo(f"downtime per root: p50 {sec(d['p50'])}, p95 {sec(d['p95'])}, max {sec(d['max'])}")
    for failure in summary["failures"]:
        click.echo(f"  FAILED {failure['kind']} {failure['root']}: {failure['reason']}")
    if summary["stopped_early"]:
        click.echo("stopped early: run the same command again to finish the rest")
