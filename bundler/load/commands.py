"""``bundler load``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bundler.options import json_option, print_json, progress_for_cli, spec_option, target_option


def terminal_asker(question: Any, row: dict[str, Any], match: dict[str, Any]) -> tuple[str, bool]:
    """Ask at the terminal: both rows side by side, then reuse / create / abort."""
    from bundler.keys import describe, key_value

    click.echo(
        f"\n{question.table} {describe(question.key)} is already in the target ({question.target_pk}).",
        err=True,
    )
    width = max((len(c) for c in row), default=10)
    click.echo(f"  {'column':<{width}}  {'bundle':<30}  target", err=True)
    for col in row:
        mine, theirs = key_value(row.get(col)), key_value(match.get(col))
        mark = "!" if col in question.binding else "*" if col in question.differs else " "
        click.echo(f"{mark} {col:<{width}}  {mine!s:<30}  {theirs!s}", err=True)
    if question.binding:
        click.echo("  ! binding: reusing it changes money (a currency or a price)", err=True)
    choice = click.prompt(
        "reuse the target's row, merge (reuse it and add the parts it lacks), create the bundle's beside it, "
        "or abort?",
        type=click.Choice(["reuse", "merge", "create", "abort"]),
        default="reuse",
        err=True,
    )
    whole = click.confirm(f"apply '{choice}' to the rest of {question.table}?", default=False, err=True)
    return choice, whole


@click.command("load")
@target_option
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--decisions",
    type=click.Path(dir_okay=False),
    default=None,
    help="Decisions sidecar: reuse, merge, create or abort for shared rows that match the target.",
)
@click.option(
    "--interactive",
    is_flag=True,
    help="Ask at the terminal for open decisions, and save them to --decisions.",
)
@click.option("--dry-run", is_flag=True, help="Do everything but commit; print the plan.")
@spec_option
@json_option
def load_command(
    target: str,
    bundles: tuple[str, ...],
    decisions: str | None,
    interactive: bool,
    dry_run: bool,
    spec: str | None,
    as_json: bool,
) -> None:
    """Load bundles into the target: new ids, references rewritten, a ledger of every row.

    Each bundle is verified, translated to the target's release, checked for missing
    prerequisites (exit 5), matched against the target's configuration (exit 3 and a
    decisions template when a match has no decision), then written in one transaction.
    Loading the same bundle again changes nothing.

    \b
    Example:
      bundler load --target sqlite:///demo/target.db bundles/customer-acme-*.bundle
      bundler load --target postgresql://billing@new/porta acme.bundle.tar.zst --decisions decisions.json
      bundler load --target sqlite:///demo/target.db bundles/*.bundle --dry-run --json
    """
    from bundler.db import connect
    from bundler.load import load_bundle

    engine = connect(target)
    results = []
    asker = terminal_asker if interactive else None
    if interactive and decisions is None:
        decisions = str(
            Path(bundles[0]).with_name(Path(bundles[0]).name.removesuffix("/") + ".decisions.json")
        )
    with progress_for_cli() as progress:
        for path in bundles:
            result = load_bundle(
                engine, path, decisions=decisions, dry_run=dry_run, spec=spec, progress=progress, asker=asker
            )
            results.append(result)
            if not as_json:
                _print_result(result)
    if as_json:
        print_json([r.summary() for r in results])


def _print_result(result: Any) -> None:
    if result.outcome == "already-loaded":
        click.echo(f"{result.bundle_id}: already loaded; nothing changed")
        return
    verb = "would create" if result.outcome == "dry-run" else "created"
    click.echo(
        f"{result.bundle_id}: {result.outcome}, {verb} {result.created} row(s), reused {result.reused}"
    )
    for table, plan in sorted(result.tables.items()):
        if plan.created or plan.reused or plan.skipped:
            extra = f", skipped {plan.skipped} the target's reused row lacks" if plan.skipped else ""
            click.echo(f"  {table:<28} created {plan.created:>9}  reused {plan.reused:>7}{extra}")
    for d in result.decisions:
        click.echo(f"  decision: {d['table']} {d['key']} → {d['action']} (by {d['by']})")
    for table, plan in sorted(result.tables.items()):
        for item in plan.differing[:5]:
            binding = f" (binding: {', '.join(item['binding'])})" if item.get("binding") else ""
            click.echo(
                f"  reused with differences: {table} {item['key']}: {', '.join(item['differs'])}{binding}"
            )
        if len(plan.differing) > 5:
            click.echo(f"  … {len(plan.differing) - 5} more reused {table} rows differ (see --json)")
