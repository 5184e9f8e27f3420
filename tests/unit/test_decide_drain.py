"""Checkpoints in flight: written in order whatever order the broker acks them in, a failure
(seen by the main loop, a rebalance or a timer) stops the decision step and every checkpoint
after it, the polls of a commit interval share a partition's checkpoint, and the partitions
take turns."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any, NamedTuple

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

    async def store_states(self, pending: list[Any], ends: list[int | None]) -> None:
        self.events.append(f"state {ends[0]}")

    async def commit(self, offsets: dict[str, int]) -> None:
        await asyncio.sleep(0.015)  # a commit round trip: later polls' offsets wait for it
        self.events.append(f"commit {offsets['t']}")


def checkpoints(loop: DecideLoop, rec: Recorder) -> None:
    """Three polls' checkpoints whose outputs are acknowledged newest first."""
    acks = [asyncio.get_running_loop().create_future() for _ in range(3)]
    for poll in range(3):
        loop.chain(Checkpoint(1, [acks[poll]], {poll: []}, {"t": poll}))
    for poll, ack in reversed(list(enumerate(acks))):
        asyncio.get_running_loop().call_later(0.005 * (3 - poll), ack.set_result, None)


def with_recorder(loop: DecideLoop, rec: Recorder, commit_interval_s: float = 1e-9) -> DecideLoop:
    loop.settings = SimpleNamespace(commit_interval_s=commit_interval_s, checkpoint_in_turns=True)  # type: ignore[assignment]
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


class Held:
    """A partition's view, as the checkpoint sees it: the states changed since the last take."""

    def __init__(self) -> None:
        self.changed: dict[str, bytes] = {}
        self.takes: list[bool] = []  # each take's `everything`

    def take(self, everything: bool = False) -> list[tuple[str, bytes]]:
        self.takes.append(everything)
        taken, self.changed = list(self.changed.items()), {}
        return taken


class Logged(Recorder):
    """Records what each checkpoint logged (every partition's changes) and committed."""

    async def log_states(self, changes: dict[int, Any]) -> list[Any]:
        self.events.append(f"logged {sorted((p, d, v.decode()) for p, rows in changes.items() for d, v in rows)}")
        return [(p, rows, []) for p, rows in changes.items()]

    async def logged(self, pending: list[Any]) -> list[int | None]:
        return [None for _ in pending]

    async def store_states(self, pending: list[Any], ends: list[int | None]) -> None:
        self.events.append(f"stored {[p for p, _, _ in pending]}")

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.events.append(f"commit {sorted((tp.partition, o) for tp, o in offsets.items())}")


class Clock:
    """The loop's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TP(NamedTuple):
    topic: str
    partition: int


def test_the_polls_of_a_commit_interval_are_checkpointed_together() -> None:
    """Polls decided within the interval share one checkpoint: a device changed in several of
    them logged once (as it stands after the last), one commit of the newest offsets; the
    next poll after the interval starts the next checkpoint."""

    async def scenario() -> list[str]:
        rec = Logged()
        loop = with_recorder(DecideLoop(None, None, Metrics(), Counter()), rec, commit_interval_s=60.0)  # type: ignore[arg-type]
        views = {0: Held(), 1: Held()}
        loop.views = views  # type: ignore[assignment]
        acks = [asyncio.get_running_loop().create_future() for _ in range(3)]
        for poll, (p, device) in enumerate([(0, "a"), (1, "b"), (0, "a")]):
            views[p].changed[device] = f"{device} after poll {poll}".encode()
            loop.pending.add({p: 1}, [acks[poll]], {TP("pings", p): poll + 1}, 0.0)
            loop.checkpoint_if_due()
        assert not loop.inflight  # within the interval: nothing started
        loop.settings = SimpleNamespace(commit_interval_s=1e-9, checkpoint_in_turns=True)  # type: ignore[assignment]
        loop.checkpoint_if_due()  # the interval is over: both partitions' turns came
        assert len(loop.inflight) == 1 and not loop.pending
        for ack in acks:
            ack.set_result(None)
        await loop.settle()
        loop.checkpoint_if_due()  # nothing decided since: no checkpoint
        assert not loop.inflight
        return rec.events

    assert asyncio.run(scenario()) == [
        "logged [(0, 'a', 'a after poll 2'), (1, 'b', 'b after poll 1')]",
        "stored [0, 1]",
        "commit [(0, 3), (1, 2)]",
    ]


def test_partitions_are_checkpointed_in_turns_with_every_output_decided_before() -> None:
    """Half an interval with two partitions: one partition's turn. Its checkpoint takes its
    states and offsets, and waits for every output decided so far (the other partition's
    too); the other partition's offsets and states wait for its own turn."""

    async def scenario() -> tuple[list[str], list[bool]]:
        rec = Logged()
        loop = with_recorder(DecideLoop(None, None, Metrics(), Counter()), rec, commit_interval_s=1.0)  # type: ignore[arg-type]
        loop.clock = clock = Clock()
        views = {0: Held(), 1: Held()}
        loop.views = views  # type: ignore[assignment]
        loop.checkpoint_if_due()  # the assignment starts the rotation
        acks = [asyncio.get_running_loop().create_future() for _ in range(2)]
        for p in (0, 1):
            views[p].changed[f"d{p}"] = f"d{p} state".encode()
            loop.pending.add({p: 1}, [acks[p]], {TP("pings", p): 10 + p}, 0.0)
        clock.now += 0.6  # past the first turn (0.5 s), before the second
        loop.checkpoint_if_due()
        assert len(loop.inflight) == 1
        first = loop.inflight[0]
        acks[0].set_result(None)
        await asyncio.sleep(0.01)
        waited = [first.done()]  # partition 1's output not yet acknowledged: partition 0 waits
        acks[1].set_result(None)
        await loop.settle()
        left = dict(loop.pending.offsets)
        clock.now += 0.5
        loop.checkpoint_if_due()  # partition 1's turn, and the spacing of commits over
        await loop.settle()
        return [*rec.events, f"left {sorted(left.values())}"], waited

    events, waited = asyncio.run(scenario())
    assert waited == [False]
    assert events == [
        "logged [(0, 'd0', 'd0 state')]",
        "stored [0]",
        "commit [(0, 10)]",
        "logged [(1, 'd1', 'd1 state')]",
        "stored [1]",
        "commit [(1, 11)]",
        "left [11]",
    ]


def test_without_turns_every_partition_is_checkpointed_at_once() -> None:
    async def scenario() -> list[str]:
        rec = Logged()
        loop = with_recorder(DecideLoop(None, None, Metrics(), Counter()), rec, commit_interval_s=1.0)  # type: ignore[arg-type]
        loop.settings.checkpoint_in_turns = False
        loop.clock = clock = Clock()
        views = {0: Held(), 1: Held()}
        loop.views = views  # type: ignore[assignment]
        loop.checkpointed_at = clock()
        for p in (0, 1):
            views[p].changed[f"d{p}"] = b"s"
            loop.pending.add({p: 1}, [], {TP("pings", p): 10 + p}, 0.0)
        clock.now += 0.6
        loop.checkpoint_if_due()
        assert not loop.inflight  # within the interval: no checkpoint
        clock.now += 0.5
        loop.checkpoint_if_due()
        assert len(loop.inflight) == 1
        await loop.settle()
        return rec.events

    assert asyncio.run(scenario()) == [
        "logged [(0, 'd0', 's'), (1, 'd1', 's')]",
        "stored [0, 1]",
        "commit [(0, 10), (1, 11)]",
    ]


def test_commits_are_spaced_and_what_is_left_goes_out_once_the_spacing_is_over() -> None:
    """Checkpoints in turns would commit a dozen times a second: a checkpoint less than half an
    interval after the last commit leaves its offsets due; the next checkpoint after the spacing
    (or, in a quiet stream, the main loop) commits them with its own."""

    async def scenario() -> list[str]:
        rec = Logged()
        loop = with_recorder(DecideLoop(None, None, Metrics(), Counter()), rec, commit_interval_s=10.0)  # type: ignore[arg-type]
        loop.clock = clock = Clock()
        loop.views = {0: Held(), 1: Held()}  # type: ignore[assignment]
        loop.checkpoint_if_due()  # the rotation starts: no partition's turn for 5 s
        for p in (0, 1):
            loop.pending.add({p: 1}, [], {TP("pings", p): 10 + p}, 0.0)
            loop.checkpoint_now({p})
            await loop.settle()
        assert loop.due == {TP("pings", 1): 11}  # the second checkpoint's, within the spacing
        clock.now += 4.0
        loop.checkpoint_if_due()
        assert not loop.inflight  # still within it
        clock.now += 1.5  # past half an interval: partition 0's turn (nothing to take) and the spacing
        loop.checkpoint_if_due()
        await loop.settle()
        assert not loop.due
        return [e for e in rec.events if e.startswith("commit")]

    assert asyncio.run(scenario()) == ["commit [(0, 10)]", "commit [(1, 11)]"]


def test_turns_may_hold_changes_back_and_a_drain_writes_everything() -> None:
    """A turn's take may hold back changes (``state_refresh_s``); a drain (a stop, a rebalance,
    expiry) takes every partition's with nothing held back — even with no poll pending, since a
    held back change can outlive the polls that made it."""

    async def scenario() -> tuple[list[bool], list[bool], list[str]]:
        rec = Logged()
        loop = with_recorder(DecideLoop(None, None, Metrics(), Counter()), rec, commit_interval_s=1.0)  # type: ignore[arg-type]
        loop.clock = clock = Clock()
        views = {0: Held(), 1: Held()}
        loop.views = views  # type: ignore[assignment]
        loop.checkpoint_if_due()
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        views[0].changed["a"] = b"a moved"
        loop.pending.add({0: 1}, [ack], {TP("pings", 0): 5}, 0.0)
        clock.now += 1.1  # both turns due
        loop.checkpoint_if_due()
        await loop.settle()
        assert not loop.pending
        views[1].changed["b"] = b"b held back"  # as a view returns it once asked for everything
        await loop.drain()
        return views[0].takes, views[1].takes, rec.events

    takes0, takes1, events = asyncio.run(scenario())
    assert takes0 == [False, True] and takes1 == [False, True]
    assert "logged [(1, 'b', 'b held back')]" in events
