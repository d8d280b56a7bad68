"""Moving bundles to where a command was told: encrypted, into an object store, or both.

:class:`Staging` lets an export write as usual and then deliver: with ``--encrypt-to`` or an
``s3://`` ``--out``, the bundles are written into a private temporary folder (mode 0700,
removed at the end), then packed and encrypted and/or uploaded (:func:`bundler.store.deliver`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from bundler.errors import BundlerError
from bundler.secure import current
from bundler.store import StorePath, deliver, is_remote, remote_url, upload


class Staging:
    """Where an export writes (``local``), and delivering what it wrote to ``out``."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.staged = bool(current().recipients) or is_remote(out)
        self._tmp = tempfile.mkdtemp(prefix=".bundler-export-") if self.staged else None
        self.local = self._tmp or out
        self.keep = False

    def deliver(self, results: list[Any]) -> None:
        """Move each finished export (not the failures) to ``out``; its result's path says where.

        A delivery that fails (the store cannot be reached) becomes that export's error, and
        the staging folder is kept, named in the error: the root is marked Exported in the
        source, so its bundle must not be lost.
        """
        if not self.staged:
            return
        for i, result in enumerate(results):
            if isinstance(result, BundlerError):
                continue
            try:
                delivered = deliver(Path(result.path), self.out)
            except Exception as exc:
                self.keep = True
                message = exc.line() if isinstance(exc, BundlerError) else f"{type(exc).__name__}: {exc}"
                results[i] = BundlerError(
                    f"{result.bundle_id}: exported but not delivered to {self.out} ({message})",
                    hint=f"the bundle is kept in {result.path}; deliver it with bundler pack or copy it",
                )
                continue
            result.path = StorePath(delivered) if is_remote(delivered) else Path(delivered)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None and not self.keep:
            shutil.rmtree(self._tmp, ignore_errors=True)


def pack_anywhere(bundle: str, out: str) -> str:
    """``bundler pack``: a bundle folder (local or in a store) packed (encrypted with recipients)
    to a local file or folder, or into a store."""
    from bundler.bundle import open_bundle
    from bundler.bundle_pack import pack

    with tempfile.TemporaryDirectory(prefix=".bundler-pack-") as tmp:
        src = Path(bundle)
        if is_remote(bundle):
            with open_bundle(bundle) as opened:
                src = Path(shutil.copytree(opened.path, Path(tmp) / opened.path.name))
        url = remote_url(out)
        packed = pack(src, Path(tmp) if url else out)
        return upload(packed, url) if url else str(packed)


def unpack_anywhere(packed: str, out: str) -> str:
    """``bundler unpack``: a packed or encrypted bundle (local or in a store) unpacked, every
    checksum verified, into a local folder or a store."""
    from bundler.bundle import checksum_problems, open_bundle
    from bundler.bundle_pack import unpack
    from bundler.errors import BundleInvalid
    from bundler.manifest import manifest_problems

    url = remote_url(out)
    if not is_remote(packed) and not url:
        return str(unpack(packed, out))
    with tempfile.TemporaryDirectory(prefix=".bundler-unpack-") as tmp:
        with open_bundle(packed) as bundle:
            problems = manifest_problems(bundle.doc) + checksum_problems(bundle)
            if problems:
                raise BundleInvalid(bundle.name, problems, hint="copy the file again from its origin")
            local = Path(shutil.copytree(bundle.path, Path(tmp) / bundle.path.name))
        if url:
            return upload(local, url)
        final = Path(out) / local.name
        if final.exists():
            raise BundlerError(f"{final} already exists", hint="unpack into another folder or remove it")
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.move(str(local), final)
        return str(final)
