"""Checkpoints in flight: written in poll order whatever order the broker acks them in, and a
failure (seen by the main loop, a rebalance or a timer) stops the decision step and every
checkpoint after it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from streams.agents.decide import Checkpoint, DecideLoop
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
        loop.chain(Checkpoint(1, [acks[poll]], {poll: []}, {"t": poll}, 0.0, 0.0))
    for poll, ack in reversed(list(enumerate(acks))):
        asyncio.get_running_loop().call_later(0.005 * (3 - poll), ack.set_result, None)


def with_recorder(loop: DecideLoop, rec: Recorder, commit_interval_s: float = 1e-9) -> DecideLoop:
    loop.settings = SimpleNamespace(commit_interval_s=commit_interval_s)  # type: ignore[assignment]
    loop.consumer = rec
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


def test_offsets_stored_within_the_commit_interval_wait_for_the_next_commit() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        rec = Recorder()
        loop = with_recorder(DecideLoop(None, None, Metrics(), Counter()), rec, commit_interval_s=60.0)  # type: ignore[arg-type]
        loop.committed_at = time.monotonic()  # just committed
        checkpoints(loop, rec)
        await loop.settle()
        before = list(rec.events)
        await loop.commit_due()  # what a quiet poll, a stop or a rebalance does
        return before, rec.events

    before, after = asyncio.run(scenario())
    assert [e for e in before if e.startswith("state")] == ["state 0", "state 1", "state 2"]
    assert not [e for e in before if e.startswith("commit")]  # all three stored, none committed yet
    assert after[len(before) :] == ["commit 2"]  # then the newest offsets, in one commit
