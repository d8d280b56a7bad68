"""Packing a bundle: one zstandard-compressed tar file of its folder (age-encrypted when the
command was given recipients) for copying between sites, and unpacking it again, refusing
anything a bundle does not hold and every size past :mod:`bundler.secure.limits`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import IO

from bundler.bundle import BUNDLE_SUFFIX, Bundle, checksum_problems, open_bundle
from bundler.errors import BundleInvalid, BundlerError
from bundler.manifest import MANIFEST, TABLES_DIR, manifest_problems
from bundler.secure import limits
from bundler.secure.signing import SIGNATURE


def pack(bundle_path: str | Path, out_file: str | Path, level: int = 3) -> Path:
    """Write one zstandard-compressed tar file of a bundle folder (atomically)."""
    import zstandard

    from bundler.secure import current
    from bundler.secure.encryption import ENCRYPTED_SUFFIX, encrypt_to_file

    src = Path(bundle_path)
    if not src.is_dir():
        raise BundlerError(f"{src} is already a packed bundle")
    with open_bundle(src) as bundle:
        problems = manifest_problems(bundle.doc) + checksum_problems(bundle)
        bundle_id = bundle.bundle_id
    if problems:
        raise BundleInvalid(str(src), problems, hint="re-export it; a bundle is packed only when it verifies")
    recipients = current().recipients
    out = Path(out_file)
    if out.is_dir():
        out = out / f"{src.name}.tar.zst{ENCRYPTED_SUFFIX if recipients else ''}"
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    arcroot = src.name if src.name.endswith(BUNDLE_SUFFIX) else f"{bundle_id}{BUNDLE_SUFFIX}"

    def write(raw: IO[bytes]) -> None:
        cctx = zstandard.ZstdCompressor(level=level, threads=-1)
        with cctx.stream_writer(raw, closefd=False) as zw, tarfile.open(fileobj=zw, mode="w|") as tar:
            # manifest last, as in a folder: a reader streaming the tar sees every table first
            for file in sorted((src / TABLES_DIR).glob("*.parquet")):
                tar.add(file, arcname=f"{arcroot}/{TABLES_DIR}/{file.name}", recursive=False)
            if (src / SIGNATURE).is_file():
                tar.add(src / SIGNATURE, arcname=f"{arcroot}/{SIGNATURE}", recursive=False)
            tar.add(src / MANIFEST, arcname=f"{arcroot}/{MANIFEST}", recursive=False)

    try:
        if recipients:  # encrypted as it is packed: no plain packed file
            encrypt_to_file(write, tmp, recipients)
        else:
            with open(tmp, "wb") as raw:
                write(raw)
                raw.flush()
                os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


_MEMBER = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(/(manifest\.json|manifest\.sig|tables(/[A-Za-z_][A-Za-z0-9_]*\.parquet)?))?$"
)
MAX_PACKED_MEMBERS = 10_000  # a bundle holds one file per table and its manifest


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why a packed member cannot be part of a bundle (None when it can)."""
    name = member.name.rstrip("/")
    if not _MEMBER.match(name) or ".." in name.split("/"):
        return f"{member.name}: not a file a bundle holds (only manifest.json, manifest.sig and tables/<table>.parquet)"
    is_file = name.endswith((".parquet", "/manifest.json", "/manifest.sig"))
    if (member.isfile() if is_file else member.isdir()) is False:
        return f"{member.name}: not a regular {'file' if is_file else 'folder'}"
    for suffix, bound in ((MANIFEST, "manifest_bytes"), (SIGNATURE, "signature_bytes")):
        if is_file and name.endswith(suffix) and member.size > limits.limit(bound):
            return f"{member.name}: {member.size} bytes, more than the {bound} limit ({limits.limit(bound)})"
    return None


def extract(packed: Path, dest: Path) -> Path:
    """Unpack a packed bundle (age-encrypted or not) into ``dest``, refusing anything a bundle
    does not hold and every size past the limits of :mod:`bundler.secure.limits`."""
    from bundler.secure import current
    from bundler.secure.encryption import decrypted, is_encrypted

    with contextlib.ExitStack() as stack:
        if is_encrypted(packed):
            raw = stack.enter_context(decrypted(packed, current().identities))
        else:
            raw = stack.enter_context(open(packed, "rb"))
        return _extract_from(raw, packed, dest)
    raise AssertionError("unreachable")


def _extract_from(raw: IO[bytes], packed: Path, dest: Path) -> Path:
    import zstandard

    roots: set[str] = set()
    total = 0
    try:
        # zstd's window is bounded (128 MiB): a frame asking for more is refused, not allocated
        zreader = zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(raw)
        reader = limits.BoundedReader(zreader, str(packed))
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for count, member in enumerate(tar, start=1):
                problem = _member_problem(member)
                if problem is None and count > MAX_PACKED_MEMBERS:
                    problem = f"more than {MAX_PACKED_MEMBERS} files: not a bundle"
                if problem is not None:
                    raise BundleInvalid(str(packed), [problem])
                total += member.size
                if total > limits.limit("unpacked_bytes"):
                    raise limits.exceeded(str(packed), "unpacked size", total, "unpacked_bytes")
                roots.add(member.name.split("/")[0])
                if len(roots) > 1:
                    break
                reader.allow(member.offset_data + member.size)
                tar.extract(member, dest, filter="data")
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise BundleInvalid(str(packed), [f"not a readable packed bundle ({exc})"]) from None
    if len(roots) != 1:
        raise BundleInvalid(str(packed), ["a packed bundle must hold exactly one bundle folder"])
    return dest / roots.pop()


def unpack(packed: str | Path, out_dir: str | Path) -> Path:
    """Restore a packed bundle into ``out_dir`` and verify every checksum."""
    src = Path(packed)
    if not src.is_file():
        raise BundlerError(f"packed bundle {src} does not exist")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=out))
    try:
        inner = extract(src, staging)
        bundle = Bundle(inner, src)
        problems = manifest_problems(bundle.doc) + checksum_problems(bundle)
        if problems:
            raise BundleInvalid(str(src), problems, hint="copy the file again from its origin")
        final = out / inner.name
        if final.exists():
            raise BundlerError(f"{final} already exists", hint="unpack into another folder or remove it")
        os.rename(inner, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
