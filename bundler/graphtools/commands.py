"""``bundler graph infer`` and ``bundler graph check``."""

from __future__ import annotations

import click

from bundler.options import json_option, print_json


@click.group("graph")
def graph() -> None:
    """Start an entity graph from a database's catalog, and check one against a database.

    \b
    Example:
      bundler graph infer sqlite:///library.db --root member=members -o library.json
      bundler graph check --spec library.json --db sqlite:///library.db
    """


@graph.command("infer")
@click.argument("url", metavar="URL")
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="File to write (default: stdout).",
)
@click.option(
    "--root",
    "roots",
    multiple=True,
    metavar="KIND=TABLE",
    help="A root kind and its table (repeatable): the tables that belong to it become owned.",
)
@click.option(
    "--system", default="inferred", show_default=True, help="Name of the system the graph describes."
)
@click.option("--release", default="v1", show_default=True, help="Release name of the graph.")
@click.option("--schema", default=None, help="Database schema to read (default: the connection's).")
def infer_command(
    url: str, out: str | None, roots: tuple[str, ...], system: str, release: str, schema: str | None
) -> None:
    """Write a graph of a live database: tables, keys, foreign keys and exact types from its
    catalog; scopes and natural keys guessed, each table's doc marked REVIEW: with what was guessed.

    The graph validates as written; review it (usage tables and their time column, natural
    keys of surrogate-keyed tables, references the database does not enforce) before use.

    \b
    Example:
      bundler graph infer sqlite:///library.db --root member=members -o library.json
      bundler graph infer postgresql://app@db/fleet --root vehicle=vehicles --system fleet --release 3
    """
    import json
    from pathlib import Path

    from bundler.db import connect
    from bundler.errors import UsageError
    from bundler.graphtools.infer import infer_graph

    kinds: dict[str, str] = {}
    for text in roots:
        kind, sep, table = text.partition("=")
        if not sep or not kind or not table:
            raise UsageError(f"--root {text!r}: expected KIND=TABLE", hint="e.g. --root member=members")
        kinds[kind] = table
    inferred = infer_graph(connect(url), system=system, release=release, roots=kinds, schema=schema)
    text = json.dumps(inferred.doc, indent=2, ensure_ascii=False) + "\n"
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}: {len(inferred.doc['tables'])} table(s) to review", err=True)
    else:
        click.echo(text, nl=False)
    for table, reason in inferred.skipped.items():
        click.echo(f"skipped {table}: {reason}", err=True)


@graph.command("check")
@click.option("--spec", required=True, type=click.Path(exists=True, dir_okay=False), help="The entity graph.")
@click.option("--db", "db_url", required=True, metavar="URL", help="The database it describes.")
@json_option
def check_command(spec: str, db_url: str, as_json: bool) -> None:
    """Say what the graph names that the database lacks (exit 1), and what it leaves out.

    \b
    Example:
      bundler graph check --spec library.json --db sqlite:///library.db
    """
    from bundler.db import connect
    from bundler.errors import BundlerError
    from bundler.graph import load_graph
    from bundler.graphtools.check import check_graph

    g = load_graph(spec)
    with connect(db_url).connect() as conn:
        report = check_graph(conn, g)
    if as_json:
        print_json(report.to_dict())
    else:
        for line in report.lacks:
            click.echo(f"lacks: {line}")
        for line in report.left_out:
            click.echo(f"left out: {line}")
        if not report.lacks and not report.left_out:
            click.echo("the graph and the database agree")
    if report.lacks:
        raise BundlerError(f"the database lacks {len(report.lacks)} table(s) or column(s) the graph names")
