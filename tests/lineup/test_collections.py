"""Python's full garbage collections are held off while a root is down, and only then."""

from __future__ import annotations

import gc
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from bundler.lineup import root as r


@pytest.fixture
def thresholds() -> Any:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_a_hold_defers_full_collections_and_gives_them_back(thresholds: Any) -> None:
    with r.full_collections_held():
        young, middle, full = gc.get_threshold()
        assert (young, middle) == (700, 10)  # the young generations are collected as usual
        assert full > 1_000_000
    assert gc.get_threshold() == (700, 10, 10)


def test_holds_in_threads_share_one(thresholds: Any) -> None:
    """The first hold saves the threshold, the last gives it back, whatever the order they end in."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []

    def first() -> None:
        with r.full_collections_held():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with r.full_collections_held():
        second_in.set()
        first_out.wait(5)
        seen.append(gc.get_threshold()[2])  # the first one ended: still held by this one
    thread.join(5)
    assert seen[0] > 1_000_000
    assert gc.get_threshold() == (700, 10, 10)


def test_a_root_is_exported_and_loaded_under_the_hold(thresholds: Any, monkeypatch: Any) -> None:
    """migrate_root holds from the export (the mark) on, and gives the threshold back when the
    root needs no load, and when its export fails with an exception."""
    seen: list[int] = []
    outcome = r.RootOutcome("customer", "1", "{}", "done")

    def export_for_load(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_threshold()[2])
        return outcome

    monkeypatch.setattr(r, "export_for_load", export_for_load)
    row = SimpleNamespace(kind="customer", root_pk="1", root_key="{}", phase="full")
    got = r.migrate_root(None, None, "S", row, None, None)  # type: ignore[arg-type]
    assert got is outcome and seen[0] > 1_000_000
    assert gc.get_threshold() == (700, 10, 10)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the source went away")

    monkeypatch.setattr(r, "export_for_load", broken)
    with pytest.raises(RuntimeError):
        r.migrate_root(None, None, "S", row, None, None)  # type: ignore[arg-type]
    assert gc.get_threshold() == (700, 10, 10)
