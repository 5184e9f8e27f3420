"""Writing many records to one partition cheaply: aiokafka record batches instead of one ``send`` each.

A per-record ``send`` costs tens of microseconds of Python; appending to a batch builder costs
about one. The hot path (decisions, state changelog) writes this way, partition by partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

BATCH_BYTES = 512 * 1024  # well under the broker's default message.max.bytes (1 MiB)


@dataclass(frozen=True)
class Sent:
    """One batch on its way: resolves to the metadata of its first record."""

    future: asyncio.Future[Any]
    count: int


async def send_records(
    producer: Any, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]
) -> list[Sent]:
    """Queue ``(key, value)`` records for ``topic[partition]`` in order; return the batches sent."""
    futures: list[Sent] = []
    batch = producer.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            n = batch.record_count()
            futures.append(Sent(await producer.send_batch(batch, topic, partition=partition), n))
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"record of {len(value or b'')} bytes does not fit a batch for {topic}[{partition}]")
    if n := batch.record_count():
        futures.append(Sent(await producer.send_batch(batch, topic, partition=partition), n))
    return futures


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the producer's default partitioner picks for ``key`` (murmur2, as the
    Java client): records sent in batches land where single sends of them would."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class KeyPartitions:
    """Keys' partitions worked out for a topic of ``partitions`` partitions, kept across calls
    by a caller whose keys recur (murmur2 in Python is ~2 µs a key); forgotten when the topic's
    partition count changes, as the producer's own partitioner would then move the keys."""

    partitions: int = 0
    of: dict[bytes, int] = field(default_factory=dict)

    def partition(self, key: bytes, partitions: int) -> int:
        if partitions != self.partitions:
            self.partitions, self.of = partitions, {}
        p = self.of.get(key)
        if p is None:
            p = self.of[key] = partition_of(key, partitions)
        return p


async def send_keyed(
    producer: Any, topic: str, records: Iterable[tuple[bytes, bytes]], known: KeyPartitions | None = None
) -> list[Sent]:
    """:func:`send_records` for keyed records bound for any partition: grouped by the
    partition of their key (order kept within each), one batch per partition. ``known``: the
    keys' partitions kept by the caller across calls."""
    partitions = len(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    if known is None:
        known = KeyPartitions()  # keys repeat within a poll (a campaign's candidates)
    for key, value in records:
        by_partition.setdefault(known.partition(key, partitions), []).append((key, value))
    sent: list[Sent] = []
    for p, rows in by_partition.items():
        sent += await send_records(producer, topic, p, rows)
    return sent


async def next_offset(sent: list[Sent]) -> int | None:
    """Once every batch is acknowledged: the offset after the last record written (None if none)."""
    if not sent:
        return None
    metas = await asyncio.gather(*(s.future for s in sent))
    return int(metas[-1].offset) + sent[-1].count


async def warm(producer: Any, topics: Iterable[str]) -> None:
    """Fetch the topics' metadata before the first record, so a first ``send`` to a topic does
    not wait for it in the middle of a poll (it had no measurable effect on the first seconds'
    latency, which was the broker's and the load generator's CPU: bench/results/e2e.md)."""
    for topic in topics:
        await producer.partitions_for(topic)


def producer_kwargs() -> dict[str, Any]:
    """Producer options shared by the steps: every write acknowledged by all in-sync replicas,
    idempotent (no duplicates from the producer's own retries), batches up to ``BATCH_BYTES``."""
    return {"acks": "all", "enable_idempotence": True, "linger_ms": 5, "max_batch_size": BATCH_BYTES}
