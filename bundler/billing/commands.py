"""``bundler db init`` and ``bundler db seed``: reference billing databases for demos and tests."""

from __future__ import annotations

from datetime import datetime

import click

from bundler.options import json_option, print_json, progress_for_cli

RELEASE_CHOICE = click.Choice(["r1", "r2"])


@click.command("init")
@click.argument("url")
@click.option("--release", type=RELEASE_CHOICE, required=True, help="Which release of the reference schema.")
@json_option
def init_command(url: str, release: str, as_json: bool) -> None:
    """Create the reference billing schema of a release (existing tables are kept).

    It also records which release the database is, so later commands need not be told.

    \b
    Example:
      bundler db init sqlite:///source.db --release r1
      bundler db init postgresql://postgres@localhost/target --release r2 --json
    """
    from bundler import tracking
    from bundler.billing.seed import init_db
    from bundler.db import begin_write, connect, redact

    engine = connect(url, create=True)
    init_db(engine, release)
    with begin_write(engine) as conn:
        info = tracking.register_system(conn, release)
    if as_json:
        print_json({"database": redact(url), "release": info.release, "system_id": info.system_id})
    else:
        click.echo(f"{redact(url)}: release {info.release}, system {info.system_id}")


@click.command("seed")
@click.argument("url")
@click.option(
    "--role",
    type=click.Choice(["source", "target"]),
    default="source",
    show_default=True,
    help="A source operator with customers, or a target with prerequisites and overlapping configuration.",
)
@click.option(
    "--release", type=RELEASE_CHOICE, default=None, help="Default: r1 for a source, r2 for a target."
)
@click.option(
    "--seed",
    "seed_value",
    type=int,
    default=1,
    show_default=True,
    help="Same seed, same rows, on every database.",
)
@click.option("--customers", type=int, default=20, show_default=True, help="Top-level retail customers.")
@click.option("--resellers", type=int, default=2, show_default=True)
@click.option("--accounts-per-customer", type=int, default=3, show_default=True)
@click.option("--xdrs-per-account", type=int, default=20, show_default=True)
@click.option("--xdrs", type=int, default=None, help="Total xDRs (overrides --xdrs-per-account).")
@click.option("--vendors", type=int, default=2, show_default=True)
@click.option("--destinations", type=int, default=2000, show_default=True)
@click.option(
    "--overlap",
    type=float,
    default=0.5,
    show_default=True,
    help="Target: share of the configuration it has too.",
)
@click.option(
    "--differing",
    type=float,
    default=0.3,
    show_default=True,
    help="Target: share of that with other content.",
)
@click.option(
    "--now",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    default=None,
    help="The moment the data is generated at (UTC; default: the moment it runs): usage reaches up "
    "to it, the current billing periods included; the same --now gives the same rows.",
)
@json_option
def seed_command(
    url: str,
    role: str,
    release: str | None,
    seed_value: int,
    customers: int,
    resellers: int,
    accounts_per_customer: int,
    xdrs_per_account: int,
    xdrs: int | None,
    vendors: int,
    destinations: int,
    overlap: float,
    differing: float,
    now: datetime | None,
    as_json: bool,
) -> None:
    """Fill a database with a deterministic synthetic operator (source) or prepare a target.

    \b
    Example:
      bundler db seed sqlite:///source.db --customers 1000 --xdrs-per-account 500
      bundler db seed sqlite:///target.db --role target --overlap 0.5
      bundler db seed sqlite:///source.db --now 2026-12-01T00:30:00
    """
    from bundler import tracking
    from bundler.billing.seed import seed_source, seed_target
    from bundler.db import begin_write, connect, redact

    engine = connect(url, create=True)
    release = release or ("r1" if role == "source" else "r2")
    now = now or tracking.now()
    with progress_for_cli() as progress:
        if role == "source":
            counts = seed_source(
                engine,
                release=release,
                seed=seed_value,
                customers=customers,
                resellers=resellers,
                accounts_per_customer=accounts_per_customer,
                xdrs_per_account=xdrs_per_account,
                xdrs=xdrs,
                vendors=vendors,
                destinations=destinations,
                progress=progress,
                now=now,
            )
        else:
            from bundler.billing.seed import init_db

            init_db(engine, release)
            counts = seed_target(
                engine,
                release=release,
                seed=seed_value,
                overlap=overlap,
                differing=differing,
                destinations=destinations,
                progress=progress,
                now=now,
            )
    with begin_write(engine) as conn:
        tracking.register_system(conn, release)
    if as_json:
        print_json({"release": release, "role": role, "rows": counts})
    else:
        total = sum(counts.values())
        click.echo(
            f"{redact(url)}: {role} of release {release}, {total:,} rows in {sum(1 for v in counts.values() if v)} tables"
        )
