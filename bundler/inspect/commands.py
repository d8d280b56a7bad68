"""``bundler inspect summary|verify|query|diff``: thin click commands over :mod:`bundler.inspect`.

Every command takes bundle folders or packed ``.bundle.tar.zst`` files; BUNDLE arguments
may be globs (expanded here too, for shells that do not) or folders of bundles. Data goes
to stdout (tables for people, ``--json`` / ``--format`` for programs), notes to stderr.
Heavy modules (duckdb, pyarrow, rich) are imported inside the commands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bundler.errors import ExitCode, UsageError
from bundler.options import remember_json
from bundler.secure.options import security_options

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from bundler.inspect.diff import DiffReport, TableDiff
    from bundler.inspect.summary import BundleSummary, Summary
    from bundler.inspect.verify_report import VerifyReport

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

spec_option = click.option(
    "--spec",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Entity graph file to read the bundles with (default: the graph of each bundle's release).",
)
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    callback=remember_json,
    help="Print JSON for programs instead of tables (and a failure as a JSON error).",
)


def _console() -> Console:
    from rich.console import Console

    out = sys.stdout
    tty = bool(getattr(out, "isatty", lambda: False)())
    return Console(file=out, width=None if tty else 200, markup=False, highlight=False, emoji=False)


def _note(message: str) -> None:
    click.echo(message, err=True)


def _paths(patterns: Sequence[str]) -> list[Path]:
    from bundler.inspect.query import expand_bundle_paths

    return expand_bundle_paths(patterns)


def _grid(*columns: str, **options: Any) -> Table:
    """A rich table without borders; a column named ``"rows>"`` is ``rows``, right-aligned."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, **options)
    for name in columns:
        if name.endswith(">"):
            table.add_column(name[:-1], justify="right")
        else:
            table.add_column(name, justify="left")
    return table


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@click.group("inspect", context_settings=CONTEXT_SETTINGS)
def inspect() -> None:
    """Audit and validate bundles offline with DuckDB (no database needed).

    Works on bundle folders and packed .bundle.tar.zst files alike.

    \b
    Example:
      bundler inspect summary out/*.bundle
      bundler inspect verify out/customer-acme-*.bundle
    """


# -- summary ---------------------------------------------------------------------------------


@inspect.command(context_settings=CONTEXT_SETTINGS)
@click.argument("bundles", nargs=-1, required=True)
@json_option
@click.option("--full", is_flag=True, help="With several bundles, also print each bundle's details.")
@spec_option
@security_options("trust", "identity", "show")
def summary(bundles: tuple[str, ...], as_json: bool, full: bool, spec: Path | None) -> None:
    """What bundles hold: kind, root, source, usage window, tables, prerequisites, other roots' rows.

    One bundle: its details. Several (or a glob): one line per bundle, then the totals
    per table (--full adds each bundle's details); --json always has everything.

    \b
    Example:
      bundler inspect summary demo/bundles/customer-*.bundle
      bundler inspect summary 'out/*.bundle' --json
    """
    from bundler.inspect.summary import summarize

    result = summarize(_paths(bundles), spec=spec)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
        return
    _print_summary(result, full=full or len(result.bundles) == 1)


def _print_summary(result: Summary, *, full: bool) -> None:
    console = _console()
    if full:
        for b in result.bundles:
            _print_bundle(console, b)
    if len(result.bundles) > 1:
        _print_overview(console, result)


def _print_overview(console: Console, result: Summary) -> None:
    """One line per bundle, then the totals per table."""
    from rich.text import Text

    overview = _grid("bundle", "kind", "root", "usage", "rows>", "bytes>", "needs>")
    for b in result.bundles:
        overview.add_row(
            Text(b.bundle_id),
            b.kind,
            Text(b.root_text),
            Text(b.window_text),
            str(b.rows),
            _size(b.bytes),
            str(sum(p.rows for p in b.prerequisites)),
        )
    console.print(overview)
    console.print()
    totals = result.totals
    kinds = ", ".join(f"{n} {k}" for k, n in totals["kinds"].items())
    console.print(
        Text(
            f"totals: {totals['bundles']} bundles ({kinds}), {totals['rows']} rows, {_size(totals['bytes'])}",
            style="bold",
        )
    )
    table = _grid("table", "bundles>", "rows>", "bytes>", show_edge=False)
    for name, t in totals["tables"].items():
        table.add_row(Text(name), str(t["bundles"]), str(t["rows"]), _size(t["bytes"]))
    console.print(table)


def _print_bundle(console: Console, b: BundleSummary) -> None:
    from rich.table import Table
    from rich.text import Text

    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    for label, value in _facts(b):
        head.add_row(Text(label), Text(str(value)))
    console.print(head)
    encrypted = any(t.encrypted for t in b.tables)  # a column only for bundles that have some
    tables = _grid("table", "scope", "rows>", "bytes>", *(["encrypted columns"] if encrypted else []))
    for t in b.tables:
        shown = [Text(", ".join(t.encrypted))] if encrypted else []
        tables.add_row(Text(t.name), t.scope, str(t.rows), _size(t.bytes), *shown)
    tables.add_row(Text("total", style="bold"), "", str(b.rows), _size(b.bytes), *([""] if encrypted else []))
    console.print(tables)
    if b.prerequisites:
        pre = _grid("needs in the target", "by", "scope", "rows>")
        for p in b.prerequisites:
            pre.add_row(Text(p.table), Text(p.column), p.scope, str(p.rows))
        console.print(pre)
    else:
        console.print("needs in the target: nothing")
    for line in _other_root_lines(b):
        console.print(Text(line))
    console.print()


def _other_root_lines(b: BundleSummary, shown: int = 5) -> list[str]:
    """What the bundle references of other roots: left open by a load until their roots' loads."""
    if not b.other_roots:
        return []
    whose = (
        "owned rows it references, of its root (brought by the bundle it depends on) or of other roots"
        if b.depends_on
        else "rows of other roots it references"
    )
    lines = [f"{whose} (a load leaves those the target lacks open until their root's load brings them):"]
    for o in b.other_roots:
        more = f", … {len(o.keys) - shown} more" if len(o.keys) > shown else ""
        lines.append(f"  {o.table} by {o.column}: {len(o.keys)} row(s): {', '.join(o.keys[:shown])}{more}")
    return lines


def _facts(b: BundleSummary) -> list[tuple[str, Any]]:
    """(label, value) of each line of a bundle's details."""
    src = b.source
    facts: list[tuple[str, Any]] = [
        ("bundle", f"{b.bundle_id}  ({b.path})"),
        ("kind", b.kind),
        ("root", b.root_text),
        ("source", f"{src.get('system_id')} release {src.get('release')} ({src.get('dialect')})"),
        ("graph", f"{b.graph.get('system')} release {b.graph.get('release')}"),
        ("created", f"{b.created_at}" + ("  (root marked Exported)" if b.marked else "")),
        ("usage", b.window_text),
    ]
    for table, span in b.usage_span.items():
        facts.append(("", f"{table}.{span['column']} from {span['first']} to {span['last']}"))
    facts.append(("depends on", ", ".join(b.depends_on) or "-"))
    facts.append(("format", f"version {b.format_version}"))
    return facts


# -- verify ----------------------------------------------------------------------------------


@inspect.command(context_settings=CONTEXT_SETTINGS)
@click.argument("bundles", nargs=-1, required=True)
@click.option(
    "--with",
    "layers",
    multiple=True,
    metavar="BUNDLE",
    help="An earlier bundle a layered bundle refers to (repeatable): check that it carries "
    "every row the layered bundle names it for.",
)
@json_option
@spec_option
@security_options("trust", "identity", "show")
def verify(bundles: tuple[str, ...], layers: tuple[str, ...], as_json: bool, spec: Path | None) -> None:
    """Check bundles completely and report every problem, not only the first.

    Checks the manifest against its JSON Schema and format version (a newer version is
    refused by name), every checksum, that the bundle holds no file the manifest does not
    list, the Parquet schemas against the entity graph (names, order, exact types), row
    counts, NOT NULL columns, unique primary keys, that every reference resolves (to a row
    in the bundle, or to a prerequisite or outside row the manifest declares by natural
    key, of the scope the graph gives its table), that usage rows lie inside the declared
    window, that the kind agrees with the root, and that every owned and usage row belongs
    to the root through owner references to rows the bundle carries.

    Output (stdout): one line per problem, "BUNDLE: FILE: problem", or "ok: BUNDLE (...)"
    for a bundle without problems; warnings and the tally go to stderr. With --json, a list
    of reports. Exit status 4 when any bundle has a problem.

    \b
    Example:
      bundler inspect verify demo/bundles/*.bundle
      bundler inspect verify 'out/*.bundle' 'out/*.bundle.tar.zst' --json
      bundler inspect verify out/customer-acme-*.bundle --with 'out/config-*.bundle'
    """
    from contextlib import ExitStack

    from bundler.bundle import open_bundle
    from bundler.inspect.verify import verify_bundle

    reports = []
    with ExitStack() as stack:
        opened = [stack.enter_context(open_bundle(p)) for p in (_paths(layers) if layers else [])]
        by_id = {b.bundle_id: b for b in opened}
        for path in _paths(bundles):
            report = verify_bundle(path, spec=spec, layers=by_id or None)
            reports.append(report)
            _echo_report(report, as_json=as_json)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2, ensure_ascii=False))
    invalid = [r for r in reports if not r.ok]
    problems = sum(len(r.problems) for r in reports)
    if invalid:
        _note(f"{len(invalid)} of {len(reports)} bundle(s) invalid, {problems} problem(s)")
        click.get_current_context().exit(int(ExitCode.BUNDLE_INVALID))
    _note(f"{len(reports)} bundle(s) verified, no problems")


def _echo_report(report: VerifyReport, *, as_json: bool) -> None:
    """A bundle's warnings (stderr) and, unless the output is JSON, its problems or ``ok``."""
    for warning in report.warnings:
        _note(f"warning: {report.bundle}: {warning}")
    if as_json:
        return
    if report.ok:
        click.echo(
            f"ok: {report.bundle} ({report.tables} tables, {report.rows} rows, {report.seconds:.2f} s)"
        )
    for line in report.lines():
        click.echo(line)


# -- query -----------------------------------------------------------------------------------


@inspect.command(context_settings=CONTEXT_SETTINGS)
@click.argument("args", nargs=-1, required=True, metavar="BUNDLE... SQL")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output: a table for people, CSV or a JSON array of objects for programs.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="Print at most this many rows (default: 100 for --format table, all otherwise).",
)
@json_option
@spec_option
@security_options("trust", "identity", "show")
def query(args: tuple[str, ...], fmt: str, limit: int | None, spec: Path | None, as_json: bool) -> None:
    """Run DuckDB SQL over bundles: each table is a view named after it.

    Over several bundles, each view holds the rows of every bundle, with a first column
    bundle_id. Tables of the entity graph that no bundle carries are empty views. In CSV
    and JSON, decimals, dates and timestamps are exact text and NULL is empty / null.

    \b
    Example:
      bundler inspect query demo/bundles/customer-*.bundle 'SELECT i_account, count(*) FROM xdrs GROUP BY ALL'
      bundler inspect query 'out/*.bundle' 'SELECT bundle_id, sum(charged_amount) FROM xdrs GROUP BY ALL' --format csv
      bundler inspect query 'out/*.bundle' 'SELECT count(*) AS n FROM accounts' --json
    """
    from bundler.inspect.query import query as run_query

    if len(args) < 2:
        raise UsageError(
            "give one or more bundles, then the SQL", hint="e.g. bundler inspect query B.bundle 'SELECT 1'"
        )
    *bundles, sql = args
    paths = _paths(bundles)
    if as_json:
        fmt = "json"  # --json is --format json
    if fmt == "table" and limit is None:
        limit = 100
    result = run_query(paths, sql, sys.stdout, fmt=fmt, spec=spec, limit=limit, table_writer=_print_rows)
    sys.stdout.flush()  # the data first, then the count on stderr
    if result.rows_total > result.rows_written:
        _note(f"showing {result.rows_written} of {result.rows_total} rows (--limit)")
    else:
        _note(f"{result.rows_total} row(s)")


def _print_rows(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    from rich.table import Table
    from rich.text import Text

    from bundler.inspect.query import render

    table = Table(box=None, pad_edge=False)
    for name in columns:
        table.add_column(Text(name))
    for row in rows:
        table.add_row(*(Text("NULL", style="dim") if v is None else Text(str(render(v))) for v in row))
    _console().print(table)


# -- diff ------------------------------------------------------------------------------------


@inspect.command(context_settings=CONTEXT_SETTINGS)
@click.argument("a")
@click.argument("b")
@json_option
@spec_option
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Example rows shown per table and kind of change (all are counted).",
)
@security_options("trust", "identity", "show")
def diff(a: str, b: str, as_json: bool, spec: Path | None, limit: int) -> None:
    """Compare bundle A (old) with bundle B (new), table by table.

    Rows are matched by natural key (a reference in a natural key stands for the
    referenced row's natural key); for each table: rows added, removed and changed, and
    the changed columns with their old and new values.

    \b
    Example:
      bundler inspect diff out/customer-acme-20261101T090000-1a2b3c.bundle out/customer-acme-20261115T120000-811a9f.bundle
      bundler inspect diff old.bundle.tar.zst new.bundle --json
    """
    from bundler.inspect.diff import diff as run_diff

    (path_a,) = _one(a)
    (path_b,) = _one(b)
    report = run_diff(path_a, path_b, spec=spec, limit=limit)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        _print_diff(report)
    _note("the bundles hold the same rows" if report.identical else "the bundles differ")


def _one(pattern: str) -> list[Path]:
    paths = _paths([pattern])
    if len(paths) != 1:
        raise UsageError(f"{pattern!r} names {len(paths)} bundles; diff compares exactly two")
    return paths


def _print_diff(report: DiffReport) -> None:
    from rich.text import Text

    console = _console()
    console.print(Text(f"A: {report.a_id}  ({report.a})\nB: {report.b_id}  ({report.b})"))
    table = _grid("table", "A rows>", "B rows>", "added>", "removed>", "changed>", "changed columns")
    for t in report.tables:
        if not t.differs:
            continue
        cols = ", ".join(f"{c} ({n})" for c, n in t.changed_columns.items())
        table.add_row(
            Text(t.table),
            str(t.rows_a),
            str(t.rows_b),
            str(t.added),
            str(t.removed),
            str(t.changed),
            Text(cols),
        )
    same = [t.table for t in report.tables if not t.differs]
    if table.row_count:
        console.print(table)
    console.print(Text(f"unchanged: {', '.join(same) if same else '-'}"))
    for t in report.tables:
        if t.examples or t.notes:
            _print_examples(console, t)


_SIGN = {"added": "+", "removed": "-", "changed": "~"}


def _print_examples(console: Console, t: TableDiff) -> None:
    """A table's notes and example rows, and how many more there are."""
    from rich.text import Text

    from bundler.keys import describe

    console.print(Text(f"\n{t.table} (matched by {', '.join(t.matched_by)})", style="bold"))
    for note in t.notes:
        console.print(Text(f"  note: {note}"))
    for ex in t.examples:
        line = f"  {_SIGN[ex.change]} {describe(ex.key)}"
        if ex.columns:
            line += ": " + "; ".join(f"{c} {old!r} → {new!r}" for c, (old, new) in ex.columns.items())
        console.print(Text(line))
    shown = {k: sum(1 for e in t.examples if e.change == k) for k in _SIGN}
    hidden = {"added": t.added, "removed": t.removed, "changed": t.changed}
    more = [f"{hidden[k] - shown[k]} more {k}" for k in _SIGN if hidden[k] > shown[k]]
    if more:
        console.print(Text(f"  … {', '.join(more)} (--limit)"))
