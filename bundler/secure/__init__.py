"""Bundles that travel between sites safely: signatures, encryption, masked secrets.

What a command was told (``--sign-with``, ``--trust``, ``--identity``, ``--encrypt-to``,
``--encrypt-columns-to``, ``--show-sensitive``, or the environment variables below) is one process-wide
:class:`Security`, installed by the CLI for the time of a command (:func:`using`) and read
where bundles are written and opened (:mod:`bundler.bundle`), so every command that reads
a bundle checks and decrypts it the same way. A library caller passes its own with
:func:`using`; without one, the environment variables are read.

- ``BUNDLER_SIGN_KEY``: the Ed25519 private key file exports sign with;
- ``BUNDLER_TRUST``: trusted public key files (separated by ``:``); when set, a bundle that
  is unsigned or not signed by one of them is refused (exit 4);
- ``BUNDLER_IDENTITY``: the age identity file encrypted bundles are decrypted with;
- ``BUNDLER_ENCRYPT_TO``: age recipients (``age1…`` or files of them, separated by ``,``);
- ``BUNDLER_ENCRYPT_COLUMNS_TO``: age recipients the sensitive columns alone are encrypted to
  (:mod:`bundler.secure.columns`; ``--encrypt-to`` encrypts them too, to its recipients).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

SIGN_KEY_ENV = "BUNDLER_SIGN_KEY"
TRUST_ENV = "BUNDLER_TRUST"
IDENTITY_ENV = "BUNDLER_IDENTITY"
ENCRYPT_TO_ENV = "BUNDLER_ENCRYPT_TO"
ENCRYPT_COLUMNS_TO_ENV = "BUNDLER_ENCRYPT_COLUMNS_TO"


@dataclass(frozen=True)
class Security:
    """How bundles are signed, checked, encrypted, decrypted and shown in this process."""

    sign_key: Path | None = None
    trust: tuple[Path, ...] = ()
    identities: tuple[Path, ...] = ()
    recipients: tuple[str, ...] = ()
    column_recipients: tuple[str, ...] = ()
    show_sensitive: bool = False

    @classmethod
    def from_env(cls) -> Security:
        env = os.environ
        return cls(
            sign_key=Path(env[SIGN_KEY_ENV]) if env.get(SIGN_KEY_ENV) else None,
            trust=tuple(Path(p) for p in env.get(TRUST_ENV, "").split(os.pathsep) if p),
            identities=tuple(Path(p) for p in env.get(IDENTITY_ENV, "").split(os.pathsep) if p),
            recipients=_listed(env.get(ENCRYPT_TO_ENV, "")),
            column_recipients=_listed(env.get(ENCRYPT_COLUMNS_TO_ENV, "")),
        )

    def merged(
        self,
        *,
        sign_key: Path | None = None,
        trust: tuple[Path, ...] = (),
        identities: tuple[Path, ...] = (),
        recipients: tuple[str, ...] = (),
        column_recipients: tuple[str, ...] = (),
        show_sensitive: bool = False,
    ) -> Security:
        """This one with what a command line gave (given options replace the environment's)."""
        return replace(
            self,
            sign_key=sign_key or self.sign_key,
            trust=trust or self.trust,
            identities=identities or self.identities,
            recipients=recipients or self.recipients,
            column_recipients=column_recipients or self.column_recipients,
            show_sensitive=show_sensitive or self.show_sensitive,
        )

    @property
    def columns_to(self) -> tuple[str, ...]:
        """Whom sensitive columns are encrypted to: ``--encrypt-columns-to`` and ``--encrypt-to``."""
        return tuple(dict.fromkeys(self.column_recipients + self.recipients))


def _listed(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


_installed: Security | None = None


def current() -> Security:
    """The security settings in force: those installed by :func:`using`, else the environment's."""
    return _installed if _installed is not None else Security.from_env()


@contextmanager
def using(security: Security) -> Iterator[Security]:
    """Install ``security`` for the whole process (threads included) until the block ends."""
    global _installed
    before, _installed = _installed, security
    try:
        yield security
    finally:
        _installed = before
