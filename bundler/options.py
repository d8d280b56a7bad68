"""Reusable click options and output helpers shared by every command module."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from bundler.progress import Progress

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(f)


def spec_option(f: F) -> F:
    return click.option(
        "--spec",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Entity graph to use instead of the shipped graph of the database's release.",
    )(f)


def source_option(f: F) -> F:
    return click.option(
        "--source", "source", required=True, metavar="URL", help="Source database (SQLAlchemy URL)."
    )(f)


def target_option(f: F) -> F:
    return click.option(
        "--target", "target", required=True, metavar="URL", help="Target database (SQLAlchemy URL)."
    )(f)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@contextmanager
def progress_for_cli(enabled: bool = True) -> Iterator[Progress]:
    """A progress bar on stderr, or nothing when disabled."""
    from bundler.progress import NullProgress, RichProgress

    if not enabled:
        yield NullProgress()
        return
    with RichProgress() as progress:
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
