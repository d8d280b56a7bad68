"""``bundler list``: the roots of a source, by kind, with status and size."""

from __future__ import annotations

import click

from bundler.options import json_option, print_json, source_option, spec_option


@click.command("list")
@source_option
@spec_option
@json_option
def list_command(source: str, spec: str | None, as_json: bool) -> None:
    """List the roots of a source by kind (in the graph's order), with status and size.

    Size is the rows a root owns (its accounts, services, balances…), usage left out; the
    status is its status column as the source has it (the graph says which value is
    Exported). Nothing is written.

    \b
    Example:
      bundler list --source sqlite:///demo/source.db
      bundler list --source sqlite:///demo/source.db --json
    """
    from bundler.db import connect
    from bundler.keys import describe
    from bundler.plan import list_roots

    roots = list_roots(connect(source), spec=spec)
    if as_json:
        print_json([r.to_dict() for r in roots])
        return
    kind = None
    for r in roots:
        if r.kind != kind:
            kind = r.kind
            count = sum(1 for x in roots if x.kind == kind)
            click.echo(f"{kind} ({count}):")
        click.echo(f"  {r.pk:>8}  {describe(r.key):<44} {r.status or '-':<4} {r.rows:>9,} rows")
