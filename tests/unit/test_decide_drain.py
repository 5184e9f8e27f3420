"""A checkpoint that fails while a rebalance or a timer waits for it still stops the decision step."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from streams.agents.decide import DecideLoop


def test_a_failed_checkpoint_seen_by_drain_is_kept_for_the_main_loop() -> None:
    async def scenario() -> DecideLoop:
        loop = DecideLoop(None, None, None, Counter())  # type: ignore[arg-type]

        async def failing() -> None:
            raise OSError("changelog write failed")

        loop.inflight = asyncio.ensure_future(failing())
        await loop.drain()  # the caller (rebalance listener, expiry timer) is not the one to die
        assert loop.inflight is None
        return loop

    loop = asyncio.run(scenario())
    assert isinstance(loop.failure, OSError)

    async def settle_raises(loop: Any) -> None:
        async def failing() -> None:
            raise OSError("ack failed")

        loop.inflight = asyncio.ensure_future(failing())
        await loop.settle()

    with pytest.raises(OSError, match="ack failed"):  # the main loop's own wait raises
        asyncio.run(settle_raises(DecideLoop(None, None, None, Counter())))  # type: ignore[arg-type]
