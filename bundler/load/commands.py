"""``bundler load``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bundler.options import json_option, print_json, progress_for_cli, spec_option, target_option
from bundler.secure.options import BUNDLE_LOCATION, security_options

KEYS = {"r": "reuse", "m": "merge", "c": "create", "a": "abort", "\r": "reuse", "\n": "reuse"}
SUMMARY_SHOWN = 10


def _key(prompt: str, allowed: dict[str, Any]) -> Any:
    """One key press (Enter takes the default), asked again until it is one of ``allowed``."""
    click.echo(prompt, nl=False, err=True)
    while True:
        key = click.getchar().lower()
        if key in allowed:
            click.echo(key.strip() or "", err=True)
            return allowed[key]
        if key in ("\x03", "\x04"):  # Ctrl-C, Ctrl-D
            raise click.Abort


class TerminalAsker:
    """Asks at the terminal, one key per answer: both rows side by side, then ``[R/m/c/a]``
    (reuse, merge, create, abort) and ``[y/N]`` for the rest of the table; "question 3 of 12"."""

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.asked = 0

    def __call__(self, question: Any, row: dict[str, Any], match: dict[str, Any]) -> tuple[str, bool]:
        from bundler.keys import describe, key_value

        self.asked += 1
        of = f" of {self.total}" if self.total else ""
        click.echo(
            f"\nquestion {self.asked}{of}: {question.table} {describe(question.key)} "
            f"is already in the target ({question.target_pk}).",
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
        choice = _key(
            "reuse the target's row, merge (reuse it and add the parts it lacks), create the bundle's "
            "beside it, or abort? [R/m/c/a] ",
            KEYS,
        )
        if choice == "abort":
            return choice, False
        whole = _key(
            f"the same for the rest of {question.table}? [y/N] ",
            {"y": True, "n": False, "\r": False, "\n": False},
        )
        return choice, bool(whole)

    def pick(self, question: Any, row: dict[str, Any]) -> tuple[str, Any]:
        """A natural key several target rows have: the candidates listed by number (their
        target_pk and differing columns); the operator reuses or merges one by its number,
        creates the bundle's row beside them, or aborts. The answer and the target_pk picked."""
        from bundler.keys import describe

        self.asked += 1
        of = f" of {self.total}" if self.total else ""
        candidates = list(question.candidates)
        click.echo(
            f"\nquestion {self.asked}{of}: {question.table} {describe(question.key)} "
            f"matches {len(candidates)} target rows:",
            err=True,
        )
        for n, c in enumerate(candidates, 1):
            differs = "; ".join(
                f"{col}: bundle {d['bundle']!s}, target {d['target']!s}" for col, d in c["differs"].items()
            )
            click.echo(f"  {n}) target_pk {c['target_pk']}  {differs or 'no other difference'}", err=True)
        choices = [str(n) for n in range(1, len(candidates) + 1)]
        picked = click.prompt(
            f"reuse which one ({choices[0]}-{choices[-1]}), create the bundle's beside them (c), or abort (a)?",
            type=click.Choice([*choices, "c", "a"], case_sensitive=False),
            err=True,
        ).lower()
        if picked in ("c", "a"):
            return ("create" if picked == "c" else "abort"), None
        chosen = candidates[int(picked) - 1]["target_pk"]
        action = _key(
            f"reuse target row {chosen}, or merge into it? [R/m] ",
            {k: v for k, v in KEYS.items() if v in ("reuse", "merge")},
        )
        return action, chosen


def terminal_asker(question: Any, row: dict[str, Any], match: dict[str, Any]) -> tuple[str, bool]:
    """Ask at the terminal without a count (see :class:`TerminalAsker`)."""
    return TerminalAsker()(question, row, match)


@click.command("load")
@target_option
@click.argument("bundles", nargs=-1, required=True, type=BUNDLE_LOCATION)
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
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Print each bundle's size, the prerequisites missing and the open decisions; write nothing.",
)
@click.option(
    "--again",
    is_flag=True,
    help="Load a root of a graph without a status column that another bundle brought already (a fresh copy).",
)
@spec_option
@json_option
@security_options("trust", "identity", "show")
def load_command(
    target: str,
    bundles: tuple[str, ...],
    decisions: str | None,
    interactive: bool,
    dry_run: bool,
    plan_only: bool,
    again: bool,
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
      bundler load --target sqlite:///demo/target.db demo/bundles/*.bundle --plan
      bundler load --target sqlite:///demo/target.db demo/bundles/*.bundle --dry-run --json
      bundler load --target sqlite:///demo/target.db demo/bundles/customer-*.bundle
      bundler load --target postgresql://billing@new/porta acme.bundle.tar.zst --decisions decisions.json
      bundler load --target sqlite:///t.db s3://moves/acme.bundle.tar.zst.age --identity keys/site-b.age --trust keys/site-a.pub
    """
    from bundler.db import connect
    from bundler.load import load_bundle

    engine = connect(target)
    if plan_only:
        from bundler.lineup.commands import print_plan
        from bundler.plan import plan_bundles

        print_plan(plan_bundles(engine, bundles, decisions=decisions, spec=spec), as_json)
        return
    results = []
    if interactive and decisions is None:
        decisions = str(
            Path(bundles[0]).with_name(Path(bundles[0]).name.removesuffix("/") + ".decisions.json")
        )
    with progress_for_cli() as progress:
        for path in bundles:
            asker = _asker_for(engine, path, decisions, spec) if interactive else None
            result = load_bundle(
                engine,
                path,
                decisions=decisions,
                dry_run=dry_run,
                spec=spec,
                progress=progress,
                asker=asker,
                again=again,
            )
            results.append(result)
            if not as_json:
                _print_result(result)
    if as_json:
        print_json([r.summary() for r in results])


def _asker_for(engine: Any, path: str, decisions: str | None, spec: str | None) -> TerminalAsker:
    """An asker that knows how many questions the bundle holds (a rolled-back check first)."""
    from bundler.errors import BundlerError
    from bundler.plan import check_bundle

    try:
        total = len(check_bundle(engine, path, decisions=decisions, spec=spec).questions)
    except BundlerError:
        total = None  # the load itself reports what is wrong
    return TerminalAsker(total or None)


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
    for d in result.decisions[:SUMMARY_SHOWN]:
        click.echo(f"  decision: {d['table']} {d['key']} → {d['action']} (by {d['by']})")
    if len(result.decisions) > SUMMARY_SHOWN:
        by_action: dict[str, int] = {}
        for d in result.decisions[SUMMARY_SHOWN:]:
            by_action[d["action"]] = by_action.get(d["action"], 0) + 1
        counts = ", ".join(f"{n} {action}" for action, n in sorted(by_action.items()))
        click.echo(f"  … and {len(result.decisions) - SUMMARY_SHOWN} more decision(s): {counts} (see --json)")
    for table, plan in sorted(result.tables.items()):
        for item in plan.differing[:5]:
            binding = f" (binding: {', '.join(item['binding'])})" if item.get("binding") else ""
            click.echo(
                f"  reused with differences: {table} {item['key']}: {', '.join(item['differs'])}{binding}"
            )
        if len(plan.differing) > 5:
            click.echo(f"  … {len(plan.differing) - 5} more reused {table} rows differ (see --json)")
