"""Checkpoints in flight: written in poll order whatever order the broker acks them in, and a
failure (seen by the main loop, a rebalance or a timer) stops the decision step and every
checkpoint after it."""

from __future__ import annotations

import asyncio
from collections import Counter
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
    """Stands in for the broker side of a checkpoint: records state writes and commits in order."""

    def __init__(self, fail_state_of: int | None = None) -> None:
        self.events: list[str] = []
        self.fail_state_of = fail_state_of

    async def write_states(self, changes: dict[int, Any]) -> float:
        (poll,) = changes
        await asyncio.sleep(0.01 * (3 - poll))  # earlier polls slower to write
        if poll == self.fail_state_of:
            raise OSError(f"changelog of poll {poll} failed")
        self.events.append(f"state {poll}")
        return 0.0

    async def commit(self, offsets: dict[str, int]) -> None:
        self.events.append(f"commit {offsets['t']}")


def checkpoints(loop: DecideLoop, rec: Recorder) -> None:
    """Three polls' checkpoints whose outputs are acknowledged newest first."""
    acks = [asyncio.get_running_loop().create_future() for _ in range(3)]
    for poll in range(3):
        cp = Checkpoint(1, [acks[poll]], {poll: []}, {"t": poll}, 0.0, 0.0)
        loop.enqueue(loop.checkpoint(rec, cp, loop.inflight[-1] if loop.inflight else None))
    for poll, ack in reversed(list(enumerate(acks))):
        asyncio.get_running_loop().call_later(0.005 * (3 - poll), ack.set_result, None)


def test_checkpoints_in_flight_write_states_and_offsets_in_poll_order() -> None:
    async def scenario() -> list[str]:
        loop = DecideLoop(None, None, Metrics(), Counter())  # type: ignore[arg-type]
        rec = Recorder()
        loop.write_states = rec.write_states  # type: ignore[method-assign]
        checkpoints(loop, rec)
        await loop.settle()
        return rec.events

    assert asyncio.run(scenario()) == ["state 0", "commit 0", "state 1", "commit 1", "state 2", "commit 2"]


def test_a_failed_checkpoint_stops_every_later_one() -> None:
    async def scenario() -> tuple[list[str], DecideLoop]:
        loop = DecideLoop(None, None, Metrics(), Counter())  # type: ignore[arg-type]
        rec = Recorder(fail_state_of=1)
        loop.write_states = rec.write_states  # type: ignore[method-assign]
        checkpoints(loop, rec)
        with pytest.raises(OSError, match="poll 1 failed"):
            await loop.settle()
        return rec.events, loop

    events, loop = asyncio.run(scenario())
    assert events == ["state 0", "commit 0"]  # poll 2 decided, but neither its state nor its offset written
    assert not loop.inflight
