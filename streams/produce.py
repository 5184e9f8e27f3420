"""Writing many records to one partition cheaply: whole record batches instead of one ``send`` each.

A per-record ``send`` costs tens of microseconds of Python; appending to aiokafka's batch
builder ~0.75 µs; the kernel's ``encode_records`` writes a poll's records for a partition in
one call (~0.05 µs a record) into :class:`RecordsBatch`, which aiokafka's accumulator sends as
its own. The hot path (decisions, state changelog, candidates) writes this way, partition by
partition; without the kernel, or where aiokafka's batches are not the kernel's byte for byte
(checked once), records go through aiokafka's builder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

BATCH_BYTES = 512 * 1024  # well under the broker's default message.max.bytes (1 MiB)
HEADER_BYTES = 61  # a v2 record batch's header


@dataclass(frozen=True)
class Sent:
    """One batch on its way: resolves to the metadata of its first record."""

    future: asyncio.Future[Any]
    count: int


class RecordsBatch(BatchBuilder):
    """A batch of records the kernel encoded, sent by aiokafka's accumulator as its builder's
    batches are: it is told the producer's id, epoch and first sequence, then asks for the
    bytes, which the kernel writes then (header and CRC-32C)."""

    def __init__(self, kernel: Any, records: bytes, count: int, timestamp_ms: int) -> None:
        # BatchBuilder.__init__ is left out on purpose: it makes a builder this batch does not use
        self._kernel = kernel
        self._records = records
        self._relative_offset = count  # record_count()
        self._timestamp_ms = timestamp_ms
        self._state = (-1, -1, 0)  # producer id, epoch, base sequence (none: not idempotent)
        self._buffer: bytes | None = None
        self._closed = True  # nothing may be appended

    def append(self, *, timestamp: Any, key: Any, value: Any, headers: Any = ()) -> None:
        return None  # full: the accumulator starts a batch of its own

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        self._state = (producer_id, producer_epoch, base_sequence)

    def _build(self) -> bytes:
        if self._buffer is None:
            pid, epoch, seq = self._state
            self._buffer = self._kernel.record_batch(
                self._records, self._relative_offset, self._timestamp_ms, pid, epoch, seq, False
            )
        return self._buffer

    def size(self) -> int:
        return len(self._buffer) if self._buffer is not None else HEADER_BYTES + len(self._records)


def encoder_for(producer: Any) -> Any:
    """The kernel, if it writes ``producer``'s batches: built, the same bytes as aiokafka's
    builder (checked once), and a producer without compression or transactions."""
    if getattr(producer, "_compression_type", None) not in (None, 0):
        return None
    txn = getattr(producer, "_txn_manager", None)  # an idempotent producer has one, without an id
    if txn is not None and getattr(txn, "transactional_id", None) is not None:
        return None
    if not _ENCODER:
        _ENCODER.append(_checked_encoder())
    return _ENCODER[0]


_ENCODER: list[Any] = []  # [the kernel if its batches are aiokafka's, else None], checked at first use


def _checked_encoder() -> Any:
    """The kernel if a batch it writes is, byte for byte, the one aiokafka's builder writes
    for the same records (null keys and values, a split included), else None."""
    from geofences.index import load_kernel

    kernel = load_kernel()
    if kernel is None or not hasattr(kernel, "encode_records"):
        return None
    rows = [(b"k%d" % i, b"v" * (i * 37 % 300)) for i in range(40)] + [(None, b"x"), (b"gone", None)]
    at, state, size = 1_795_395_600_123, (4242, 3, 17), 2048
    return kernel if kernel_batches(kernel, rows, size, at, state) == aiokafka_batches(rows, size, at, state) else None


Rows = list[tuple[bytes | None, bytes | None]]


def encoded(kernel: Any, records: Iterable[tuple[bytes | None, bytes | None]], size: int) -> list[RecordsBatch]:
    """``records`` as the kernel's batches of at most ``size`` bytes (the first record of a
    batch goes in whatever its size, as in aiokafka's builder), stamped now."""
    rows = records if isinstance(records, list) else list(records)
    now = int(time.time() * 1000)
    return [RecordsBatch(kernel, raw, n, now) for raw, n in kernel.encode_records(rows, size)]


def kernel_batches(kernel: Any, rows: Rows, size: int, at: int, state: tuple[int, int, int]) -> list[bytes]:
    """The batches :func:`send_records` sends for ``rows`` through the kernel, as bytes, with
    timestamp ``at`` and producer state (id, epoch, base sequence) ``state``."""
    out = []
    for raw, n in kernel.encode_records(rows, size):
        batch = RecordsBatch(kernel, raw, n, at)
        batch._set_producer_state(*state)
        out.append(bytes(batch._build()))
    return out


def aiokafka_batches(rows: Rows, size: int, at: int, state: tuple[int, int, int]) -> list[bytes]:
    """:func:`kernel_batches` by aiokafka's own builder: the reference."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builders: list[Any] = []
    first = 0
    for i, (key, value) in enumerate(rows):
        if not builders or builders[-1].append(i - first, timestamp=at, key=key, value=value, headers=[]) is None:
            builders.append(DefaultRecordBatchBuilder(2, 0, 0, -1, -1, 0, size))
            first = i
            builders[-1].append(0, timestamp=at, key=key, value=value, headers=[])
    for b in builders:
        b.set_producer_state(*state)
    return [bytes(b.build()) for b in builders]


async def send_records(
    producer: Any, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]
) -> list[Sent]:
    """Queue ``(key, value)`` records for ``topic[partition]`` in order; return the batches sent."""
    kernel = encoder_for(producer)
    if kernel is not None:
        size = producer._message_accumulator._batch_size
        return [
            Sent(await producer.send_batch(batch, topic, partition=partition), batch.record_count())
            for batch in encoded(kernel, records, size)
        ]
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
    Java client): records sent in batches land where single sends of them would. The
    kernel's murmur2 where built (~0.2 µs; aiokafka's, in Python, ~2 µs a key)."""
    from geofences.index import kernel_function

    native = kernel_function("key_partitions")
    if native is not None:
        return int(native([key], partitions)[0])
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
