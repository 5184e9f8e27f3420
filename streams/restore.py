"""Reading partitions of a topic from given offsets up to their current end (state restore).

Used when partitions are assigned: a step reads its changelog's tail (and the ``devices``
topic's) before it processes a single record of those partitions.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from streams.settings import Settings

log = logging.getLogger("geopush.restore")


async def end_offsets(settings: Settings, topic: str, partitions: set[int]) -> dict[int, int]:
    """The current end offset of each partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(enable_auto_commit=False, **settings.aiokafka_kwargs())
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read_to_end(settings: Settings, topic: str, starts: dict[int, int]) -> AsyncIterator[tuple[int, list[Any]]]:
    """Yield ``(partition, records)`` batches from each partition's start offset to the end it
    had when the read began. A start below what retention kept begins at the earliest kept."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if not starts:
        return
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
        **settings.aiokafka_kwargs(),
    )  # fmt: skip
    await consumer.start()
    try:
        tps = {p: TopicPartition(topic, p) for p in starts}
        ends = await consumer.end_offsets(list(tps.values()))
        todo = {tp for tp in tps.values() if starts[tp.partition] < ends[tp]}
        if not todo:
            return
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, starts[tp.partition])
        total = 0
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, msgs in batch.items():
                msgs = [m for m in msgs if m.offset < ends[tp]]
                if msgs:
                    total += len(msgs)
                    yield tp.partition, msgs
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        log.info("read %d records of %s partitions %s", total, topic, sorted(starts))
    finally:
        await consumer.stop()
