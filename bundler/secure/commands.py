"""``bundler keys new``: the key pairs sites sign and encrypt bundles with."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.options import json_option, print_json


@click.group("keys")
def keys() -> None:
    """Make the keys bundles are signed and encrypted with.

    \b
    Example:
      bundler keys new site-a --out keys/
      bundler keys new site-b --age --out keys/
    """


@keys.command("new")
@click.argument("name")
@click.option(
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder to write into.",
)
@click.option(
    "--age",
    "age",
    is_flag=True,
    help="An age (X25519) key pair to encrypt bundles to, instead of an Ed25519 signing key.",
)
@json_option
def new_command(name: str, out_dir: str, age: bool, as_json: bool) -> None:
    """Write a new key pair: NAME.key + NAME.pub (signing) or NAME.age + NAME.age.pub (encryption).

    The private file is readable by its owner only; give the public one to the other site
    (--trust NAME.pub on the target; --encrypt-to NAME.age.pub on the source).

    \b
    Example:
      bundler keys new site-a --out keys/     (then: export --sign-with keys/site-a.key)
      bundler keys new site-b --age --out keys/   (then: export --encrypt-to keys/site-b.age.pub)
    """
    from bundler.errors import UsageError

    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"{name!r} is not a key name", hint="a plain file name, e.g. site-a")
    if age:
        from bundler.secure.encryption import new_identity

        private, public = new_identity(Path(out_dir), name)
    else:
        from bundler.secure.signing import new_signing_key

        private, public = new_signing_key(Path(out_dir), name)
    if as_json:
        print_json({"private": str(private), "public": str(public)})
    else:
        click.echo(f"private: {private}  (keep it; mode 0600)")
        click.echo(f"public:  {public}")
