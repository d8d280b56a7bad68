"""``bundler migrate``."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bundler.options import (
    json_option,
    print_json,
    progress_for_cli,
    root_option,
    root_pairs,
    source_option,
    spec_option,
    target_option,
)
from bundler.secure.options import security_options


@click.command("migrate")
@source_option
@target_option
@click.option("--customer", "customers", multiple=True, metavar="ID_OR_NAME", help="A customer (repeatable).")
@click.option("--reseller", "resellers", multiple=True, metavar="ID_OR_NAME", help="A reseller (repeatable).")
@click.option(
    "--vendor",
    "vendors",
    multiple=True,
    metavar="ID_OR_NAME",
    help="A vendor (repeatable); vendors go first (the graph says so).",
)
@root_option
@click.option(
    "--all",
    "all_",
    is_flag=True,
    help="Every top-level root of every kind that is not terminated, kinds in the graph's order "
    "(vendors first); with roots named too: each once.",
)
@click.option(
    "--where", default=None, metavar="SQL", help="With --all: an SQL condition on each kind's root table."
)
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Print what would happen (roots, sizes, missing prerequisites, open decisions); change nothing.",
)
@click.option(
    "--max-failures",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Stop claiming roots after N failures (the roots in flight finish).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Roots migrated at a time, each by its own worker process (1: in this process).",
)
@click.option(
    "--bundles",
    default="bundles",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the bundles (kept after a failure, for the retry), or an s3://… store: each "
    "bundle is uploaded once its load committed, with the run's report and log.",
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
@click.option(
    "--usage",
    "catch_up_usage",
    is_flag=True,
    help="Catch up every migrated root: the usage that reached the source since, each row once.",
)
@spec_option
@click.option(
    "--target-spec",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Entity graph of the target, when it differs from the source's (default: --spec).",
)
@json_option
@security_options("sign", "trust", "show")
def migrate_command(
    source: str,
    target: str,
    customers: tuple[str, ...],
    resellers: tuple[str, ...],
    vendors: tuple[str, ...],
    roots: tuple[str, ...],
    all_: bool,
    where: str | None,
    workers: int,
    bundles: str,
    decisions: str | None,
    xdrs: str,
    usage_only: bool,
    catch_up_usage: bool,
    plan_only: bool,
    max_failures: int | None,
    spec: str | None,
    target_spec: str | None,
    as_json: bool,
) -> None:
    """Migrate roots one by one: export, load at once, next; N at a time, resumable.

    The lineup is kept in the target (bundler_lineup): several workers, on several
    machines, can run the same command and share it. Kinds go in the entity graph's
    order (vendors before the customers whose DID numbers they own): no root of a later
    kind is claimed before every root of the earlier kinds is done or failed; within a
    kind, a root whose rows another references goes first, and roots that reference each
    other are loaded in one transaction. References still open are listed. A re-run
    skips what the target already holds, finishes or restores an export whose process
    died (see bundler recover), loads a bundle exported but not loaded, and retries what
    failed. A failed root gets its status restored in the source and keeps its bundle;
    the run goes on and exits 1 listing every failure. Ctrl-C stops after the roots in
    flight.

    \b
    Example:
      bundler migrate --source sqlite:///demo/source.db --target sqlite:///demo/target.db --all \\
          --decisions examples/decisions.json --bundles demo/bundles --plan
      bundler migrate --source sqlite:///demo/source.db --target sqlite:///demo/target.db --all \\
          --decisions examples/decisions.json --bundles demo/bundles --workers 2
      bundler migrate --source postgresql://old/porta --target postgresql://new/porta \\
          --customer acme --customer 1042 --decisions decisions.json --json
      bundler migrate --source … --target … --all --xdrs none      (then later: --usage-only)
      bundler migrate --source … --target … --usage      (late usage of every migrated root)
      bundler migrate --source sqlite:///library.db --target sqlite:///new.db --spec library.json --all
    """
    from bundler.db import connect
    from bundler.errors import BundlerError, UsageError
    from bundler.lineup import LineupOptions, RootSelector, run_lineup
    from bundler.store import is_remote, remote_url

    if catch_up_usage:
        if customers or resellers or vendors or roots or all_ or usage_only:
            raise UsageError("--usage catches up every migrated root", hint="name no roots with it")
        if is_remote(bundles):
            raise UsageError("--usage keeps its bundles in a local folder", hint="--bundles FOLDER")
        _catch_up(source, target, bundles, decisions, xdrs, spec, as_json)
        return

    named = root_pairs(roots, {"vendor": vendors, "reseller": resellers, "customer": customers})
    selectors = [
        RootSelector(kind, tuple(key for k, key in named if k == kind))
        for kind in dict.fromkeys(k for k, _ in named)
    ]
    source_engine = connect(source)
    if all_:
        selectors += every_kind(source_engine, spec, where)
    elif where:
        raise UsageError("--where goes with --all")
    if not selectors:
        raise UsageError(
            "name what to migrate", hint="--customer, --reseller, --vendor, --root KIND=KEY or --all"
        )
    if plan_only:
        from bundler.plan import plan_migration

        with progress_for_cli() as progress:
            plan = plan_migration(
                source_engine,
                connect(target),
                selectors,
                xdrs=xdrs,
                decisions=decisions,
                spec=spec,
                progress=progress,
            )
        print_plan(plan, as_json)
        return
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
    from bundler.report import RunRecorder

    store = remote_url(bundles)
    # a store: the bundles are written into a private staging folder (0700) and uploaded
    folder = Path(tempfile.mkdtemp(prefix="bundler-migrate-")) if store else Path(bundles)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"migrate-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    log_path = folder / f"{stem}.log"
    try:
        with progress_for_cli(main=("lineup",)) as progress, log_path.open("w", encoding="utf-8") as log:
            recorder = RunRecorder(progress, log)
            result = run_lineup(
                source_engine,
                connect(target),
                selectors,
                LineupOptions(
                    folder,
                    decisions=decisions,
                    xdrs=xdrs,
                    usage_only=usage_only,
                    spec=spec,
                    max_failures=max_failures,
                    target_spec=target_spec or spec,
                    store=store,
                ),
                workers=workers,
                progress=recorder,
                stop=stop,
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    summary = result.summary()
    summary["open_references"] = _still_open(connect(target))
    summary, paths = finish_run(summary, recorder, folder, stem, log_path)
    if store:
        paths = _report_to_store(summary, paths, folder, store)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)
        print_open(summary["open_references"])
        click.echo(f"bundles: {summary['bundles']}")
        for name, path in paths.items():
            click.echo(f"{name}: {path}")
    if result.failed:
        raise BundlerError(f"{len(result.failed)} of {len(result.outcomes)} root(s) failed (listed above)")


def _report_to_store(
    summary: dict[str, Any], paths: dict[str, str], folder: Path, store: str
) -> dict[str, str]:
    """Upload the run's report and log beside the bundles in ``store``; the staging folder is
    removed, or kept and named when it holds a bundle that was not uploaded: a failed root's, kept
    as a local ``--bundles`` folder keeps it (a folder left by a run that died is found by the
    re-run through the source's export record)."""
    from bundler.bundle import BUNDLE_SUFFIX
    from bundler.store import upload

    uploaded = {name: upload(Path(path), store) for name, path in paths.items()}
    summary["report"] = {"html": uploaded["report"], "json": uploaded["report data"], "log": uploaded["log"]}
    summary["bundles"] = store
    if any(p.name.endswith(BUNDLE_SUFFIX) for p in folder.iterdir()):
        summary["kept"] = str(folder)
        uploaded["kept (bundles not uploaded)"] = str(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return uploaded


def _catch_up(
    source: str, target: str, bundles: str, decisions: str | None, xdrs: str, spec: str | None, as_json: bool
) -> None:
    """``--usage``: one pass of late usage over every migrated root."""
    from bundler.db import connect
    from bundler.usage.catchup import CatchUpOptions, catch_up
    from bundler.usage.commands import report_pass

    options = CatchUpOptions(Path(bundles), decisions=decisions, xdrs=xdrs, spec=spec)
    with progress_for_cli() as progress:
        result = catch_up(connect(source), connect(target), options, progress=progress)
    report_pass(result, as_json)


def print_differences(summary: dict[str, Any], shown: int = 5) -> None:
    """Per root: the shared rows reused although they differ, and the parts their target rows lack."""
    from bundler.keys import describe
    from bundler.lineup.root import describe_key

    if summary.get("reused_with_differences") or summary.get("lacking_in_target"):
        click.echo(
            f"reused with differences: {summary['reused_with_differences']} row(s) "
            f"({summary['reused_with_binding_differences']} in a binding column); "
            f"parts the target's reused rows lack: {summary['lacking_in_target']}"
        )
    loads = [summary["configuration"]] if summary.get("configuration") else []
    for root in [*loads, *summary["per_root"]]:
        label = f"{root['kind']} {describe_key(root['root'])}" if root["root"] else root["kind"]
        for table, items in sorted(root.get("reused_with_differences", {}).items()):
            for item in items[:shown]:
                key = describe(item["key"]) if isinstance(item["key"], dict) else item["key"]
                binding = f" (binding: {', '.join(item['binding'])})" if item.get("binding") else ""
                click.echo(f"  {label}: {table} {key} differs in {', '.join(item['differs'])}{binding}")
            if len(items) > shown:
                click.echo(f"  … {len(items) - shown} more {table} rows (see --json)")
        for table, n in sorted(root.get("lacking_in_target", {}).items()):
            click.echo(
                f"  {label}: {n} {table} row(s) not carried: "
                "the target's reused rows lack them (decide merge to add them)"
            )


def finish_run(
    summary: dict[str, Any], recorder: Any, folder: Path, stem: str, log_path: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """The summary with roots as objects and failures grouped by cause; the report written."""
    from bundler.report import failure_groups, report_data, write_report
    from bundler.report.data import root_object

    per_root = [{**r, "root": root_object(r["root"])} for r in summary["per_root"]]
    failures = [
        {"root": r["root"], "kind": r["kind"], "reason": r["message"]}
        for r in per_root
        if r["state"] == "failed"
    ]
    summary = {
        **summary,
        "per_root": per_root,
        "failures": failures,
        "failures_by_cause": failure_groups(per_root),
    }
    data = report_data(summary, recorder, folder)
    page, doc = write_report(folder, stem, data, f"bundler migrate, {stem.removeprefix('migrate-')}")
    paths = {"report": str(page), "report data": str(doc), "log": str(log_path)}
    summary["bundles"] = str(folder)
    summary["report"] = {"html": str(page), "json": str(doc), "log": str(log_path)}
    return summary, paths


def every_kind(engine: Any, spec: str | None, where: str | None) -> list[Any]:
    """``--all``: a selector per root kind of the source's graph, in the graph's order."""
    from bundler.context import database_graph
    from bundler.lineup import RootSelector

    with engine.connect() as connection:
        graph = database_graph(connection, spec)
    return [RootSelector(kind, all=True, where=where) for kind in graph.all_kinds()]


def print_plan(plan: Any, as_json: bool) -> None:
    """A plan on stdout; exit 5 when prerequisites are missing, 3 when decisions are open."""
    from bundler.errors import BundlerError, DecisionsNeeded, PrerequisitesMissing

    if as_json:
        print_json(plan.summary())
    else:
        for line in plan.lines():
            click.echo(line)
    if plan.missing:
        raise PrerequisitesMissing(f"the plan: {len(plan.missing)} prerequisite(s) missing in the target")
    if plan.decisions:
        raise DecisionsNeeded(f"the plan: {len(plan.decisions)} open decision(s)")
    problems = sum(1 for r in plan.roots if r.problem)
    if problems:
        raise BundlerError(f"the plan: {problems} root(s) cannot go (marked !! above)")


def _still_open(target: Any) -> dict[str, Any]:
    """The references loads left open in the target (their root is not migrated yet): see
    :func:`bundler.load.crossroot.open_summary`."""
    from bundler.load.crossroot import open_summary

    with target.connect() as conn:
        return open_summary(conn)


def print_open(still: dict[str, Any], shown: int = 20) -> None:
    """What is still open: how many, per column, the first ``shown``, and what to do."""
    if not still["count"]:
        return
    columns = ", ".join(f"{column} {n}" for column, n in still["per_column"].items())
    click.echo(f"{still['count']} reference(s) to rows of roots not in the target yet still open ({columns})")
    for line in still["lines"][:shown]:
        click.echo(f"  open: {line}")
    if still["count"] > shown:
        click.echo(f"  … {still['count'] - shown} more (see --json)")
    click.echo(f"  to do: {still['what_to_do']}")


def print_summary(summary: dict[str, Any]) -> None:
    """A table of the roots (kind, key, rows, bytes, downtime, outcome), the totals, and the
    failures grouped by cause."""
    from rich.console import Console
    from rich.table import Table

    from bundler.keys import describe
    from bundler.plan import human_bytes
    from bundler.report import failure_groups
    from bundler.report.data import root_object

    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}s"

    per_root = [
        {**r, "root": root_object(r["root"]) if isinstance(r["root"], str) else r["root"]}
        for r in summary["per_root"]
    ]
    table = Table("kind", "root", "rows", "bytes", "downtime", "outcome", box=None, pad_edge=False)
    for r in per_root:
        root = r["root"] if isinstance(r["root"], dict) else None
        outcome = r["state"] if r["state"] == "done" else "FAILED"
        if r.get("message") == "already in the target":
            outcome = "already there"
        table.add_row(
            r["kind"],
            describe(root) if root else str(r["root"]),
            f"{r['rows']:,}",
            human_bytes(r["bytes"]),
            sec(r["downtime_s"]),
            outcome,
        )
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 250  # a log or a pipe: one line per root
    if per_root:
        console.print(table)
    d = summary["downtime_s"]
    click.echo(
        f"{summary['done']} root(s) migrated, {summary['failed']} failed, "
        f"{summary['skipped_already_migrated']} already in the target; "
        f"{summary['rows']:,} rows, {human_bytes(summary['bytes'])} in {summary['seconds']:.1f}s"
    )
    click.echo(f"downtime per root: p50 {sec(d['p50'])}, p95 {sec(d['p95'])}, max {sec(d['max'])}")
    groups = failure_groups(per_root)
    for group in groups:
        names = ", ".join(
            describe(g["root"]) if isinstance(g["root"], dict) else str(g["root"]) for g in group["roots"][:3]
        )
        more = f" and {group['count'] - 3} more" if group["count"] > 3 else ""
        click.echo(f"  FAILED x{group['count']}: {group['cause']}  ({names}{more})")
    print_differences(summary)
    if summary["stopped_early"]:
        click.echo("stopped early: run the same command again to finish the rest")
