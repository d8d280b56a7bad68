"""Reusable click options and output helpers shared by every command module."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from bundler.config import Config
    from bundler.progress import Progress

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_KEY = "bundler.config_file"
JSON_KEY = "bundler.json"
VERBOSE_KEY = "bundler.verbose"
QUIET_KEY = "bundler.quiet"


def remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON_KEY] = True  # errors are printed as JSON too (see bundler.cli.BundlerGroup)
    return value


def json_option(f: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=remember_json,
        help="Print the result as JSON on stdout (and a failure as a JSON error).",
    )(f)


def wants_json(ctx: click.Context | None = None) -> bool:
    """Whether ``--json`` was given to this invocation and no JSON result was printed yet."""
    ctx = ctx or click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(JSON_KEY) and not ctx.meta.get(JSON_PRINTED_KEY))


def spec_option(f: F) -> F:
    return click.option(
        "--spec",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Entity graph to use instead of the shipped graph of the database's release.",
    )(f)


def current_config(ctx: click.Context | None = None) -> Config:
    """The configuration file of this invocation (``--config-file``, ``$BUNDLER_CONFIG`` or
    ``./bundler.toml``), read once."""
    from bundler.config import load_config

    ctx = ctx or click.get_current_context()
    cached = ctx.meta.get("bundler.config")
    if cached is None:
        cached = ctx.meta["bundler.config"] = load_config(ctx.meta.get(CONFIG_KEY))
    return cached


def url_option(
    *names: str, side: str | None, dest: str | None = None, required: bool = True, help: str
) -> Callable[[F], F]:
    """A database option that takes a URL or a connection name of ``bundler.toml``.

    Left out, the URL comes from ``$BUNDLER_SOURCE`` / ``$BUNDLER_TARGET`` (by ``side``) and
    then from the file's ``[defaults]`` (see :mod:`bundler.config`); the command gets the
    resolved URL, or None when it is not ``required`` and nothing gives one.
    """
    from bundler.config import SIDE_ENV

    def resolve(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        from bundler.config import resolve_url
        from bundler.errors import UsageError

        url = resolve_url(value, side, current_config(ctx), option=names[0])
        if url is None and required:
            ways = f"give {names[0]} URL (or a connection NAME of bundler.toml)"
            if side in SIDE_ENV:
                ways += f", set ${SIDE_ENV[side]} or add [defaults] {side} = NAME to bundler.toml"
            raise UsageError(f"no {side or 'database'} given", hint=ways)
        return url

    envs = f" Default: ${SIDE_ENV[side]}, then [defaults] {side} of bundler.toml." if side in SIDE_ENV else ""
    decls = (*names, dest) if dest else names
    return click.option(*decls, default=None, metavar="URL|NAME", callback=resolve, help=help + envs)


source_option = url_option(
    "--source", side="source", help="Source database: SQLAlchemy URL or connection name."
)
target_option = url_option(
    "--target", side="target", help="Target database: SQLAlchemy URL or connection name."
)


def _store(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value:
            ctx.meta[key] = value
        return value

    return callback


def common_params() -> list[click.Parameter]:
    """``-v``, ``-q`` and ``--config-file``: given to every command by :func:`add_common_options`."""
    return [
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_store(VERBOSE_KEY),
            help="More detail on stderr: each bundle and table as it finishes.",
        ),
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            expose_value=False,
            callback=_store(QUIET_KEY),
            help="Only errors on stderr: no progress, no notes.",
        ),
        click.Option(
            ["--config-file"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            is_eager=True,
            callback=_store(CONFIG_KEY),
            envvar="BUNDLER_CONFIG",
            help="Configuration file with named connections (default: ./bundler.toml).",
        ),
    ]


def add_common_options(command: click.Command) -> None:
    """Give ``command`` (and, for a group, each of its commands) the common options."""
    if not any(getattr(p, "name", None) == "quiet" for p in command.params):
        command.params.extend(common_params())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_common_options(sub)


def verbosity(ctx: click.Context | None = None) -> int:
    """-1 with ``-q``, 0 by default, 1 or more with ``-v``."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return 0
    if ctx.meta.get(QUIET_KEY):
        return -1
    return int(ctx.meta.get(VERBOSE_KEY) or 0)


JSON_PRINTED_KEY = "bundler.json_printed"


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout; a failure after it prints no second document."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[JSON_PRINTED_KEY] = True


@contextmanager
def progress_for_cli(enabled: bool = True, *, main: tuple[str, ...] | None = None) -> Iterator[Progress]:
    """A progress bar on stderr, or nothing when disabled (or with ``-q``).

    ``main``: the tasks that stay on screen (a lineup's bar); the others are the work in
    flight, removed when done (see :class:`~bundler.progress.RichProgress`).
    """
    from bundler.progress import NullProgress, RichProgress

    if not enabled or verbosity() < 0:
        yield NullProgress()
        return
    with RichProgress(main=main, verbose=verbosity()) as progress:
        yield progress


def root_option(f: F) -> F:
    return click.option(
        "--root",
        "roots",
        multiple=True,
        metavar="KIND=KEY",
        help="A root of any kind the entity graph declares, by id or name (repeatable), e.g. member=C-17.",
    )(f)


def root_pairs(roots: tuple[str, ...], shortcuts: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """(kind, key) of every root named: the billing shortcuts (``--customer X``) first, then
    each ``--root KIND=KEY``."""
    from bundler.errors import UsageError

    pairs = [(kind, key) for kind, keys in shortcuts.items() for key in keys]
    for text in roots:
        kind, sep, key = text.partition("=")
        if not sep or not kind.strip() or not key.strip():
            raise UsageError(f"--root {text!r}: expected KIND=KEY", hint="e.g. --root member=C-17")
        pairs.append((kind.strip(), key.strip()))
    return pairs
