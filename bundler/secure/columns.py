"""Sensitive columns encrypted column by column (Parquet modular encryption), keys wrapped with age.

A bundle exported with ``--encrypt-columns-to`` (or ``--encrypt-to``) writes the graph's
``sensitive`` columns of each table (passwords, card numbers, PINs) encrypted with AES-GCM
by Parquet itself (pyarrow's ``CryptoFactory``); every other column, and the footer, stay
plain (``plaintext_footer``, signed with the footer key), so a reader without the key still
reads the schema, the row counts and every other column. The data keys are wrapped (double
wrapping: through key encryption keys) by a key client of ours that age-encrypts them to the
recipients: the wrapped keys travel inside the file's footer, readable by the holders of an
age identity only. The manifest lists the encrypted columns of each table (``encrypted``).

Without the key, pyarrow cannot even list the column chunks of such a file (it aborts the
process on an encrypted column's metadata), so the sizes a hostile file declares are checked
from its footer read by :mod:`bundler.secure.footer`, and DuckDB reads the other columns.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bundler.errors import BundleInvalid, UsageError

if TYPE_CHECKING:
    import pyarrow.parquet as pq
    import pyarrow.parquet.encryption as pe

FOOTER_KEY = "bundler-footer"
COLUMN_KEY = "bundler-columns"
SHOWN = "(encrypted)"


class _AgeKeys:
    """The KMS client's work: wrap data keys for age recipients, unwrap them with identities."""

    def __init__(self, recipients: Sequence[Any] = (), identities: Sequence[Any] = ()) -> None:
        self.recipients = list(recipients)
        self.identities = list(identities)

    def wrap(self, key: bytes) -> str:
        import pyrage

        return base64.b64encode(pyrage.encrypt(key, self.recipients)).decode("ascii")

    def unwrap(self, wrapped: str) -> bytes:
        import pyrage

        if not self.identities:
            raise UsageError("encrypted columns need the key", hint="--identity FILE or BUNDLER_IDENTITY")
        try:
            return bytes(pyrage.decrypt(base64.b64decode(wrapped, validate=True), self.identities))
        except Exception as exc:  # pyrage.DecryptError, binascii.Error
            raise _Unwrap(str(exc)) from None


class _Unwrap(Exception):
    """A wrapped column key that the given identities do not open (or that was altered)."""


def _factory(keys: _AgeKeys) -> pe.CryptoFactory:
    import pyarrow.parquet.encryption as pe

    class AgeKmsClient(pe.KmsClient):
        def __init__(self) -> None:
            super().__init__()

        def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
            return keys.wrap(key_bytes)

        def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
            return keys.unwrap(wrapped_key)

    # a factory per writer or bundle: its cache of wrapped keys is never shared by other recipients
    return pe.CryptoFactory(lambda _config: AgeKmsClient())


def _connection(token: str) -> pe.KmsConnectionConfig:
    import pyarrow.parquet.encryption as pe

    return pe.KmsConnectionConfig(key_access_token=hashlib.sha256(token.encode()).hexdigest())


class ColumnEncryption:
    """Encryption properties for the table files of one bundle, for the given age recipients."""

    def __init__(self, to: Sequence[str]) -> None:
        from bundler.secure.encryption import recipients

        self.to = tuple(dict.fromkeys(to))
        self._factory = _factory(_AgeKeys(recipients=recipients(self.to)))
        self._connection = _connection("\n".join(self.to))

    def properties(self, columns: Sequence[str]) -> Any:
        """``FileEncryptionProperties`` encrypting ``columns`` (plain footer, signed)."""
        import pyarrow.parquet.encryption as pe

        config = pe.EncryptionConfiguration(
            footer_key=FOOTER_KEY,
            column_keys={COLUMN_KEY: list(columns)},
            plaintext_footer=True,
            double_wrapping=True,
        )
        return self._factory.file_encryption_properties(self._connection, config)


class ColumnDecryption:
    """Decryption properties for the encrypted columns of one bundle, from age identity files."""

    def __init__(self, bundle: str, identity_files: Sequence[Any]) -> None:
        from bundler.secure.encryption import identities

        self.bundle = bundle
        self._factory = _factory(_AgeKeys(identities=identities(identity_files)))
        self._connection = _connection("\n".join(str(p) for p in identity_files))

    def properties(self) -> pq.FileDecryptionProperties:
        return self._factory.file_decryption_properties(self._connection)

    def dataset_config(self) -> Any:
        """What a ``pyarrow.dataset`` scan decrypts with (``ParquetFragmentScanOptions``)."""
        import pyarrow.dataset as ds
        import pyarrow.parquet.encryption as pe

        return ds.ParquetDecryptionConfig(self._factory, self._connection, pe.DecryptionConfiguration())

    def refusal(self, shown: str, exc: BaseException) -> BaseException:
        """What a failure to read an encrypted file becomes: exit 4 (not our key, or altered)."""
        cause = exc.__cause__ or exc.__context__
        if isinstance(exc, UsageError | KeyboardInterrupt | MemoryError):
            return exc
        if isinstance(exc, _Unwrap) or isinstance(cause, _Unwrap):
            why = "its column keys are not wrapped for the given identity (or were altered)"
        else:
            why = f"its encrypted columns cannot be decrypted ({_first_line(exc)}): altered"
        return BundleInvalid(
            self.bundle, [f"{shown}: {why}"], hint="check --identity, or copy the bundle again"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def encrypted_columns(entry: Any) -> tuple[str, ...]:
    """The encrypted columns a manifest table entry (JSON) lists."""
    found = entry.get("encrypted", ()) if isinstance(entry, dict) else ()
    return tuple(c for c in found if isinstance(c, str)) if isinstance(found, list) else ()


def shown_select(columns: Sequence[str], encrypted: Sequence[str], source: str) -> str:
    """DuckDB ``SELECT`` of ``source`` with the encrypted columns shown as :data:`SHOWN`, unread."""
    from bundler.inspect.query import literal, qident

    hidden = [c for c in columns if c in set(encrypted)]
    if not hidden:
        return source
    replace = ", ".join(f"{literal(SHOWN)} AS {qident(c)}" for c in hidden)
    return f"(SELECT * REPLACE ({replace}) FROM {source})"
