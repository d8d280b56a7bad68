"""``--workers N``: the lineup's workers as processes, each with its own connections.

Threads shared one interpreter: verification, decisions and the Arrow work of N roots ran
one at a time (the GIL), and a second worker made the lineup slower. Each worker is now a
process (``spawn``: nothing of the parent's engines, pools or locks is inherited) that
connects to the source and the target by URL, resolves the graph once, keeps its own
target cache for the whole run and claims roots from the lineup like any other worker
(:mod:`bundler.lineup.queue`: exactly once, in the graph's tiers).

The parent keeps the result and the progress: workers send it ``claimed`` and
``outcome`` events and their notes, each through its own pipe (a worker killed in the
middle of a message leaves the others' pipes whole; its pipe's end tells the parent). A stop (Ctrl-C) is one
``multiprocessing`` event: workers finish the root in flight and claim nothing new
(SIGINT is ignored in the workers, so a root is never cut off half way by the first
Ctrl-C). A second Ctrl-C aborts: the parent terminates the workers, and a root one of them
had marked Exported is finished or restored by the next run (:mod:`bundler.recover`; the
claim of a dead worker is released). A worker that fails outside a root (the lineup's
table unreachable) stops the others after their root and the run raises its error.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from bundler.errors import BundlerError

if TYPE_CHECKING:
    from bundler.export.layers import Layers
    from bundler.lineup.lineup import _Run
    from bundler.lineup.root import LineupOptions, RootOutcome

#: how often the parent looks at its stop request and its workers while no event arrives
POLL_S = 0.2


@dataclass(frozen=True)
class WorkerJob:
    """What a worker process needs to join the run (all picklable: URLs, not engines)."""

    source_url: str
    target_url: str
    system: str
    phase: str
    wanted: set[tuple[str, str]]
    options: LineupOptions
    stale_after: float
    layers: Layers | None


class _QueueProgress:
    """A worker's progress: its notes go to the parent; bars are the parent's (one per run)."""

    def __init__(self, events: Connection) -> None:
        self.events = events

    def start(self, task: str, total: int | None = None) -> None:
        pass

    def advance(self, task: str, n: int = 1) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def note(self, message: str) -> None:
        self.events.send(("note", os.getpid(), message))


def _url(engine: Any) -> str:
    return str(engine.url.render_as_string(hide_password=False))


def run_processes(run: _Run, workers: int) -> None:
    """Run ``workers`` worker processes on ``run``'s lineup; outcomes go into ``run.result``."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    job = WorkerJob(
        _url(run.source),
        _url(run.target),
        run.system,
        run.phase,
        run.wanted,
        run.options,
        run.stale_after,
        run.layers,
    )
    errors: list[str] = []
    running: dict[Connection, BaseProcess] = {}
    procs: list[BaseProcess] = []
    try:
        for i in range(workers):
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=worker_main, args=(job, writer, stop), name=f"lineup-{i + 1}")
            proc.start()
            writer.close()  # the worker's end: the pipe ends when the worker does
            procs.append(proc)
            running[reader] = proc
        while running:
            if run.stop.is_set() and not stop.is_set():
                stop.set()
            for ready in wait(list(running), timeout=POLL_S):
                assert isinstance(ready, Connection)
                try:
                    event = ready.recv()
                except (EOFError, OSError):  # the worker is gone (a message cut short counts as gone)
                    _ended(running.pop(ready), errors, run, stop)
                    ready.close()
                    continue
                _handle(event, run, errors, stop)
    finally:
        stop.set()
        for worker in procs:
            if worker.is_alive():  # a second Ctrl-C, or an error of the parent: abort at once
                worker.terminate()
            worker.join()
        for left in running:
            left.close()
    if errors:
        raise BundlerError(
            f"{len(errors)} lineup worker process(es) failed: {errors[0]}",
            hint="run the same command again: it finishes what is left",
        )


def _handle(event: tuple[Any, ...], run: _Run, errors: list[str], stop: Any) -> None:
    what, _, payload = event
    if what == "note":
        run.progress.note(payload)
    elif what == "claimed":
        run.claimed()
    elif what == "outcome":
        run.report(payload)
    elif what == "error":
        errors.append(payload)
        stop.set()  # the others finish their root and stop


def _ended(proc: BaseProcess, errors: list[str], run: _Run, stop: Any) -> None:
    """A worker's pipe ended: it finished, or died without saying so (killed)."""
    proc.join()
    if proc.exitcode != 0:
        errors.append(f"worker process {proc.pid} died (exit code {proc.exitcode})")
        stop.set()
        run.progress.note(
            f"worker process {proc.pid} died; the root it held is finished or restored by the next run"
        )


def worker_main(job: WorkerJob, events: Connection, stop: Any) -> None:
    """A worker process: claim and migrate roots until none is left or a stop is asked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent asks for the stop (see the module)
    pid = os.getpid()
    try:
        _work(job, events, stop, pid)
    except BaseException as exc:
        events.send(("error", pid, f"worker process {pid}: {type(exc).__name__}: {exc}"))
    finally:
        events.close()


def _work(job: WorkerJob, events: Connection, stop: Any, pid: int) -> None:
    from bundler.context import system_graph
    from bundler.db import connect
    from bundler.lineup.lineup import _Run

    source, target = connect(job.source_url), connect(job.target_url)
    try:
        with source.connect() as conn:
            graph, _ = system_graph(conn, job.options.spec)

        def forward(what: str, outcome: RootOutcome | None) -> None:
            events.send((what, pid, outcome))

        run = _Run(
            source,
            target,
            job.system,
            graph,
            job.phase,
            job.wanted,
            job.options,
            _QueueProgress(events),
            stop,
            job.stale_after,
            layers=job.layers,
            forward=forward,
        )
        run.worker_loop()
    finally:
        source.dispose()
        target.dispose()


__all__ = ["WorkerJob", "run_processes", "worker_main"]
