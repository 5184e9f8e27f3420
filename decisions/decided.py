"""A batch's decisions as the engine hands them out: rows, or records the presence book wrote.

The decision step needs of its decisions only their records (for the decisions topic) and
counts (for the metrics); replay and tests want rows. The Python engine makes rows
(:class:`Rows`); the presence book writes its suppressions' records itself, ~0.4 a ping at
100k fences, so they never become Python objects on the hot path (:class:`Written`). Both
answer the same questions, and :class:`Written` makes rows on demand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from decisions.decision_row import DecisionRow
from decisions.pings import Ping, PresenceCheck
from decisions.records import Transition

# the presence book's trigger codes (kernel/src/presence.rs: EXIT, ENTER, DWELL)
BOOK_TRIGGERS: dict[int, Transition] = {1: "exit", 2: "enter", 3: "dwell"}


class Decisions(Protocol):
    """A batch's decisions, in order."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[DecisionRow]: ...

    def records(self) -> Sequence[tuple[bytes, bytes]]:
        """(key, value) of each decision's record for the decisions topic (keyed by device)."""

    def labels(self) -> Counter[tuple[str, str]]:
        """How many decisions of each (outcome, reason)."""

    def ts_ms(self, notify: bool) -> Any:
        """Each decision's ping time (epoch ms, an int64 array); notify decisions' only if
        ``notify`` (the decision step's are candidates, timed when the budget step makes them
        final)."""

    def transitions(self) -> Counter[str]:
        """Distinct transitions (device, time, store, trigger) by trigger: a transition with
        several campaigns is one."""


class Rows:
    """Decisions as rows (the Python engine's, and the budget step's final ones)."""

    def __init__(self, rows: list[DecisionRow]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[DecisionRow]:
        return iter(self.rows)

    def records(self) -> list[tuple[bytes, bytes]]:
        return [(d.device_id.encode(), d.dumps()) for d in self.rows]

    def labels(self) -> Counter[tuple[str, str]]:
        return Counter([(d.outcome, d.reason) for d in self.rows])

    def ts_ms(self, notify: bool) -> Any:
        return np.array([d.ts_ms for d in self.rows if notify or d.outcome != "notify"], dtype=np.int64)

    def transitions(self) -> Counter[str]:
        moved = {(d.device_id, d.ts_ms, d.store_id, d.transition) for d in self.rows}
        return Counter(kind for *_, kind in moved)


class Written:
    """The suppressions the presence book decided in a batch, written there as their records
    (``geofences._kernel.Suppressions``); ``pings``: the batch (for rows)."""

    def __init__(self, written: Any, pings: Sequence[Ping | PresenceCheck], catalog_version: str) -> None:
        self.written = written
        self.pings = pings
        self.catalog_version = catalog_version

    def __len__(self) -> int:
        return len(self.written)

    def __iter__(self) -> Iterator[DecisionRow]:
        for k, trigger, store_id, campaign_id, _, reason in self.written.fields():
            at = self.pings[k]
            yield DecisionRow(
                at.device_id, at.ts_ms, store_id, campaign_id, BOOK_TRIGGERS[trigger], "suppressed", reason, None,
                self.catalog_version,
            )  # fmt: skip

    def records(self) -> list[tuple[bytes, bytes]]:
        records: list[tuple[bytes, bytes]] = self.written.records()
        return records

    def labels(self) -> Counter[tuple[str, str]]:
        return Counter({("suppressed", reason): n for reason, n in self.written.labels()})

    def ts_ms(self, notify: bool) -> Any:
        return self.written.ts_ms()  # suppressions only

    def transitions(self) -> Counter[str]:
        return Counter({BOOK_TRIGGERS[code]: n for code, n in self.written.transitions()})


class Gated:
    """The pings of a batch a gate kept from moving presence, with the gate's name. The decision
    step only counts them by reason; replay and tests list them ping by ping, so the pings are
    made only then (a ``Ping`` built for each gated ping cost ~4 % of a worker at 10k fences)."""

    __slots__ = ("at", "pings", "why")

    def __init__(self, pings: Sequence[Ping | PresenceCheck], at: list[int], why: list[str]) -> None:
        self.pings = pings
        self.at = at  # each gated ping's index in ``pings``
        self.why = why  # and its gate

    def __len__(self) -> int:
        return len(self.at)

    def __iter__(self) -> Iterator[tuple[Ping, str]]:
        for k, reason in zip(self.at, self.why, strict=True):
            ping = self.pings[k]
            assert isinstance(ping, Ping)  # presence checks pass every gate
            yield ping, reason

    def by_reason(self) -> Counter[str]:
        return Counter(self.why)
