"""The worker's garbage-collector settings: start-up objects frozen, pauses measured."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.heap import GEN0_THRESHOLD, Pauses, collections_paused, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_exists_and_frees_what_is_garbage(restored_gc: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: refcounting alone never frees it

    kept = Node()
    gone = weakref.ref(Node())  # garbage from the start, freed only by a collection
    settle_heap()
    assert gone() is None
    assert gc.get_threshold()[0] == GEN0_THRESHOLD
    tracked = {id(o) for o in gc.get_objects()}
    assert id(kept) not in tracked and gc.get_freeze_count() > 0  # frozen: collections skip it
    gone = weakref.ref(Node())
    settle_heap()  # again (a catalog swap): what was frozen is judged again, garbage freed
    assert gone() is None and kept.me is kept


def test_pauses_are_recorded_per_generation_and_drained() -> None:
    with Pauses() as pauses:
        gc.collect()
        gc.collect(0)
    assert len(pauses.seconds[2]) >= 1 and len(pauses.seconds[0]) >= 1
    assert all(s >= 0 for s in pauses.seconds[2])
    assert "gen2" in pauses.summary()
    taken = pauses.drain()
    assert taken[2] and pauses.seconds == {0: [], 1: [], 2: []}
    gc.collect()  # uninstalled: nothing more recorded
    assert pauses.seconds[2] == []


def test_collections_pause_for_builds_and_resume_after_the_last() -> None:
    assert gc.isenabled()
    with collections_paused():
        assert not gc.isenabled()
        with collections_paused():  # a reload overlapping the start-up build
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer build still runs
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collections_paused():
        raise RuntimeError("a catalog that failed to build")
    assert gc.isenabled()  # resumed all the same


def test_collections_stay_off_if_they_were_off() -> None:
    gc.disable()
    try:
        with collections_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
