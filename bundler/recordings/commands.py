"""``bundler recordings sync``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from bundler.options import (
    json_option,
    print_json,
    progress_for_cli,
    source_option,
    spec_option,
    target_option,
)

if TYPE_CHECKING:
    from bundler.recordings.sync import PassReport

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


@click.group("recordings", context_settings=CONTEXT_SETTINGS)
def recordings() -> None:
    """Keep the source's call recordings mirrored on the target.

    \b
    Example:
      bundler recordings sync --source sqlite:///demo/source.db --target sqlite:///demo/target.db \\
          --from demo/recordings/source --to demo/recordings/target
    """


@recordings.command("sync")
@source_option
@target_option
@click.option(
    "--from",
    "from_store",
    required=True,
    metavar="STORE",
    help="The source's recordings store (folder or URI).",
)
@click.option(
    "--to", "to_store", required=True, metavar="STORE", help="The target's recordings store (folder or URI)."
)
@click.option(
    "--every",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Run a pass every SECONDS until Ctrl-C or SIGTERM (default: one pass).",
)
@click.option(
    "--lookback",
    type=click.FloatRange(min=0),
    default=3600,
    show_default=True,
    metavar="SECONDS",
    help="Window before the watermark re-checked each pass for rows that arrived late.",
)
@click.option(
    "--full", is_flag=True, help="Re-check every source row, not only the new ones (first pass only)."
)
@spec_option
@json_option
def sync_command(
    source: str,
    target: str,
    from_store: str,
    to_store: str,
    every: float | None,
    lookback: float,
    full: bool,
    spec: str | None,
    as_json: bool,
) -> None:
    """Copy the recordings that appeared in the source since the last pass: file, then row.

    Run it on the target. Every recording of the mirrored table(s) (scope "mirror" in the
    entity graph) that the target lacks is brought over, for every customer, migrated or
    not: its file is copied from the --from store to the --to store, checked by sha256 and
    size, and only then its metadata row is written. A watermark kept in the target makes
    passes incremental; a killed pass resumes where it stopped; the target's own
    recordings are never touched. A file missing in the source is reported, and retried
    every pass, but does not fail the pass (the exit code stays 0).

    Stores are folders or pyarrow filesystem URIs (s3://bucket/prefix?region=…, gs://…).
    With --every, one line of JSON per pass (--json) or one summary line per pass.

    \b
    Example:
      bundler recordings sync --source sqlite:///demo/source.db --target sqlite:///demo/target.db \\
          --from demo/recordings/source --to demo/recordings/target
      bundler recordings sync --source postgresql://old/porta --target postgresql://new/porta \\
          --from s3://rec-old/calls --to s3://rec-new/calls --every 300 --json
    """
    import threading
    from datetime import timedelta

    from bundler.db import connect
    from bundler.graph import load_graph
    from bundler.recordings.store import open_store
    from bundler.recordings.sync import run_every, stop_on_signals, sync_recordings

    graph = load_graph(spec) if spec else None
    source_engine = connect(source)
    target_engine = connect(target)
    stores = (open_store(from_store), open_store(to_store))
    stop = threading.Event()
    passes = [0]

    try:
        with stop_on_signals(stop, _say_stopping), progress_for_cli() as progress:

            def one_pass() -> PassReport:
                report = sync_recordings(
                    source_engine,
                    target_engine,
                    *stores,
                    graph=graph,
                    progress=progress,
                    stop=stop,
                    lookback=timedelta(seconds=lookback),
                    full=full and passes[0] == 0,
                )
                passes[0] += 1
                return report

            if every is None:
                report = one_pass()
                if as_json:
                    print_json(report.to_dict())
                else:
                    print_report(report)
                return

            on_pass = _print_json_line if as_json else print_report
            run_every(every, one_pass, stop=stop, on_pass=on_pass, on_error=_outage_handler(passes, every))
    finally:
        source_engine.dispose()
        target_engine.dispose()


def _print_json_line(report: PassReport) -> None:
    """A pass of --every --json: its report as one line of JSON."""
    click.echo(json.dumps(report.to_dict(), ensure_ascii=False, default=str))


def _say_stopping(name: str) -> None:
    """The first SIGINT or SIGTERM: say how the pass stops, and how to abort it at once."""
    what = "Ctrl-C again to abort at once" if name == "SIGINT" else "SIGINT to abort at once"
    click.echo(f"{name}: stopping after the current file ({what})", err=True)


def _outage_handler(passes: list[int], every: float) -> Callable[[Exception], bool]:
    """``on_error`` of :func:`run_every`: True (carry on) for an outage after the first pass."""
    from sqlalchemy.exc import OperationalError

    from bundler.recordings.store import StoreError

    def on_error(exc: Exception) -> bool:
        # a misconfiguration fails the first pass at once; later passes ride out outages
        if passes[0] > 0 and isinstance(exc, OperationalError | StoreError | OSError):
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"pass failed: {message}; next pass in {every:g} s", err=True)
            return True
        return False

    return on_error


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def print_report(report: PassReport) -> None:
    """One summary line per pass, then the failures, one per line."""
    click.echo(_summary(report))
    for failure in report.failures:
        key = ", ".join(f"{k}={v}" for k, v in failure.key.items())
        click.echo(f"  FAILED {failure.table} {key} ({failure.file_name}): {failure.reason}")
    if report.failed > len(report.failures):
        click.echo(f"  … and {report.failed - len(report.failures)} more failure(s)")


def _summary(report: PassReport) -> str:
    """The summary line of a pass."""
    extra = []
    if report.in_place:
        extra.append(f"{report.in_place} already in place")
    if report.redone:
        extra.append(f"{report.redone} copied again after a failed check")
    more = f" ({', '.join(extra)})" if extra else ""
    marks = [
        f"{t.table} up to {t.watermark_time:%Y-%m-%d %H:%M:%S}"
        for t in report.tables
        if t.watermark_time is not None
    ]
    return (
        f"pass {report.started_at:%Y-%m-%d %H:%M:%S}: copied {report.copied} file(s), "
        f"{_size(report.copied_bytes)}{more}; skipped {report.skipped} ({_size(report.skipped_bytes)}); "
        f"failed {report.failed} ({_size(report.failed_bytes)}); {report.seconds:.1f} s"
        + (f"; watermark {', '.join(marks)}" if marks else "")
        + ("; stopped early" if report.stopped else "")
    )
