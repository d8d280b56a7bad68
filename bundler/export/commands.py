"""``bundler export``, ``bundler pack`` and ``bundler unpack``."""

from __future__ import annotations

from typing import Any

import click

from bundler.options import json_option, print_json, progress_for_cli, source_option, spec_option
from bundler.secure.options import BUNDLE_LOCATION, security_options


@click.command("export")
@source_option
@click.option("--customer", "customers", multiple=True, metavar="ID_OR_NAME", help="A customer (repeatable).")
@click.option(
    "--reseller",
    "resellers",
    multiple=True,
    metavar="ID_OR_NAME",
    help="A reseller with everything under it (repeatable).",
)
@click.option("--vendor", "vendors", multiple=True, metavar="ID_OR_NAME", help="A vendor (repeatable).")
@click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="TABLE[=KEY,…]",
    help="Generic configuration: a whole table, or entries named by natural key (repeatable; one bundle).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write bundles into (or s3://bucket/prefix).",
)
@click.option(
    "--xdrs",
    default="current",
    show_default=True,
    metavar="current|all|none|since=DATE",
    help="Which usage travels: the root's current billing period, all, none (two-phase transfer), or since a date.",
)
@click.option(
    "--usage-only",
    is_flag=True,
    help="Second phase: only the usage of a root exported earlier with --xdrs none.",
)
@click.option("--no-mark", is_flag=True, help="Do not mark the root Exported (an audit copy).")
@click.option(
    "--after",
    "after",
    multiple=True,
    type=click.Path(exists=True),
    metavar="BUNDLE",
    help="An earlier bundle of this source (repeatable): shared rows it carried, unchanged since, "
    "travel as references to it (a layered bundle; load it first).",
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Roots exported in parallel."
)
@spec_option
@json_option
@security_options("sign", "encrypt")
def export_command(
    source: str,
    customers: tuple[str, ...],
    resellers: tuple[str, ...],
    vendors: tuple[str, ...],
    configs: tuple[str, ...],
    out_dir: str,
    xdrs: str,
    usage_only: bool,
    no_mark: bool,
    after: tuple[str, ...],
    workers: int,
    spec: str | None,
    as_json: bool,
) -> None:
    """Export roots of the source into bundles, marking them Exported there.

    Each customer, reseller or vendor becomes one bundle: its own rows, the shared
    configuration they reference, and the natural keys of the prerequisites the
    target must have. A failed export restores the root's status and leaves no bundle;
    an export whose process died is finished or restored by the next export of the same
    root, or by bundler recover.

    \b
    Example:
      bundler export --source sqlite:///demo/source.db --customer acme --out bundles/
      bundler export --source postgresql://billing@db/porta --reseller 42 --xdrs none --out bundles/
      bundler export --source sqlite:///demo/source.db --config products --config tariffs=T1 --out bundles/
      bundler export --source sqlite:///demo/source.db --customer 17 --after bundles/config-*.bundle --out bundles/
      bundler export --source sqlite:///s.db --customer acme --sign-with keys/site-a.key --encrypt-to keys/site-b.age.pub --out s3://moves/
    """
    from bundler.db import connect
    from bundler.errors import UsageError
    from bundler.export import ConfigSelection, ExportOptions, export_config, export_many
    from bundler.secure.transfer import Staging

    roots = [
        (kind, i)
        for kind, idents in (("customer", customers), ("reseller", resellers), ("vendor", vendors))
        for i in idents
    ]
    if not roots and not configs:
        raise UsageError("name what to export", hint="--customer, --reseller, --vendor or --config")
    if configs and (roots or usage_only):
        raise UsageError("--config exports configuration alone", hint="export roots in a separate call")
    engine = connect(source)
    options = ExportOptions(xdrs=xdrs, usage_only=usage_only, mark=not no_mark, after=after)
    results: list[Any] = []
    with Staging(out_dir) as stage, progress_for_cli() as progress:
        out_dir = stage.local
        if configs:
            selections = [ConfigSelection.parse(c) for c in configs]
            results.append(export_config(engine, selections, out_dir, spec=spec, progress=progress))
        for kind in dict.fromkeys(k for k, _ in roots):
            idents = [i for k, i in roots if k == kind]
            results.extend(
                export_many(
                    engine,
                    kind,
                    idents,
                    out_dir,
                    workers=workers,
                    spec=spec,
                    options=options,
                    progress=progress,
                )
            )
        stage.deliver(results)
    _report(results, as_json)


def _report(results: list[Any], as_json: bool) -> None:
    """Print what was exported (data on stdout); raise for what failed."""
    from bundler.errors import BundlerError

    failures = [r for r in results if isinstance(r, BundlerError)]
    done = [r for r in results if not isinstance(r, BundlerError)]
    if as_json:
        print_json([r.summary() for r in done])
    else:
        for r in done:
            totals = r.manifest.totals
            click.echo(f"{r.path}  {totals.rows} rows  {totals.bytes} bytes  {r.seconds:.2f}s")
    if failures:
        if len(failures) == 1 and not done:
            raise failures[0]
        for f in failures:
            click.echo(f"error: {f.line()}", err=True)
        raise BundlerError(f"{len(failures)} of {len(results)} export(s) failed (listed above)")


@click.command("pack")
@click.argument("bundle", type=BUNDLE_LOCATION)
@click.option(
    "-o", "--out", "out", required=True, type=click.Path(), help="File (or folder, or s3://…) to write."
)
@security_options("encrypt", "trust")
def pack_command(bundle: str, out: str) -> None:
    """Pack a bundle folder into one zstandard-compressed tar file (age-encrypted with --encrypt-to).

    \b
    Example:
      bundler pack bundles/customer-acme-20261115T120000-1a2b3c.bundle -o acme.bundle.tar.zst
      bundler pack bundles/customer-acme-20261115T120000-1a2b3c.bundle -o out/ --encrypt-to keys/site-b.age.pub
    """
    from bundler.secure.transfer import pack_anywhere

    click.echo(pack_anywhere(bundle, out))


@click.command("unpack")
@click.argument("packed", type=BUNDLE_LOCATION)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder (or s3://…) to unpack into.",
)
@security_options("identity", "trust")
def unpack_command(packed: str, out: str) -> None:
    """Unpack a packed (or age-encrypted, with --identity) bundle and verify every checksum.

    \b
    Example:
      bundler unpack acme.bundle.tar.zst -o incoming/
      bundler unpack acme.bundle.tar.zst.age --identity keys/site-b.age -o incoming/
    """
    from bundler.secure.transfer import unpack_anywhere

    click.echo(unpack_anywhere(packed, out))
