"""``bundler usage sync``: carry late usage of migrated roots, once or every N seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bundler.options import json_option, print_json, progress_for_cli, spec_option

if TYPE_CHECKING:
    from bundler.usage.catchup import CatchUpResult


@click.group("usage")
def usage() -> None:
    """Late usage: what reaches the source after a root was migrated.

    \b
    Example:
      bundler usage sync --help
    """


@usage.command("sync")
@click.option("--source", required=True, metavar="URL", help="Source database (SQLAlchemy URL).")
@click.option("--target", required=True, metavar="URL", help="Target database (SQLAlchemy URL).")
@click.option(
    "--bundles",
    default="bundles",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the usage bundles.",
)
@click.option(
    "--decisions", type=click.Path(dir_okay=False), default=None, help="Decisions sidecar for the loads."
)
@click.option(
    "--xdrs",
    default="current",
    show_default=True,
    metavar="current|all|since=DATE",
    help="Besides every row that arrived after its root was exported: which window to complete.",
)
@click.option(
    "--every",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Run a pass every SECONDS until Ctrl-C or SIGTERM (default: one pass).",
)
@spec_option
@json_option
def sync_command(
    source: str,
    target: str,
    bundles: str,
    decisions: str | None,
    xdrs: str,
    every: float | None,
    spec: str | None,
    as_json: bool,
) -> None:
    """Carry the usage that reached the source after its root was migrated, each row once.

    For every migrated root (its marking export loaded in the target, still Exported in
    the source): the usage rows no export of it carried are exported into a usage bundle
    and loaded at once; each late row's charge moves the balances of its debit account
    and customer in the load's transaction. Re-runs carry nothing twice; a pass killed
    anywhere is finished by the next. Run one sync per target at a time.

    \b
    Example:
      bundler usage sync --source sqlite:///demo/source.db --target sqlite:///demo/target.db --bundles demo/usage
      bundler usage sync --source postgresql://old/porta --target postgresql://new/porta --every 300 --json
    """
    import threading

    from bundler.db import connect
    from bundler.recordings.sync import stop_on_signals
    from bundler.usage.catchup import CatchUpOptions, CatchUpResult, catch_up, follow

    source_engine, target_engine = connect(source), connect(target)
    options = CatchUpOptions(Path(bundles), decisions=decisions, xdrs=xdrs, spec=spec)
    stop = threading.Event()

    def said(name: str) -> None:
        click.echo(f"{name}: stopping after the current root", err=True)

    try:
        with stop_on_signals(stop, said), progress_for_cli() as progress:

            def one_pass() -> CatchUpResult:
                return catch_up(source_engine, target_engine, options, progress=progress, stop=stop)

            if every is None:
                report_pass(one_pass(), as_json)
                return

            passes = [0]

            def riding_out() -> CatchUpResult:
                """A pass; after the first, a database briefly away fails that pass only."""
                from sqlalchemy.exc import OperationalError

                from bundler import tracking

                try:
                    return one_pass()
                except OperationalError as exc:
                    if not passes[0]:
                        raise
                    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    click.echo(f"pass failed: {line}; next pass in {every:g} s", err=True)
                    return CatchUpResult(tracking.now())
                finally:
                    passes[0] += 1

            def on_pass(result: CatchUpResult) -> None:
                if as_json:
                    click.echo(json.dumps(result.summary(), ensure_ascii=False, default=str))
                else:
                    print_pass(result)

            follow(every, riding_out, stop=stop, on_pass=on_pass)
    finally:
        source_engine.dispose()
        target_engine.dispose()


def report_pass(result: CatchUpResult, as_json: bool) -> None:
    """One pass on stdout (JSON or lines); exit 1 when a root failed."""
    from bundler.errors import BundlerError

    if as_json:
        print_json(result.summary())
    else:
        print_pass(result)
    if result.failed:
        raise BundlerError(f"{len(result.failed)} root(s) failed (listed above)")


def print_pass(result: object) -> None:
    """One line per pass, then one per root that carried usage or failed."""
    from bundler.usage.catchup import CatchUpResult

    assert isinstance(result, CatchUpResult)
    click.echo(result.line())
    for root in result.roots:
        if root.state == "carried":
            click.echo(f"  {root.kind} {root.root_key}: {root.rows:,} row(s) in {', '.join(root.bundles)}")
        elif root.state == "failed":
            click.echo(f"  FAILED {root.kind} {root.root_key}: {root.message}")
