"""``bundler recover``."""

from __future__ import annotations

import click

from bundler.options import json_option, print_json, progress_for_cli, spec_option, url_option


@click.command("recover")
@url_option("--source", side=None, required=False, help="Source database: its exports.")
@url_option(
    "--target",
    side=None,
    required=False,
    help="Target database: its reverse exports and the lineup rows of workers that died.",
)
@click.option(
    "--bundle",
    "bundles",
    multiple=True,
    metavar="ID",
    help="Only this export (repeatable); also one recorded by another host, which you vouch is gone.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Also recover exports of other hosts (and of older bundlers) without naming them: "
    "only when you know no export runs there.",
)
@spec_option
@json_option
def recover_command(
    source: str | None,
    target: str | None,
    bundles: tuple[str, ...],
    force: bool,
    spec: str | None,
    as_json: bool,
) -> None:
    """Finish or undo exports whose process died (killed, crashed, power cut).

    For every export still recorded as running whose process is gone: if its bundle is
    in place and verifies, the export is recorded done (load that bundle); otherwise every
    row it marked Exported gets its status back and what it left on disk is removed.
    An export whose process still runs is never touched. A process is known to be gone
    only on its own host: an export recorded by another host is left until you name it
    with --bundle (or pass --force). Exits 1 when such exports were left.

    \b
    Example:
      bundler recover --source sqlite:///demo/source.db
      bundler recover --target postgresql://billing@new/porta --json
      bundler recover --source postgresql://billing@old/porta --bundle customer-acme-20261115T120000-1a2b3c
    """
    from bundler.db import connect
    from bundler.errors import BundlerError
    from bundler.recover import recover_systems

    with progress_for_cli() as progress:
        reports = recover_systems(
            connect(source) if source else None,
            connect(target) if target else None,
            bundles=bundles,
            force=force,
            spec=spec,
            progress=progress,
        )
    if as_json:
        print_json([r.summary() for r in reports])
    else:
        for report in reports:
            for line in report.lines():
                click.echo(line)
    undecided = [i for r in reports for i in r.undecided]
    if undecided:
        raise BundlerError(
            f"{len(undecided)} export(s) left: bundler cannot tell whether their process still runs (listed above)",
            hint="name each with --bundle once you know it is gone",
        )
