"""Checkpoints in flight: written in poll order whatever order the broker acks them in, and a
failure (seen by the main loop, a rebalance or a timer) stops the decision step and every
checkpoint after it."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from decisions.state import DeviceState
from streams.agents.decide import STORE_EVERY_S, Checkpoint, DecideLoop
from streams.device_store import CHANGELOG_NEXT, PartitionStore
from streams.device_view import StoreStates
from streams.metrics import Metrics


def test_a_failed_checkpoint_seen_by_drain_is_kept_for_the_main_loop() -> None:
    async def scenario() -> DecideLoop:
        loop = DecideLoop(None, None, None, Counter())  # type: ignore[arg-type]

        async def failing() -> None:
            raise OSError("changelog write failed")

        loop.enqueue(failing())
        await loop.drain()  # the caller (rebalance listener, expiry timer) is not the one to die
        assert not loop.inflight
        return loop

    loop = asyncio.run(scenario())
    assert isinstance(loop.failure, OSError)

    async def settle_raises(loop: Any) -> None:
        async def failing() -> None:
            raise OSError("ack failed")

        loop.enqueue(failing())
        await loop.settle()

    with pytest.raises(OSError, match="ack failed"):  # the main loop's own wait raises
        asyncio.run(settle_raises(DecideLoop(None, None, None, Counter())))  # type: ignore[arg-type]


class Recorder:
    """Stands in for the broker side of a checkpoint: records changelog sends, store writes and
    commits in order; earlier polls' changelog acks come slower."""

    def __init__(self, fail_state_of: int | None = None) -> None:
        self.events: list[str] = []
        self.fail_state_of = fail_state_of

    async def log_states(self, changes: dict[int, Any]) -> list[Any]:
        (poll,) = changes
        self.events.append(f"queued {poll}")
        return [(poll, [], [])]

    async def logged(self, pending: list[Any]) -> list[int | None]:
        ((poll, _, _),) = pending
        await asyncio.sleep(0.01 * (3 - poll))  # earlier polls slower to be acknowledged
        if poll == self.fail_state_of:
            raise OSError(f"changelog of poll {poll} failed")
        return [poll]

    def store_states(self, pending: list[Any], ends: list[int | None]) -> None:
        self.events.append(f"state {ends[0]}")

    async def commit(self, offsets: dict[str, int]) -> None:
        await asyncio.sleep(0.015)  # a commit round trip: later polls' offsets wait for it
        self.events.append(f"commit {offsets['t']}")


def checkpoints(loop: DecideLoop, rec: Recorder) -> None:
    """Three polls' checkpoints whose outputs are acknowledged newest first."""
    acks = [asyncio.get_running_loop().create_future() for _ in range(3)]
    for poll in range(3):
        loop.chain(rec, Checkpoint(1, [acks[poll]], {poll: []}, {"t": poll}, 0.0, 0.0))
    for poll, ack in reversed(list(enumerate(acks))):
        asyncio.get_running_loop().call_later(0.005 * (3 - poll), ack.set_result, None)


def with_recorder(loop: DecideLoop, rec: Recorder) -> DecideLoop:
    loop.log_states = rec.log_states  # type: ignore[method-assign]
    loop.logged = rec.logged  # type: ignore[method-assign]
    loop.store_states = rec.store_states  # type: ignore[method-assign]
    return loop


def test_checkpoints_in_flight_overlap_but_write_states_and_offsets_in_poll_order() -> None:
    async def scenario() -> list[str]:
        rec = Recorder()
        loop = with_recorder(DecideLoop(None, None, Metrics(), Counter()), rec)  # type: ignore[arg-type]
        checkpoints(loop, rec)
        await loop.settle()
        return rec.events

    events = asyncio.run(scenario())
    # every poll's changelog records queued before the first is acknowledged (not one round
    # trip after another), in poll order
    assert [e for e in events if e.startswith("queued")] == ["queued 0", "queued 1", "queued 2"]
    assert events.index("queued 2") < events.index("state 0")
    assert [e for e in events if e.startswith("state")] == ["state 0", "state 1", "state 2"]
    commits = [int(e.split()[1]) for e in events if e.startswith("commit")]
    assert commits == sorted(commits) and commits[-1] == 2  # the newest offsets, never going back
    assert len(commits) < 3  # polls stored during a commit ride on the next one
    for e in events:
        if e.startswith("commit"):
            assert events.index(f"state {e.split()[1]}") < events.index(e)  # stored before committed


def test_a_failed_checkpoint_stops_every_later_one() -> None:
    async def scenario() -> tuple[list[str], DecideLoop]:
        rec = Recorder(fail_state_of=1)
        loop = with_recorder(DecideLoop(None, None, Metrics(), Counter()), rec)  # type: ignore[arg-type]
        checkpoints(loop, rec)
        with pytest.raises(OSError, match="poll 1 failed"):
            await loop.settle()
        return rec.events, loop

    events, loop = asyncio.run(scenario())
    # poll 2 decided (and its records queued), but neither its state nor its offset written
    assert [e for e in events if not e.startswith("queued")] == ["state 0", "commit 0"]
    assert not loop.inflight


def staged_loop() -> tuple[DecideLoop, PartitionStore, StoreStates]:
    loop = DecideLoop(None, None, Metrics(), Counter())  # type: ignore[arg-type]
    store = PartitionStore(None)
    view = StoreStates(store)
    loop.stores, loop.views = {0: store}, {0: view}
    return loop, store, view


def state(ts: int) -> bytes:
    return DeviceState(ts_ms=ts, lat=35.0, lng=139.0).dumps()


def test_states_reach_the_store_gathered_in_poll_order_with_the_last_changelog_offset() -> None:
    loop, store, view = staged_loop()
    a1, b1, a2, a3 = state(1), state(2), state(3), state(4)
    view.unwritten.update({"a": a1, "b": b1})  # what polls took, until the store has it
    loop.store_states([(0, [("a", a1), ("b", b1)], [])], [10])
    view.unwritten["a"] = a2
    loop.store_states([(0, [("a", a2)], [])], [13])  # the next poll's newer state of a
    assert store.state("a") is None and store.next_offset(CHANGELOG_NEXT) == 0  # not yet written
    got = view.get("a")
    assert got is not None and got.ts_ms == 3  # reads see the newest change meanwhile
    view.unwritten["a"] = a3  # a later poll took a newer state, not acknowledged yet
    loop.stored_at -= STORE_EVERY_S
    loop.store_due()
    assert (store.state("a"), store.state("b")) == (a2, b1)
    assert store.next_offset(CHANGELOG_NEXT) == 13
    assert view.unwritten == {"a": a3}  # a's newer state still held until its own poll is written
    assert not loop.staged


def test_drain_writes_what_is_gathered_so_expiry_and_revocation_see_it() -> None:
    loop, store, _ = staged_loop()
    a1 = state(1)
    loop.store_states([(0, [("a", a1)], [])], [7])
    assert store.state("a") is None
    asyncio.run(loop.drain())
    assert store.state("a") == a1 and store.next_offset(CHANGELOG_NEXT) == 7
    loop.store_states([(0, [("a", state(2))], [])], [8])
    del loop.stores[0]  # revoked meanwhile: its next owner reads the changelog
    loop.flush_states()
    assert store.state("a") == a1 and not loop.staged
