"""``bundler export``, ``bundler pack`` and ``bundler unpack``."""

from __future__ import annotations

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
)
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
@root_option
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
    default=None,
    type=click.Path(file_okay=False),
    help="Folder to write bundles into (or s3://bucket/prefix).",
)
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Print the roots with their expected bundle sizes; mark and write nothing (no --out needed).",
)
@click.option(
    "--xdrs",
    default="current",
    show_default=True,
    metavar="current|all|none|since=DATE",
    help="Which usage travels: the root's current billing period, all, none (two-phase transfer), "
    "or since a date (midnight in each customer's own time zone).",
)
@click.option(
    "--usage-only",
    is_flag=True,
    help="Only the usage of a root exported earlier that its exports have not carried yet: "
    "the window's (second phase of --xdrs none) and every row that arrived since, each once.",
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
@security_options("sign", "encrypt", "encrypt_columns")
def export_command(
    source: str,
    customers: tuple[str, ...],
    resellers: tuple[str, ...],
    vendors: tuple[str, ...],
    roots: tuple[str, ...],
    configs: tuple[str, ...],
    out_dir: str | None,
    plan_only: bool,
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
      bundler export --source sqlite:///demo/source.db --customer 16 --customer 18 --plan
      bundler export --source sqlite:///demo/source.db --customer 16 --out demo/out/
      bundler export --source postgresql://billing@db/porta --reseller 42 --xdrs none --out bundles/
      bundler export --source sqlite:///demo/source.db --config products --config tariffs --out demo/out/
      bundler export --source sqlite:///demo/source.db --customer 18 --after demo/out/config-*.bundle --out demo/out/
      bundler export --source postgresql://billing@db/porta --customer acme --usage-only --out bundles/
      bundler export --source sqlite:///library.db --spec library.json --root member=C-17 --out bundles/
      bundler export --source sqlite:///s.db --customer acme --sign-with keys/site-a.key --encrypt-to keys/site-b.age.pub --out s3://moves/
      bundler export --source sqlite:///s.db --customer acme --encrypt-columns-to keys/site-b.age.pub --out audit/
    """
    from bundler.db import connect
    from bundler.errors import UsageError
    from bundler.export import ConfigSelection, ExportOptions, export_config, export_many
    from bundler.secure.transfer import Staging

    named = root_pairs(roots, {"customer": customers, "reseller": resellers, "vendor": vendors})
    if not named and not configs:
        raise UsageError(
            "name what to export", hint="--customer, --reseller, --vendor, --root KIND=KEY or --config"
        )
    if configs and (named or usage_only):
        raise UsageError("--config exports configuration alone", hint="export roots in a separate call")
    engine = connect(source)
    if plan_only:
        from bundler.lineup import RootSelector
        from bundler.lineup.commands import print_plan
        from bundler.plan import plan_migration

        if configs:
            raise UsageError("--plan covers roots, not --config")
        selectors = [RootSelector(kind, (i,)) for kind, i in named]
        with progress_for_cli() as progress:
            plan = plan_migration(engine, None, selectors, xdrs=xdrs, spec=spec, progress=progress)
        print_plan(plan, as_json)
        return
    if out_dir is None:
        raise UsageError("--out is required", hint="the folder to write the bundles into")
    options = ExportOptions(
        xdrs=xdrs, usage_only=usage_only, mark=not no_mark, after=after, skip_empty=usage_only
    )
    results: list[Any] = []
    with Staging(out_dir) as stage, progress_for_cli() as progress:
        out_dir = stage.local
        if configs:
            selections = [ConfigSelection.parse(c) for c in configs]
            results.append(export_config(engine, selections, out_dir, spec=spec, progress=progress))
        for kind in dict.fromkeys(k for k, _ in named):
            idents = [i for k, i in named if k == kind]
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
    from bundler.export.usage import NothingNew

    for nothing in [r for r in results if isinstance(r, NothingNew)]:
        click.echo(f"{nothing.message}: no bundle written", err=True)
    results = [r for r in results if not isinstance(r, NothingNew)]
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
@click.argument("bundles", nargs=-1, required=True, type=BUNDLE_LOCATION)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(),
    help="File (or folder: a folder for several; or s3://…) to write.",
)
@security_options("encrypt", "trust")
@json_option
def pack_command(bundles: tuple[str, ...], out: str, as_json: bool) -> None:
    """Pack bundle folders into zstandard-compressed tar files, one per bundle (age-encrypted with --encrypt-to).

    \b
    Example:
      bundler pack bundles/customer-acme-20261115T120000-1a2b3c.bundle -o acme.bundle.tar.zst
      bundler pack demo/bundles/*.bundle -o packed/ --json
      bundler pack bundles/customer-acme-20261115T120000-1a2b3c.bundle -o out/ --encrypt-to keys/site-b.age.pub
    """
    from pathlib import Path

    from bundler.secure.transfer import pack_anywhere

    if len(bundles) > 1 and "://" not in out:
        Path(out).mkdir(parents=True, exist_ok=True)
    _paths([pack_anywhere(bundle, out) for bundle in bundles], as_json)


@click.command("unpack")
@click.argument("packed", nargs=-1, required=True, type=BUNDLE_LOCATION)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder (or s3://…) to unpack into.",
)
@security_options("identity", "trust")
@json_option
def unpack_command(packed: tuple[str, ...], out: str, as_json: bool) -> None:
    """Unpack packed (or age-encrypted, with --identity) bundles and verify every checksum.

    \b
    Example:
      bundler unpack acme.bundle.tar.zst -o incoming/
      bundler unpack packed/*.bundle.tar.zst -o incoming/ --json
      bundler unpack acme.bundle.tar.zst.age --identity keys/site-b.age -o incoming/
    """
    from bundler.secure.transfer import unpack_anywhere

    _paths([unpack_anywhere(p, out) for p in packed], as_json)


def _paths(paths: list[Any], as_json: bool) -> None:
    if as_json:
        print_json([{"path": str(p)} for p in paths])
    else:
        for p in paths:
            click.echo(str(p))
