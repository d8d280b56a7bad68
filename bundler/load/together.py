"""Several bundles loaded in one transaction: roots that reference each other.

Two customers whose rows point at each other's (an account moved from one to the other,
its xDRs billed on the first one's invoice) are a cycle: whichever loads first must leave
its references to the other open (:mod:`bundler.load.crossroot`). Loaded together, each in
turn on the same transaction, the later ones find the earlier ones' rows and set the
references those left open before anything commits: the target never shows one without
the other, and a failure of any leaves the target as it was.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy as sa

from bundler.bundle import open_bundle
from bundler.load.cache import TargetCache
from bundler.load.load import (
    BATCH_ROWS,
    LoadResult,
    Written,
    _check_written,
    _Clock,
    _Request,
    _verify,
    finished,
    prepare,
    retried,
    run_in,
)
from bundler.progress import NullProgress, Progress


def load_together(
    engine: sa.Engine,
    paths: Sequence[str | Path],
    *,
    written: Sequence[Written | None] | None = None,
    decisions: str | Path | None = None,
    spec: str | Path | None = None,
    progress: Progress | None = None,
    cache: TargetCache | None = None,
) -> list[LoadResult]:
    """Load the bundles of ``paths`` in one transaction, in that order; a result per bundle
    (``already-loaded`` for one the target recorded before). ``written``: per bundle, as
    :func:`~bundler.load.load.load_bundle` takes it."""
    progress = progress or NullProgress()
    started = time.monotonic()
    marks = list(written) if written is not None else [None] * len(paths)
    with ExitStack() as stack:
        requests = []
        for path, mark in zip(paths, marks, strict=True):
            opened = time.monotonic()
            bundle = stack.enter_context(open_bundle(path))
            if mark is not None:
                _check_written(bundle, mark)
            else:
                _verify(bundle, spec)
            request = _Request(bundle, path, decisions, False, spec, progress, None, BATCH_ROWS, cache)
            request.steps["verify"] = time.monotonic() - opened
            requests.append(request)
        results = retried(requests[0], lambda: _once(engine, requests))
    for result in results:
        result.seconds = time.monotonic() - started
    return results


def _once(engine: sa.Engine, requests: list[_Request]) -> list[LoadResult]:
    """One attempt: every bundle in one transaction."""
    with engine.connect().execution_options(sqlite_begin="immediate") as connection:
        graph, system = prepare(connection, requests)
        ran = []
        with connection.begin():
            for request in requests:
                clock = _Clock(request.steps)
                ran.append((request, run_in(connection, request, graph, system, clock), clock))
        committed_at = time.monotonic()
    results = []
    for request, done, clock in ran:
        if isinstance(done, LoadResult):
            results.append(done)
            continue
        request.steps["commit"] = committed_at - clock.last
        results.append(finished(engine, request, done, "loaded", committed_at))
    return results


__all__ = ["load_together"]
