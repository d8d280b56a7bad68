"""Whole-bundle encryption with age (X25519, ``pyrage``): written and read as streams.

An encrypted bundle is a packed bundle (``.bundle.tar.zst``) encrypted to one or more age
recipients: ``<bundle-id>.bundle.tar.zst.age``. Writing, the tar is packed into a pipe that
age encrypts as it goes, so no packed plain file is written. Reading, age decrypts into a
pipe that the unpacker reads (with every limit of :mod:`bundler.secure.limits`); the plain
files land in a private temporary folder (mode 0700, in ``/dev/shm`` — memory — when the
system has it, else the system's temporary folder) that is removed when the bundle is
closed. age authenticates every 64 KiB chunk and the end of the stream, so an altered or
truncated file is refused (exit 4).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bundler.errors import BundleInvalid, BundlerError, UsageError

AGE_MAGIC = b"age-encryption.org/v1\n"
ENCRYPTED_SUFFIX = ".age"
MAX_KEY_FILE_BYTES = 65536


def is_encrypted(path: Path) -> bool:
    """Whether ``path`` is an age-encrypted file (by its first bytes)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(AGE_MAGIC)) == AGE_MAGIC
    except OSError:
        return False


def _key_lines(path: Path, what: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(MAX_KEY_FILE_BYTES)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path} cannot be read ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def recipients(given: Sequence[str]) -> list[Any]:
    """age recipients from what the user gave: ``age1…`` keys, or files holding them."""
    from pyrage import x25519

    found = []
    for item in given:
        texts = [item] if item.startswith("age1") else _key_lines(Path(item), "recipient file")
        for text in texts:
            try:
                found.append(x25519.Recipient.from_str(text))
            except Exception as exc:  # pyrage.RecipientError
                raise UsageError(f"{text[:20]!r} is not an age recipient (age1…): {exc}") from None
    if not found:
        raise UsageError("no age recipient given", hint="--encrypt-to age1… or a file of them")
    return found


def identities(files: Sequence[Path]) -> list[Any]:
    """age identities (``AGE-SECRET-KEY-1…``) from identity files."""
    from pyrage import x25519

    found = []
    for path in files:
        for text in _key_lines(path, "identity file"):
            try:
                found.append(x25519.Identity.from_str(text))
            except Exception:  # pyrage.IdentityError; the text is a secret: not shown
                raise UsageError(f"identity file {path} holds a line that is not an age identity") from None
    return found


def new_identity(out_dir: Path, name: str) -> tuple[Path, Path]:
    """A new age key pair: ``NAME.age`` (the identity, mode 0600) and ``NAME.age.pub`` (recipient)."""
    from pyrage import x25519

    identity = x25519.Identity.generate()
    secret, public = out_dir / f"{name}.age", out_dir / f"{name}.age.pub"
    for path in (secret, public):
        if path.exists():
            raise BundlerError(f"{path} already exists", hint="choose another name or remove it")
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"# public key: {identity.to_public()}\n{identity}\n")
    public.write_text(f"{identity.to_public()}\n", encoding="utf-8")
    return secret, public


def encrypt_to_file(produce: Callable[[IO[bytes]], None], out: Path, to: Sequence[str]) -> None:
    """Write what ``produce`` writes into a stream, age-encrypted to ``to``, to ``out``."""
    import pyrage

    keys = recipients(to)
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with os.fdopen(write_fd, "wb") as sink:
                produce(sink)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="bundle-packer", daemon=True)
    thread.start()
    try:
        with os.fdopen(read_fd, "rb") as source, open(out, "wb") as fh:
            pyrage.encrypt_io(source, fh, keys)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        thread.join()
    if errors:
        raise errors[0]


@contextmanager
def decrypted(path: Path, identity_files: Sequence[Path]) -> Iterator[IO[bytes]]:
    """A stream of the plain bytes of the age-encrypted file ``path``, decrypted as it is read."""
    import pyrage

    if not identity_files:
        raise UsageError(
            f"bundle {path} is encrypted",
            hint="give the age identity it was encrypted to: --identity FILE or BUNDLER_IDENTITY",
        )
    keys = identities(identity_files)
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def run() -> None:
        sink = os.fdopen(write_fd, "wb")
        try:
            with open(path, "rb") as source:
                pyrage.decrypt_io(source, sink, keys)
        except BaseException as exc:
            errors.append(exc)  # before the pipe closes: the reader sees the cause with the end
        finally:
            with contextlib.suppress(OSError):
                sink.close()

    thread = threading.Thread(target=run, name="bundle-decrypter", daemon=True)
    thread.start()
    reader = os.fdopen(read_fd, "rb")
    try:
        yield reader
        while reader.read(1 << 20):  # to the end (in bounded chunks): age checks the last chunk there
            pass
    except BaseException:
        early = list(errors)  # a decryption failure ends the stream: it is the cause
        reader.close()
        thread.join()
        if early:
            raise _refusal(path, early[0]) from None
        raise
    reader.close()
    thread.join()
    if errors:
        raise _refusal(path, errors[0]) from None


def _refusal(path: Path, exc: BaseException) -> BaseException:
    if isinstance(exc, BundlerError | MemoryError | KeyboardInterrupt):
        return exc  # what the decrypting thread raised: pyrage's errors, or OSError for a bad chunk
    return BundleInvalid(
        str(path),
        [f"cannot be decrypted ({exc}): not encrypted to the given identity, or altered"],
        hint="check --identity, or copy the bundle again from its origin",
    )


def private_tmpdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder only this user can read (0700), in memory (``/dev/shm``) when possible."""
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix=prefix, dir=where)
