"""A :class:`~bundler.progress.Progress` that passes calls on, keeps task times and writes a log."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import TextIO

from bundler.progress import Progress


class RunRecorder:
    """Passes every call to ``inner``; keeps when tasks started and finished (seconds since
    the recorder was made); writes a log line per start, finish and note to ``log``."""

    def __init__(self, inner: Progress, log: TextIO | None = None) -> None:
        self.inner = inner
        self.log = log
        self.started = time.monotonic()
        self.starts: dict[str, float] = {}
        self.finishes: dict[str, float] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return time.monotonic() - self.started

    def _write(self, text: str) -> None:
        if self.log is not None:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            with self._lock:
                self.log.write(f"{stamp} {text}\n")
                self.log.flush()

    def start(self, task: str, total: int | None = None) -> None:
        with self._lock:
            self.starts.setdefault(task, self._now())
        self._write(f"start {task}" + (f" ({total:,} to do)" if total is not None else ""))
        self.inner.start(task, total)

    def advance(self, task: str, n: int = 1) -> None:
        with self._lock:
            self.starts.setdefault(task, self._now())
        self.inner.advance(task, n)

    def finish(self, task: str) -> None:
        with self._lock:
            self.finishes[task] = self._now()
        self._write(f"finish {task}")
        self.inner.finish(task)

    def note(self, message: str) -> None:
        self._write(message)
        self.inner.note(message)
