"""The ``bundler`` command line: thin click commands over the library API.

Each command parses its options, calls one library function and prints the result.
Errors are turned into one line on stderr and an exit code at a single boundary
(:class:`BundlerGroup`); ``bundler --debug ...`` shows the traceback instead. Heavy
modules (pyarrow, duckdb, sqlalchemy) are imported inside the commands that use them, so
``bundler --help`` stays instant.
"""

from __future__ import annotations

import traceback
from typing import Any

import click

from bundler import __version__
from bundler.errors import BundlerError, ExitCode

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

DEBUG_KEY = "bundler.debug"


def _one_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def is_debug(ctx: click.Context | None = None) -> bool:
    """Whether ``--debug`` was given to this invocation."""
    ctx = ctx or click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(DEBUG_KEY))


class BundlerGroup(click.Group):
    """The top-level group: the one place where exceptions become a line and an exit code.

    - :class:`~bundler.errors.BundlerError`: ``error: <line>``, exit with its ``exit_code``;
    - click's own exceptions (usage errors, ``--help``, aborts) pass through to click;
    - anything else: ``error: <type>: <message> (run with --debug for the traceback)``, exit 1.

    With ``--debug`` the traceback is printed first; the exit code stays the same.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BundlerError as exc:
            if is_debug(ctx):
                traceback.print_exc()
            line = _one_line(exc.line()) or type(exc).__name__
            click.echo(f"error: {line}", err=True)
            _json_error(ctx, exc, line, exc.exit_code)
            ctx.exit(int(exc.exit_code))
        except Exception as exc:
            if is_debug(ctx):
                traceback.print_exc()
                click.echo(f"error: {type(exc).__name__}: {_one_line(str(exc))}", err=True)
            else:
                message = _one_line(str(exc))
                shown = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
                click.echo(f"error: {shown} (run with --debug for the traceback)", err=True)
            _json_error(ctx, exc, f"{type(exc).__name__}: {_one_line(str(exc))}", ExitCode.FAILED)
            ctx.exit(int(ExitCode.FAILED))


def _json_error(ctx: click.Context, exc: BaseException, line: str, code: ExitCode) -> None:
    """With ``--json``, the failure as a JSON object on stdout too, for the program reading it."""
    from bundler.options import print_json, wants_json

    if wants_json(ctx):
        hint = exc.hint if isinstance(exc, BundlerError) else None
        error = {"type": type(exc).__name__, "exit_code": int(code), "message": line, "hint": hint}
        print_json({"error": error})


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta[DEBUG_KEY] = value
    return value


@click.group("bundler", cls=BundlerGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="On failure, show the full traceback instead of one line.",
)
@click.version_option(__version__, "--version", prog_name="bundler", message="%(prog)s %(version)s")
def main() -> None:
    """Move billing customers between two installations of a billing system.

    \b
    Example:
      bundler demo
      bundler --debug COMMAND ...   (show the traceback of a failure)
    """


@main.command("demo")
@click.option(
    "--dir",
    "folder",
    default="demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to build it.",
)
@click.option(
    "--customers", default=8, show_default=True, type=click.IntRange(1, 100), help="Customers to migrate."
)
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(1, 16), help="Roots migrated at a time."
)
@click.option(
    "--now",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    default=None,
    help="The moment the demo's data is generated at and migrated (UTC; default: now).",
)
def demo(folder: str, customers: int, workers: int, now: Any) -> None:
    """Seed a source (r1) and a target (r2) in SQLite and migrate between them.

    \b
    Example:
      bundler demo
      bundler demo --dir /tmp/demo --customers 12 --workers 1
      bundler demo --dir /tmp/demo --now 2026-12-01T00:30:00
    """
    from pathlib import Path

    from bundler.demo import run_demo

    summary = run_demo(Path(folder), customers=customers, workers=workers, now=now)
    if summary["failed"]:
        raise BundlerError(f"{summary['failed']} root(s) of the demo failed (listed above)")


@main.group()
def db() -> None:
    """Create and fill reference billing databases (for demos and tests).

    \b
    Example:
      bundler db init --help
    """


def _register() -> None:
    from bundler.clean.commands import clean_command
    from bundler.export.commands import export_command, pack_command, unpack_command
    from bundler.graphtools.commands import graph
    from bundler.inspect.commands import inspect
    from bundler.lineup.commands import migrate_command
    from bundler.load.commands import load_command
    from bundler.plan_commands import list_command
    from bundler.recordings.commands import recordings
    from bundler.recover_commands import recover_command
    from bundler.reverse.commands import reverse
    from bundler.secure.commands import keys
    from bundler.usage.commands import usage

    for command in (
        export_command,
        pack_command,
        unpack_command,
        inspect,
        load_command,
        migrate_command,
        recordings,
        clean_command,
        reverse,
        recover_command,
        usage,
        list_command,
        graph,
        keys,
    ):
        main.add_command(command)
    from bundler.billing.commands import init_command, seed_command

    db.add_command(init_command)
    db.add_command(seed_command)
    from bundler.options import add_common_options

    add_common_options(main)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
