"""``bundler reverse export`` and ``bundler reverse load`` (Retrop)."""

from __future__ import annotations

from typing import Any

import click

from bundler.options import (
    json_option,
    print_json,
    progress_for_cli,
    root_option,
    root_pairs,
    spec_option,
    url_option,
)

_LIMITS_HELP = """\b
Limits of a reverse transfer:
  1. usage must be returned before the billing period closes in the source;
  2. configuration changed on the target is lost (only usage, balances and
     statuses go back);
  3. a customer terminated in the source cannot be restored;
  4. an account terminated in the target but alive in the source becomes
     active again (reverse load warns about each one)."""


def _with_limits(f: Any) -> Any:
    """Put the limits into the help text where its docstring says LIMITS (indented like it)."""
    f.__doc__ = (f.__doc__ or "").replace("LIMITS", _LIMITS_HELP.replace("\n", "\n    "))
    return f


@click.group("reverse")
@_with_limits
def reverse() -> None:
    """Retrop: carry a customer back from the target to the source (an emergency measure).

    `reverse export` runs against the target: it marks the customer Exported there and
    writes a reverse bundle of the usage (xDRs) the source does not have yet, with
    references in source terms, and of the balances as they stand in the target.
    `reverse load` applies it to the source in one transaction and reports what could
    not be returned and the balance adjustments made.

    LIMITS

    \b
    Example:
      bundler reverse export --target postgresql://billing@new/porta --customer acme --out back/
      bundler reverse load --source postgresql://billing@old/porta back/reverse-acme-*.bundle
    """


@reverse.command("export")
@url_option("--target", "--db", side="target", dest="db_url", help="The target the customer is in now.")
@click.option("--customer", metavar="ID_OR_NAME", help="The customer: its id in the target, or its name.")
@root_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write the bundle into.",
)
@url_option(
    "--source",
    side="source",
    dest="source_url",
    required=False,
    help="The source the customer returns to: check it first, so a refusal marks nothing.",
)
@spec_option
@json_option
@_with_limits
def export_command(
    db_url: str,
    customer: str | None,
    roots: tuple[str, ...],
    out_dir: str,
    source_url: str | None,
    spec: str | None,
    as_json: bool,
) -> None:
    """Write the reverse bundle of a customer a load brought into this target.

    Refuses a customer no load brought (no ledger). Marks the customer Exported in the
    target. Sorts its xDRs: already in the source (the load brought them), returnable
    (every reference maps back to the source), not returnable (they reference a row
    made on the target). The bundle holds the returnable xDRs, the balances of the
    customer and its debit accounts, and the report of what cannot be returned.

    LIMITS

    \b
    Example:
      bundler reverse export --target sqlite:///demo/target.db --customer 'Acme Widgets Inc. #1' --out demo/back/
      bundler reverse export --target postgresql://billing@new/porta --customer 1042 --out back/ --json
      bundler reverse export --target sqlite:///new.db --spec library.json --root member=C-17 --out back/
      bundler reverse export --target postgresql://billing@new/porta --customer acme --out back/ --source postgresql://billing@old/porta
    """
    from bundler.db import connect
    from bundler.errors import UsageError
    from bundler.reverse import reverse_export

    named = root_pairs(roots, {"customer": (customer,) if customer else ()})
    if len(named) != 1:
        raise UsageError("name one root to carry back", hint="--customer ID_OR_NAME or --root KIND=KEY")
    ((kind, key),) = named
    engine = connect(db_url)
    source = connect(source_url) if source_url else None
    with progress_for_cli() as progress:
        result = reverse_export(engine, key, out_dir, spec=spec, progress=progress, kind=kind, source=source)
    if as_json:
        print_json(result.summary())
    else:
        for line in result.lines():
            click.echo(line)


@reverse.command("load")
@url_option("--source", "--db", side="source", dest="db_url", help="The source the customer returns to.")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write <bundle id>.report.json and .report.txt (default: beside the bundle).",
)
@spec_option
@json_option
@_with_limits
def load_command(
    db_url: str, bundles: tuple[str, ...], report_dir: str | None, spec: str | None, as_json: bool
) -> None:
    """Apply reverse bundles to the source, each in one transaction.

    Refuses a bundle made for another source system and a customer terminated in the
    source. Imports the returnable xDRs with new source ids, sets the balances of the
    customer and its debit accounts to the target's figures, lifts the Exported status
    (every row gets the status it had before the export), and records it all in the
    source's ledger. Prints and writes the report: the xDRs not returned and the
    balance adjustments, so the rest can be settled by hand. Running it again changes
    nothing.

    LIMITS

    \b
    Example:
      bundler reverse load --source sqlite:///demo/source.db demo/back/reverse-*.bundle
      bundler reverse load --source postgresql://billing@old/porta reverse-acme.bundle.tar.zst --json
    """
    from bundler.db import connect
    from bundler.reverse import reverse_load

    engine = connect(db_url)
    results = []
    with progress_for_cli() as progress:
        for bundle in bundles:
            result = reverse_load(engine, bundle, spec=spec, report_dir=report_dir, progress=progress)
            results.append(result)
            if not as_json:
                for line in result.lines():
                    click.echo(line)
                for path in result.report_paths:
                    click.echo(f"report: {path}")
    if as_json:  # one bundle: its object; several: a list of them
        summaries = [r.summary() for r in results]
        print_json(summaries[0] if len(summaries) == 1 else summaries)


@reverse.command("undo")
@url_option("--target", "--db", side="target", dest="db_url", help="The target the reverse export marked.")
@click.option(
    "--customer", required=True, metavar="ID_OR_NAME", help="The customer: its id in the target, or its name."
)
@url_option(
    "--source",
    side="source",
    dest="source_url",
    required=False,
    help="The source: refuse if it applied the reverse bundle already.",
)
@spec_option
@json_option
def undo_command(db_url: str, customer: str, source_url: str | None, spec: str | None, as_json: bool) -> None:
    """Lift the Exported status a reverse export set in the target (when the reverse load cannot go on).

    Every row the customer's last reverse export marked gets its status back, in one
    transaction; the reverse export is recorded as restored. Do not load its bundle after.

    \b
    Example:
      bundler reverse undo --target postgresql://billing@new/porta --customer 1042
      bundler reverse undo --target postgresql://billing@new/porta --customer acme --source postgresql://billing@old/porta
    """
    from bundler.db import connect
    from bundler.reverse.undo import reverse_undo

    result = reverse_undo(
        connect(db_url), customer, source=connect(source_url) if source_url else None, spec=spec
    )
    if as_json:
        print_json(result.summary())
    else:
        for line in result.lines():
            click.echo(line)
