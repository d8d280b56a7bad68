"""Where bundles live: local folders, or an S3-compatible object store (``s3://bucket/prefix``).

Every command that takes a bundle folder or file also takes an ``s3://`` URL. The store is
reached through ``pyarrow.fs.S3FileSystem``, configured from the usual environment
variables: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible server, e.g.
``http://127.0.0.1:9000``), ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and credentials from
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` (else the AWS SDK's
default chain: profile files, instance roles).

Writing, a bundle folder is uploaded file by file with ``manifest.json`` last (an object
appears whole when its upload completes, so a reader that finds the manifest finds every
file); a packed or encrypted bundle is one object. Reading, a folder bundle's manifest is
read first (bounded) and only the files it lists are fetched, each stopped at the size the
manifest gives, into a private temporary folder removed when the bundle is closed; the load
and ``inspect verify`` then check every checksum (and the signature, with trust configured).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PosixPath
from typing import TYPE_CHECKING, Any

from bundler.errors import BundleInvalid, BundlerError, UsageError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

SCHEME = "s3://"
_CHUNK = 1 << 20


class StorePath(PosixPath):
    """A ``Path`` that names an object in a store and prints as its ``s3://`` URL (a plain
    ``Path`` makes ``s3://b/k`` into ``s3:/b/k``): what an export to a store reports."""

    def __str__(self) -> str:
        text = super().__str__()
        return SCHEME + text[len("s3:/") :] if text.startswith("s3:/") else text

    def __fspath__(self) -> str:
        return str(self)


def remote_url(location: str | Path) -> str | None:
    """The ``s3://…`` URL ``location`` names (also when a Path made ``s3://`` into ``s3:/``), or None.

    (A relative local path starting with a folder named ``s3:`` would be taken for a URL.)"""
    text = str(location)
    if text.startswith(SCHEME):
        return text.rstrip("/")
    if text.startswith("s3:/"):  # what a Path makes of s3://
        return (SCHEME + text[len("s3:/") :]).rstrip("/")
    return None


def is_remote(location: str | Path) -> bool:
    return remote_url(location) is not None


def s3_filesystem() -> pafs.S3FileSystem:
    """The S3 file system the environment describes (endpoint, region, credentials)."""
    import pyarrow.fs as pafs

    env = os.environ
    options: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options["endpoint_override"] = host or scheme
        options["scheme"] = scheme if host else "https"
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        options["access_key"] = env["AWS_ACCESS_KEY_ID"]
        options["secret_key"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            options["session_token"] = env["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**options)


def _key(url: str) -> str:
    """``bucket/prefix/name`` of an ``s3://`` URL (what pyarrow.fs calls a path)."""
    key = url[len(SCHEME) :].strip("/")
    if not key or key.startswith("/"):
        raise UsageError(f"{url} names no bucket", hint="s3://bucket/prefix/…")
    return key


def _store_error(url: str, exc: Exception) -> BundlerError:
    return BundlerError(
        f"object store {url}: {exc}", hint="check the URL, AWS_ENDPOINT_URL and the credentials"
    )


def upload(local: Path, url_dir: str) -> str:
    """Put a bundle folder or file into the store under ``url_dir``; its URL there.

    A folder goes file by file, ``manifest.json`` last; a file is one object.
    """
    from bundler.bundle import MANIFEST

    fs = s3_filesystem()
    dest = f"{url_dir.rstrip('/')}/{local.name}"
    try:
        if local.is_dir():
            files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MANIFEST)
            for file in [*files, local / MANIFEST]:
                _put(fs, file, _key(f"{dest}/{file.relative_to(local).as_posix()}"))
        else:
            _put(fs, local, _key(dest))
    except OSError as exc:
        raise _store_error(dest, exc) from None
    return dest


def _put(fs: pafs.S3FileSystem, file: Path, key: str) -> None:
    with open(file, "rb") as src, fs.open_output_stream(key) as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)


def fetch(url: str, dest: Path) -> Path:
    """Copy the bundle at ``url`` into the local folder ``dest``; the local copy's path.

    A folder bundle: its manifest first (bounded), then the files it lists (and its signature),
    each stopped at the size the manifest gives. A file (packed, encrypted): as it is, bounded
    by the unpacked-size limit.
    """
    import pyarrow.fs as pafs

    from bundler.bundle import MANIFEST
    from bundler.secure import limits
    from bundler.secure.signing import SIGNATURE

    fs = s3_filesystem()
    key = _key(url)
    name = key.rsplit("/", 1)[-1]
    try:
        info = fs.get_file_info(key)
        if info.type == pafs.FileType.File:
            return _get(fs, key, dest / name, limits.limit("unpacked_bytes"), url)
        manifest = fs.get_file_info(f"{key}/{MANIFEST}")
        if manifest.type != pafs.FileType.File:
            raise BundlerError(
                f"bundle {url} does not exist (no {MANIFEST} there)",
                hint="give the URL of a .bundle folder or a packed bundle in the store",
            )
        folder = dest / name
        (folder / "tables").mkdir(parents=True)
        raw = _get(
            fs, f"{key}/{MANIFEST}", folder / MANIFEST, limits.limit("manifest_bytes"), url
        ).read_bytes()
        if fs.get_file_info(f"{key}/{SIGNATURE}").type == pafs.FileType.File:
            _get(fs, f"{key}/{SIGNATURE}", folder / SIGNATURE, limits.limit("signature_bytes"), url)
        for file, size in _listed_files(raw, url):
            _get(fs, f"{key}/{file}", folder / file, size, url)
    except OSError as exc:
        raise _store_error(url, exc) from None
    return folder


def _listed_files(manifest: bytes, url: str) -> list[tuple[str, int]]:
    """(file, bytes) of each table the manifest lists, named as a bundle names them."""
    from bundler.bundle import Bundle
    from bundler.manifest import parse_manifest_bytes

    doc = parse_manifest_bytes(manifest, url)
    tables = doc.get("tables") if isinstance(doc, dict) else None
    if not isinstance(tables, dict):
        raise BundleInvalid(url, ["manifest.json lists no tables"])
    files = []
    for table, entry in sorted(tables.items()):
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not isinstance(size, int) or not table.isidentifier():
            raise BundleInvalid(url, [f"manifest.json: table {table!r} has no valid entry"])
        files.append((Bundle.table_file(table), size))
    return files


def _get(fs: pafs.S3FileSystem, key: str, dest: Path, bound: int, url: str) -> Path:
    """Copy one object to ``dest``, refusing it when it is larger than ``bound``."""
    got = 0
    with fs.open_input_stream(key) as src, open(dest, "wb") as out:
        while chunk := src.read(_CHUNK):
            got += len(chunk)
            if got > bound:
                raise BundleInvalid(
                    url, [f"{key.split('/', 1)[-1]}: larger than the manifest or limit says ({bound} bytes)"]
                )
            out.write(chunk)
    return dest


def local_staging(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A private temporary folder for bundles on their way to or from a store."""
    from bundler.secure.encryption import private_tmpdir

    return private_tmpdir(prefix)


def deliver(local: Path, out: str | Path) -> str:
    """Put an exported bundle folder where ``--out`` says, encrypted when recipients are set.

    Used when the export wrote into a private staging folder: encrypted, the bundle is
    packed and encrypted into ``out`` (local or store); plain, it is uploaded (store) or
    moved (local). The staging copy is removed by its owner.
    """
    from bundler.bundle_pack import pack
    from bundler.secure import current

    if current().recipients:
        target_dir = (
            Path(tempfile.mkdtemp(prefix=".bundler-sealed-", dir=local.parent))
            if is_remote(out)
            else Path(out)
        )
        target_dir.mkdir(parents=True, exist_ok=True)
        sealed = pack(local, target_dir)
        if not is_remote(out):
            return str(sealed)
        try:
            return upload(sealed, str(remote_url(out)))
        finally:
            shutil.rmtree(target_dir, ignore_errors=True)
    url = remote_url(out)
    if url is not None:
        return upload(local, url)
    final = Path(out) / local.name
    if final.exists():
        raise BundlerError(f"{final} already exists", hint="choose another --out or remove it")
    Path(out).mkdir(parents=True, exist_ok=True)
    shutil.move(str(local), final)
    return str(final)
