"""Click options of :mod:`bundler.secure`, added to a command by one decorator.

``@security_options("trust", "identity")`` adds ``--trust`` and ``--identity`` to a command
and runs it with those settings (merged over the environment's) installed for the process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bundler.secure import current, using

F = TypeVar("F", bound=Callable[..., Any])

_KEY_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

OPTIONS: dict[str, Callable[[F], F]] = {
    "sign": click.option(
        "--sign-with",
        "sec_sign_key",
        type=_KEY_FILE,
        default=None,
        metavar="KEYFILE",
        help="Sign the manifest with this Ed25519 private key (bundler keys new; env BUNDLER_SIGN_KEY).",
    ),
    "trust": click.option(
        "--trust",
        "sec_trust",
        type=_KEY_FILE,
        multiple=True,
        metavar="KEYFILE",
        help="A trusted signer's public key (repeatable; env BUNDLER_TRUST): bundles they did not "
        "sign are refused (exit 4).",
    ),
    "identity": click.option(
        "--identity",
        "sec_identities",
        type=_KEY_FILE,
        multiple=True,
        metavar="FILE",
        help="age identity file to decrypt encrypted bundles with (env BUNDLER_IDENTITY).",
    ),
    "encrypt": click.option(
        "--encrypt-to",
        "sec_recipients",
        multiple=True,
        metavar="RECIPIENT",
        help="Encrypt to this age recipient (age1…, or a file of them; repeatable; env BUNDLER_ENCRYPT_TO); "
        "sensitive columns are encrypted column by column too.",
    ),
    "encrypt_columns": click.option(
        "--encrypt-columns-to",
        "sec_column_recipients",
        multiple=True,
        metavar="RECIPIENT",
        help="Encrypt only the sensitive columns (passwords, card numbers, PINs) to this age recipient "
        "(repeatable; env BUNDLER_ENCRYPT_COLUMNS_TO): the rest stays readable without the key.",
    ),
    "show": click.option(
        "--show-sensitive",
        "sec_show_sensitive",
        is_flag=True,
        help="Show sensitive columns (passwords, card numbers, PINs) instead of masking them.",
    ),
}


def security_options(*which: str) -> Callable[[F], F]:
    """Add the named options (``sign``, ``trust``, ``identity``, ``encrypt``, ``encrypt_columns``,
    ``show``) to a command."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            security = current().merged(
                sign_key=kwargs.pop("sec_sign_key", None),
                trust=tuple(kwargs.pop("sec_trust", ())),
                identities=tuple(kwargs.pop("sec_identities", ())),
                recipients=tuple(kwargs.pop("sec_recipients", ())),
                column_recipients=tuple(kwargs.pop("sec_column_recipients", ())),
                show_sensitive=kwargs.pop("sec_show_sensitive", False),
            )
            with using(security):
                return f(*args, **kwargs)

        decorated: Any = wrapper
        for name in reversed(which):
            decorated = OPTIONS[name](decorated)
        return decorated

    return decorate


class BundleLocation(click.ParamType):
    """A bundle folder or file that exists, or an ``s3://`` URL (checked when it is opened)."""

    name = "bundle"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from bundler.store import is_remote

        text = str(value)
        if not is_remote(text) and not Path(text).exists():
            self.fail(f"{text!r} does not exist (a bundle folder, a packed bundle, or s3://…)", param, ctx)
        return text


BUNDLE_LOCATION = BundleLocation()
