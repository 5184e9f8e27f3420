"""The budget step skips an outbox record it cannot read, counting it and naming where it is."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from streams.agents.budget import BudgetLoop
from streams.fetched import Columns
from streams.metrics import Metrics
from streams.settings import load_settings


class NoBroker:
    """Answers the one question asked before anything is sent (there is nothing to send)."""

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may be sent for unreadable candidates")


def test_unreadable_candidates_are_counted_and_named(caplog: pytest.LogCaptureFixture) -> None:
    loop = BudgetLoop(load_settings({}), Metrics(), Counter())
    loop.producer = NoBroker()
    loop.used[2] = Counter()
    loop.emitted.ids[2] = set()  # read back already
    tp = TopicPartition("geopush-outbox", 2)
    cols = Columns([b"c1", None, b"c2"], [b"{not json", None, b'{"decision":{}}'], [40, 41, 42], 0)
    with caplog.at_level(logging.ERROR, logger="geopush.budget"):
        asyncio.run(loop.handle({tp: cols}))
    assert loop.counts["bad_candidates"] == 3
    said = [r.getMessage() for r in caplog.records]
    assert any("geopush-outbox[2]@41" in m and "without a value" in m for m in said)
    assert any("geopush-outbox[2]@42" in m and "notification: missing, or not an object" in m for m in said)
