"""``bundler clean``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from bundler.errors import UsageError
from bundler.options import (
    json_option,
    print_json,
    progress_for_cli,
    root_option,
    root_pairs,
    spec_option,
    url_option,
)

if TYPE_CHECKING:
    from bundler.clean.model import CleanPlan, CleanResult

KEPT_SHOWN = 20
WINDOW = "outside the exported usage window"  # the reason a source row is kept for untravelled usage


def entity_pairs(
    customers: tuple[str, ...], kinds: tuple[str, ...], ids: tuple[str, ...]
) -> list[tuple[str, str]]:
    """``--customer X`` and ``--kind K --id I`` as (kind, id) pairs.

    One ``--kind`` applies to every ``--id``; several pair up with the ``--id`` options in order.
    """
    pairs = [("customer", c) for c in customers]
    if kinds and not ids:
        raise UsageError("--kind needs --id", hint="e.g. --kind tariff --id T-Retail")
    if ids and not kinds:
        raise UsageError("--id needs --kind", hint="e.g. --kind sim_card --id 8944000000000000001")
    if len(kinds) == 1:
        pairs += [(kinds[0], i) for i in ids]
    elif len(kinds) == len(ids):
        pairs += list(zip(kinds, ids, strict=True))
    elif kinds:
        raise UsageError(
            f"{len(kinds)} --kind for {len(ids)} --id",
            hint="give one --kind for all the ids, or one --kind before each --id",
        )
    return pairs


@click.command("clean")
@url_option(
    "--db", side=None, dest="db_url", required=False, help="The source or target database (side inferred)."
)
@url_option(
    "--source", side=None, required=False, help="The source database (same as --db URL --side source)."
)
@url_option(
    "--target",
    side=None,
    required=False,
    help="The target database (same as --db URL --side target); beside --source or --db of a source: "
    "the target, whose loaded roots go with all their usage, outside the exported windows too.",
)
@click.option(
    "--bundle",
    "bundles",
    multiple=True,
    metavar="ID",
    help="A bundle id: what that load created or export carried.",
)
@click.option(
    "--customer",
    "customers",
    multiple=True,
    metavar="ID_OR_NAME",
    help="A customer (or distributor), by id or name.",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Kind of entity for --id, from the entity graph: customer, distributor, reseller, vendor, product, "
    "tariff, access_level, did_number, sim_card, cpe.",
)
@click.option("--id", "ids", multiple=True, metavar="ID_OR_NAME", help="An entity of --kind, by id or name.")
@root_option
@click.option(
    "--side",
    type=click.Choice(["source", "target"]),
    default=None,
    help="Which side the database is; inferred from its export and load records when left out.",
)
@click.option(
    "--all-usage",
    is_flag=True,
    help="Source side: remove the roots' usage outside the exported windows too (the target has it, "
    "or it is not wanted).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (rows per table, kept rows) and remove nothing."
)
@click.option("--yes", "-y", is_flag=True, help="Remove without asking.")
@spec_option
@json_option
def clean_command(
    db_url: str | None,
    source: str | None,
    target: str | None,
    bundles: tuple[str, ...],
    customers: tuple[str, ...],
    kinds: tuple[str, ...],
    ids: tuple[str, ...],
    roots: tuple[str, ...],
    side: str | None,
    all_usage: bool,
    dry_run: bool,
    yes: bool,
    spec: str | None,
    as_json: bool,
) -> None:
    """Remove exactly what was transferred: from the target by its ledger, from the source by its exports.

    On the target: the rows the loads of the named bundle or entity created (with the usage
    bundles depending on them), the entity and everything that belongs to it, and the shared
    configuration those loads created for it. Rows a load reused, and rows the ledger does not
    name, are never removed. On the source: the entity's closure as it was exported (its root
    must be Exported), and its usage inside the exported windows (all its usage with
    --all-usage, or with --target naming the target that loaded it). A row that data outside the
    set still references is kept, with whatever belongs to it, and listed with what holds it.
    Rows go children first, in one transaction. A target load all of whose rows are gone is
    forgotten, so the bundle can be loaded again; on the source, the exports of a removed root
    are recorded as cleaned. Asked for something never transferred, it refuses: it is not a
    general clean-up tool.

    The side is printed; without --side it is inferred (a database that recorded loads and no
    exports is a target, and the reverse). Without --yes the plan is shown and confirmed first.

    \b
    Example:
      bundler clean --target sqlite:///demo/target.db --customer 'Acme Widgets Inc. #1' --dry-run
      bundler clean --db postgresql://billing@new/porta --bundle customer-acme-20261115T120000-1a2b3c --yes
      bundler clean --db postgresql://billing@old/porta --side source --customer acme --customer bravo
      bundler clean --source postgresql://billing@old/porta --customer acme --target postgresql://billing@new/porta --yes
      bundler clean --target postgresql://billing@new/porta --kind sim_card --id 8944000000000000001 --json --yes
    """
    from bundler.clean import clean_now, plan_clean, run_clean
    from bundler.db import connect

    entities = entity_pairs(customers, kinds, ids) + root_pairs(roots, {})
    target_url = None
    if target and (source or db_url):  # the target beside the source: consulted, not cleaned
        target_url, target = target, None
    given = [(url, named) for url, named in ((db_url, None), (source, "source"), (target, "target")) if url]
    if len(given) != 1:
        raise UsageError("give one database: --source URL, --target URL or --db URL (the side inferred)")
    url, implied = given[0]
    if side and implied and side != implied:
        raise UsageError(f"--side {side} contradicts --{implied}")
    side = side or implied
    if target_url and side == "target":
        raise UsageError("--target beside the database to clean is for a source-side clean")
    engine = connect(url)
    asked: dict[str, Any] = {  # what plan_clean and clean are asked, alike
        "entities": entities,
        "bundles": bundles,
        "side": side,
        "spec": spec,
        "all_usage": all_usage,
        "target": connect(target_url) if target_url else None,
    }
    if yes and not dry_run:  # planned once, inside the transaction that carries it out
        with progress_for_cli() as progress:
            result = clean_now(
                engine,
                progress=progress,
                show=None if as_json else lambda p: _print_plan(p, err=False),
                **asked,
            )
        if result.plan.rows == 0 and not result.plan.closes:
            _print_nothing(result.plan, as_json, shown=True)
        elif as_json:
            print_json(result.summary())
        else:
            _print_result(result)
        return
    plan = plan_clean(engine, **asked)
    if dry_run:
        if as_json:
            print_json({**plan.summary(), "outcome": "dry-run"})
        else:
            _print_plan(plan, err=False)
            click.echo("dry run: nothing was removed")
        return
    if plan.rows == 0 and not plan.closes:
        _print_nothing(plan, as_json, shown=False)
        return
    _print_plan(plan, err=as_json)
    click.confirm(
        f"remove {plan.rows} row(s) from the {plan.side} {plan.database}?",
        default=False,
        abort=True,
        err=True,
    )
    with progress_for_cli() as progress:
        result = run_clean(engine, plan, progress=progress)
    if as_json:
        print_json(result.summary())
    else:
        _print_result(result)


def _print_nothing(plan: CleanPlan, as_json: bool, *, shown: bool) -> None:
    if as_json:
        print_json({**plan.summary(), "outcome": "nothing-to-remove"})
        return
    if not shown:
        _print_plan(plan, err=False)
    click.echo("nothing to remove")


def _print_plan(plan: CleanPlan, *, err: bool) -> None:
    for line in _plan_lines(plan):
        click.echo(line, err=err)


def _plan_lines(plan: CleanPlan) -> Iterator[str]:
    yield f"side: {plan.side} ({plan.side_reason})"
    yield f"database: {plan.database} (release {plan.release})"
    word = "loads" if plan.side == "target" else "exports"
    for s in plan.selected:
        yield f"selected: {s.what}; {word}: {', '.join(s.bundles) or 'none'}"
    yield f"plan: remove {plan.rows} row(s) from {len(plan.tables)} table(s), children first"
    width = max((len(t) for t in plan.tables), default=10)
    for table, n in plan.tables.items():
        yield f"  {table:<{width}}  {n:>9}"
    for column, n in plan.unlink.items():
        yield f"  first set {column} to NULL in {n} row(s) (breaks a reference cycle)"
    yield from _kept_lines(plan)
    yield from _bookkeeping_lines(plan)


def _kept_lines(plan: CleanPlan) -> Iterator[str]:
    if not plan.kept:
        return
    causes = sum(1 for k in plan.kept if k.held_from_outside)
    yield f"kept {len(plan.kept)} row(s) still in use ({causes} held by data outside the set, the rest with them):"
    for row in plan.kept[:KEPT_SHOWN]:
        yield f"  {row.line()}"
    if len(plan.kept) > KEPT_SHOWN:
        yield f"  … and {len(plan.kept) - KEPT_SHOWN} more kept row(s) (see --json)"
    if plan.side == "source" and any(WINDOW in k.reason for k in plan.kept):
        yield (
            "  usage outside the exported window keeps rows: add --target TARGET_URL (where the root is loaded) "
            "or --all-usage to remove it too"
        )


def _bookkeeping_lines(plan: CleanPlan) -> Iterator[str]:
    if plan.side != "target":
        for bundle_id in plan.closes:
            yield f"bookkeeping: record export {bundle_id} as cleaned"
        return
    for bundle_id in plan.closes:
        yield f"bookkeeping: forget load {bundle_id} (every row it created goes; it can be loaded again)"
    for bundle_id, n in plan.partly.items():
        yield f"bookkeeping: load {bundle_id} keeps {n} created row(s) in the target; its record stays"


def _print_result(result: CleanResult) -> None:
    plan = result.plan
    click.echo(
        f"removed {result.rows} row(s) from {len(result.deleted)} table(s) of the {plan.side}"
        + (f"; kept {len(plan.kept)} row(s) still in use" if plan.kept else "")
    )
    for table, n in result.deleted.items():
        if n:
            click.echo(f"  {table}: {n}")
    if result.closed:
        verb = "forgot load(s)" if plan.side == "target" else "closed export(s)"
        click.echo(f"{verb}: {', '.join(result.closed)}")
