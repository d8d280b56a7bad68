"""Deterministic call recordings for the reference billing system: files and metadata rows.

:func:`make_recordings` writes ``n`` recordings into a recordings store and the
``call_recordings`` table of a database (source or target), the way the billing system
would: a small WAV file per call (a 44-byte header and pseudo-random samples) under
``YYYY/MM/DD/<call_id>.wav``, and a row with its exact size and sha256. The same ``seed``
gives the same call ids, times, sizes and bytes, so tests and ``bundler demo`` can tell
what a sync must bring over. Use a different ``seed`` for each batch: call ids are
``rec-<seed>-<n>``, unique per seed.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bundler.recordings.store import Store, open_store

__all__ = ["make_recordings", "wav_bytes"]

SAMPLE_RATE = 8_000
BYTES_PER_SECOND = SAMPLE_RATE * 2  # 16-bit mono
HEADER_BYTES = 44


def wav_bytes(rng: random.Random, size: int) -> bytes:
    """A ``size``-byte PCM WAV file (8 kHz, 16-bit mono) of pseudo-random samples."""
    data = max(size - HEADER_BYTES, 0)
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, BYTES_PER_SECOND, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )
    return header + rng.randbytes(data)


def _accounts(connection: sa.Connection) -> list[str]:
    accounts = sa.Table("accounts", sa.MetaData(), autoload_with=connection)
    return list(connection.execute(sa.select(accounts.c.id).order_by(accounts.c.id)).scalars())


def make_recordings(
    engine: sa.Engine,
    store: str | Store,
    n: int,
    *,
    seed: int | str,
    when: datetime = datetime(2026, 11, 1, 9, 0),
    step: timedelta = timedelta(minutes=1),
    accounts: Sequence[str] | None = None,
    size: tuple[int, int] = (2_000, 24_000),
    table: str = "call_recordings",
) -> list[dict[str, Any]]:
    """Write ``n`` recordings (files in ``store``, rows in ``table``); returns the rows.

    Recording ``i`` is made at ``when + i * step`` (``step=timedelta(0)`` gives equal
    timestamps) for ``accounts[i % len(accounts)]`` (default: every account id of the
    database, sorted), with a file of ``size[0]`` to ``size[1]`` bytes. Files are written
    first, then the rows in one transaction.
    """
    store = open_store(store)
    rng = random.Random(f"recordings:{seed}")
    with engine.connect() as conn:
        chosen = list(accounts) if accounts is not None else _accounts(conn)
        target = sa.Table(table, sa.MetaData(), autoload_with=conn)
    if not chosen:
        raise ValueError("no accounts to make recordings for")
    rows: list[dict[str, Any]] = []
    for i in range(n):
        call_id = f"rec-{seed}-{i:05d}"
        at = when + i * step
        content = wav_bytes(random.Random(f"{seed}:{call_id}"), rng.randint(*size))
        name = f"{at:%Y/%m/%d}/{call_id}.wav"
        store.write_bytes(name, content)
        rows.append(
            {
                "call_id": call_id,
                "account_id": chosen[i % len(chosen)],
                "recorded_at": at,
                "duration": max((len(content) - HEADER_BYTES) // BYTES_PER_SECOND, 1),
                "file_name": name,
                "file_size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
        )
    if rows:
        with engine.begin() as conn:
            conn.execute(target.insert(), rows)
    return rows
