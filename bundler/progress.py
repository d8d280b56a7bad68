"""Progress reporting, passed in rather than printed from deep inside.

Library functions take a ``progress: Progress`` argument (default :class:`NullProgress`)
and report named tasks on it: ``start`` a task (a table, a phase) with its total if
known, ``advance`` it by rows, ``finish`` it, and ``note`` one-line events. The CLI passes
a :class:`RichProgress`, which draws bars on stderr (plain lines when stderr is not a
terminal), so stdout stays data; tests pass a :class:`RecordingProgress` and look at
what was reported.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO, runtime_checkable

if TYPE_CHECKING:
    from rich.progress import Progress as _RichBar
    from rich.progress import TaskID

__all__ = ["NullProgress", "Progress", "ProgressEvent", "RecordingProgress", "RichProgress"]


@runtime_checkable
class Progress(Protocol):
    """Where long operations report what they are doing. Implementations are thread-safe."""

    def start(self, task: str, total: int | None = None) -> None:
        """Begin ``task``; ``total`` is the number of units (rows) expected, if known."""

    def advance(self, task: str, n: int = 1) -> None:
        """``n`` more units of ``task`` are done (starts the task if it was not started)."""

    def finish(self, task: str) -> None:
        """``task`` is complete."""

    def note(self, message: str) -> None:
        """Report a one-line event that is not a counted task."""


class NullProgress:
    """Reports nothing: the default in library code."""

    def start(self, task: str, total: int | None = None) -> None:
        pass

    def advance(self, task: str, n: int = 1) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass


EventKind = Literal["start", "advance", "finish", "note"]


@dataclass(frozen=True)
class ProgressEvent:
    """One call on a :class:`RecordingProgress`.

    ``subject`` is the task name (or the message, for ``note``); ``value`` is the total
    (``start``), the increment (``advance``) or None.
    """

    kind: EventKind
    subject: str
    value: int | None = None


@dataclass
class RecordingProgress:
    """Keeps every call as a :class:`ProgressEvent`, in order: for tests."""

    events: list[ProgressEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _record(self, event: ProgressEvent) -> None:
        with self._lock:
            self.events.append(event)

    def start(self, task: str, total: int | None = None) -> None:
        self._record(ProgressEvent("start", task, total))

    def advance(self, task: str, n: int = 1) -> None:
        self._record(ProgressEvent("advance", task, n))

    def finish(self, task: str) -> None:
        self._record(ProgressEvent("finish", task))

    def note(self, message: str) -> None:
        self._record(ProgressEvent("note", message))

    def kinds(self) -> list[EventKind]:
        """The kinds of the recorded events, in order."""
        return [e.kind for e in self.events]

    def done(self, task: str) -> int:
        """Units of ``task`` advanced so far."""
        return sum(e.value or 0 for e in self.events if e.kind == "advance" and e.subject == task)

    def totals(self) -> dict[str, int | None]:
        """The total each started task announced."""
        return {e.subject: e.value for e in self.events if e.kind == "start"}

    def finished(self) -> list[str]:
        """Tasks finished, in order."""
        return [e.subject for e in self.events if e.kind == "finish"]

    def notes(self) -> list[str]:
        """Messages noted, in order."""
        return [e.subject for e in self.events if e.kind == "note"]


@dataclass
class _PlainTask:
    total: int | None
    done: int = 0
    started: float = 0.0
    last_line: float = 0.0


class RichProgress:
    """Progress bars on stderr with rich; plain lines when the output is not a terminal.

    Use as a context manager around the work::

        with RichProgress() as progress:
            export_customer(engine, root, out, progress=progress)

    ``file`` defaults to stderr. Plain mode (a log file, CI, a pipe) writes one line when a
    task starts, one when it finishes, one per note, and for long tasks a count at most
    every ``interval`` seconds. ``force_terminal`` overrides the terminal detection.
    """

    def __init__(
        self,
        file: TextIO | None = None,
        *,
        interval: float = 10.0,
        force_terminal: bool | None = None,
        main: tuple[str, ...] | None = None,
        verbose: int = 0,
    ) -> None:
        from rich.console import Console

        #: with ``main``, the other tasks are the work in flight: drawn while they run and
        #: removed when they finish (a line for them only with ``verbose``), so the live area
        #: stays as tall as the work in flight and the finished roots are one note each
        self._main = main
        self._verbose = verbose
        self._file = file if file is not None else sys.stderr
        self._console = Console(file=self._file, highlight=False, force_terminal=force_terminal)
        self._interval = interval
        self._lock = threading.RLock()
        self._plain: dict[str, _PlainTask] = {}
        self._ids: dict[str, TaskID] = {}
        self._bar: _RichBar | None = None
        if self._console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichBar

            self._bar = RichBar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                _steady_eta_column(),
                console=self._console,
            )

    @property
    def is_terminal(self) -> bool:
        """True when drawing live bars, False when writing plain lines."""
        return self._bar is not None

    def __enter__(self) -> RichProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _line(self, text: str) -> None:
        self._file.write(text + "\n")
        self._file.flush()

    def _sub(self, task: str) -> bool:
        """A task of the work in flight (not one of the ``main`` tasks)."""
        return self._main is not None and task not in self._main

    def _quiet(self, task: str) -> bool:
        """Plain lines of this task are left out (a task in flight, without ``verbose``)."""
        return self._sub(task) and self._verbose <= 0

    def start(self, task: str, total: int | None = None) -> None:
        with self._lock:
            if self._bar is not None:
                if task in self._ids:
                    self._bar.reset(self._ids[task], total=total)
                else:
                    self._ids[task] = self._bar.add_task(task, total=total)
                return
            now = time.monotonic()
            self._plain[task] = _PlainTask(total=total, started=now, last_line=now)
            if not self._quiet(task):
                self._line(f"{task}: started" + (f" ({total:,} to do)" if total is not None else ""))

    def advance(self, task: str, n: int = 1) -> None:
        with self._lock:
            if self._bar is not None:
                if task not in self._ids:
                    self._ids[task] = self._bar.add_task(task, total=None)
                self._bar.advance(self._ids[task], n)
                return
            state = self._plain.get(task)
            if state is None:
                self.start(task)
                state = self._plain[task]
            state.done += n
            now = time.monotonic()
            if now - state.last_line >= self._interval and not self._quiet(task):
                state.last_line = now
                of = f"/{state.total:,}" if state.total is not None else ""
                self._line(f"{task}: {state.done:,}{of}")

    def finish(self, task: str) -> None:
        with self._lock:
            if self._bar is not None:
                task_id = self._ids.get(task)
                if task_id is None:
                    task_id = self._ids[task] = self._bar.add_task(task, total=0)
                item = self._bar.tasks[self._task_index(task_id)]
                done = item.completed
                if self._sub(task):  # collapsed: gone from the live area
                    seconds = item.elapsed or 0.0
                    self._bar.remove_task(task_id)
                    del self._ids[task]
                    if self._verbose > 0:
                        self._bar.console.print(f"{task}: done, {done:,.0f} in {seconds:.1f} s", markup=False)
                    return
                self._bar.update(task_id, total=done, completed=done)
                self._bar.stop_task(task_id)
                return
            state = self._plain.pop(task, None)
            if self._quiet(task):
                return
            if state is None:
                self._line(f"{task}: done")
                return
            seconds = time.monotonic() - state.started
            self._line(f"{task}: done, {state.done:,} in {seconds:.1f} s")

    def _task_index(self, task_id: TaskID) -> int:
        assert self._bar is not None
        for index, item in enumerate(self._bar.tasks):
            if item.id == task_id:
                return index
        raise KeyError(task_id)

    def note(self, message: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.console.print(message, markup=False, highlight=False)
            else:
                self._line(message)


def _steady_eta_column() -> Any:
    """Time left from the average pace since the start (not the last seconds' speed), eased
    toward each new estimate: it does not jump when one root is slower than the others."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class SteadyEta(ProgressColumn):
        def __init__(self) -> None:
            super().__init__()
            self._shown: dict[Any, float] = {}

        def render(self, task: Any) -> Text:
            if task.finished:
                return Text("done", style="progress.remaining")
            elapsed, total, completed = task.elapsed, task.total, task.completed
            if not elapsed or not total or not completed:
                return Text("eta -:--:--", style="progress.remaining")
            raw = elapsed / completed * (total - completed)
            previous = self._shown.get(task.id)
            eased = raw if previous is None else previous + 0.1 * (raw - previous)
            self._shown[task.id] = eased
            minutes, seconds = divmod(int(eased + 0.5), 60)
            hours, minutes = divmod(minutes, 60)
            return Text(f"eta {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")

    return SteadyEta()
