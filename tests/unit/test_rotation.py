"""Checkpoint turns: each partition once an interval, spread evenly over it, never a burst
after a stall, started over by a new assignment."""

from __future__ import annotations

from streams.agents.rotation import Rotation


def turns(rot: Rotation, parts: list[int], times: list[float], interval: float = 1.0) -> list[list[int]]:
    return [rot.due(parts, t, interval) for t in times]


def test_each_partition_comes_once_an_interval_a_step_apart() -> None:
    rot = Rotation()
    parts = [3, 5, 7, 9]
    got = turns(rot, parts, [0.0, 0.1, 0.25, 0.3, 0.5, 0.74, 0.75, 1.0, 1.25])
    assert got == [[], [], [3], [], [5], [], [7], [9], [3]]


def test_turns_keep_their_schedule_when_polls_come_late() -> None:
    rot = Rotation()
    # a poll at 0.30 takes the turn due at 0.25; the next is still due at 0.50, not 0.55
    assert turns(rot, [0, 1, 2, 3], [0.0, 0.30, 0.49, 0.50]) == [[], [0], [], [1]]


def test_a_late_poll_takes_the_turns_it_missed_at_most_once_each() -> None:
    rot = Rotation()
    assert turns(rot, [0, 1, 2, 3], [0.0, 0.6]) == [[], [0, 1]]
    rot = Rotation()
    got = turns(rot, [0, 1, 2, 3], [0.0, 0.1, 5.0, 5.1, 5.25])
    assert got == [[], [], [0, 1, 2, 3], [], [0]]  # every partition once, then from the stall on


def test_a_new_assignment_starts_the_rotation_over() -> None:
    rot = Rotation()
    assert turns(rot, [0, 1], [0.0, 0.5]) == [[], [0]]
    assert rot.due([0, 1, 2], 0.6, 1.0) == []  # a partition came: no turn yet
    assert turns(rot, [0, 1, 2], [0.9, 0.94, 1.27]) == [[], [0], [1]]  # a third of a second apart
    assert rot.due([], 2.0, 1.0) == [] and rot.due([], 9.0, 1.0) == []


def test_a_shorter_interval_takes_effect_at_once() -> None:
    rot = Rotation()
    assert turns(rot, [0, 1], [0.0, 0.4]) == [[], []]
    assert rot.due([0, 1], 0.45, 0.4) == [0, 1]
