"""Ed25519 signatures of a bundle's manifest (which carries every file's sha256).

A signed bundle holds ``manifest.sig`` beside ``manifest.json``: a small JSON document
naming the signing key (the first 16 hex digits of the sha256 of its raw public key) and
the signature of ``SIGNED_PREFIX + manifest bytes``. Since the manifest lists the size and
sha256 of every file, and a bundle holds no file the manifest does not list, checking the
signature and then the checksums proves every byte came from the key's holder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.errors import BundleInvalid, BundlerError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE = "manifest.sig"
SIGNED_PREFIX = b"bundler manifest signature v1\n"
SIGNATURE_FORMAT = "bundler-signature-1"
MAX_KEY_BYTES = 16384


def key_id(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only (refusing to overwrite one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def new_signing_key(out_dir: Path, name: str) -> tuple[Path, Path]:
    """A new Ed25519 key pair: ``NAME.key`` (PKCS#8 PEM, mode 0600) and ``NAME.pub`` (PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private, public = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise BundlerError(f"{path} already exists", hint="choose another name or remove it")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{what} {path} cannot be read ({exc.strerror})") from None
    if len(data) > MAX_KEY_BYTES:
        raise UsageError(f"{what} {path} is larger than a key file")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(_read_key_file(path, "signing key"), password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"signing key {path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"signing key {path} is not an Ed25519 key", hint="make one with bundler keys new")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(_read_key_file(path, "trusted key"))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"trusted key {path} is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"trusted key {path} is not an Ed25519 public key")
    return key


def sign_manifest(manifest: bytes, key_file: Path) -> bytes:
    """The ``manifest.sig`` document for a manifest's bytes."""
    key = load_private_key(key_file)
    signature = key.sign(SIGNED_PREFIX + manifest)
    doc = {
        "format": SIGNATURE_FORMAT,
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Signer:
    """Who signed a bundle: the trusted key file whose key verified the signature."""

    key_id: str
    key_file: Path


def check_signature(bundle: str, manifest: bytes, signature: bytes | None, trust: tuple[Path, ...]) -> Signer:
    """The trusted key that signed ``manifest``; :class:`BundleInvalid` (exit 4) when none did."""
    from cryptography.exceptions import InvalidSignature

    if signature is None:
        raise BundleInvalid(
            bundle,
            [f"{SIGNATURE}: the bundle is not signed, and trusted keys are configured"],
            hint="ask the source site to export with --sign-with, or drop --trust / BUNDLER_TRUST",
        )
    doc = _signature_doc(bundle, signature)
    keys = {key_id(k): (k, p) for p in trust for k in [load_public_key(p)]}
    if doc["key_id"] not in keys:
        raise BundleInvalid(
            bundle,
            [f"{SIGNATURE}: signed by key {doc['key_id']}, which is not among the trusted keys"],
            hint="trust the source site's public key with --trust KEYFILE",
        )
    public, path = keys[doc["key_id"]]
    try:
        public.verify(doc["raw"], SIGNED_PREFIX + manifest)
    except InvalidSignature:
        raise BundleInvalid(
            bundle,
            [f"{SIGNATURE}: the signature does not match manifest.json (the bundle was altered)"],
            hint="copy the bundle again from its origin",
        ) from None
    return Signer(doc["key_id"], path)


def _signature_doc(bundle: str, signature: bytes) -> dict[str, Any]:
    bad = BundleInvalid(bundle, [f"{SIGNATURE}: not a bundler signature"])
    try:
        doc = json.loads(signature)
        raw = base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise bad from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != SIGNATURE_FORMAT
        or not isinstance(doc.get("key_id"), str)
    ):
        raise bad
    return {"key_id": doc["key_id"], "raw": raw}
