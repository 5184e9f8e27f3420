"""Fetched records as columns (keys, values, offsets), not one aiokafka ``ConsumerRecord`` each.

``AIOKafkaConsumer.getmany`` turns every record into an 11-field ``ConsumerRecord`` through a
generator: ~1.2–1.7 µs a record, where reading the same record batches straight into lists
costs ~0.3 µs (20,000 pings of ~150 B, 2026-12-06) — about a seventh of a worker's CPU at
~7 µs a ping. :func:`getmany_columns` takes the fetcher's buffered results the way
``Fetcher.fetched_records`` does (same positions, waits, errors and limits) and reads their
batches itself. It leans on aiokafka's internals (the version is pinned in constraints.txt),
so :func:`columns_supported` checks them first and a caller without them uses ``getmany``
(:func:`columns_of` turns its records into the same columns); so does a partition read with
``isolation_level="read_committed"`` (aborted transactions are aiokafka's to skip).

Where the kernel is built, the batches themselves are read by it (:func:`keep_fetched_bytes`
has the fetcher keep each fetch's bytes): ~0.4 µs a record through aiokafka's record objects
(and its CRC-32C in software) against ~0.12 natively. Compressed or older-format batches are
still aiokafka's to read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BATCH = "_geopush_batch"  # attribute of a partition's records: the batch read part-way, if any
AT = "_geopush_at"  # and where the kernel reads next in its fetched bytes (-1: aiokafka reads them)


@dataclass(slots=True)
class Columns:
    """One partition's records of a poll, in offset order; ``first_ts``: the first's timestamp (ms)."""

    keys: list[bytes | None]
    values: list[bytes | None]
    offsets: list[int]
    first_ts: int

    def __len__(self) -> int:
        return len(self.offsets)


def columns_of(records: Sequence[Any]) -> Columns:
    """The columns of records as ``getmany`` returns them (the fallback path)."""
    return Columns([m.key for m in records], [m.value for m in records], [m.offset for m in records],
                   records[0].timestamp if records else 0)  # fmt: skip


class KeptRecords:
    """aiokafka's ``MemoryRecords`` of one fetched partition, with the bytes it reads kept for
    the kernel (aiokafka's compiled class does not show them)."""

    __slots__ = ("_records", "raw")

    def __init__(self, raw: bytes) -> None:
        from aiokafka.record.memory_records import MemoryRecords

        self.raw = raw
        self._records = MemoryRecords(raw)

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        return self._records.next_batch()

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())


def keep_fetched_bytes() -> bool:
    """Have aiokafka's fetcher (every consumer of the process) build :class:`KeptRecords`, the
    same records that keep their bytes, if the kernel reads batches; whether it does now."""
    from aiokafka.consumer import fetcher

    from geofences.index import kernel_function

    if kernel_function("read_records") is None:
        return False
    setattr(fetcher, "MemoryRecords", KeptRecords)  # noqa: B010 (a module's name, replaced)
    return True


def columns_supported(consumer: Any) -> bool:
    """Whether this aiokafka has the internals :func:`getmany_columns` reads (after ``start``):
    the fetcher's and the consumer's attributes, and :func:`take` over a small batch built by
    aiokafka giving what aiokafka's own reader gives (natively, and through aiokafka's records).
    Then :func:`keep_fetched_bytes`, for the kernel to read the batches."""
    from aiokafka.consumer import fetcher
    from aiokafka.record import memory_records

    f = getattr(consumer, "_fetcher", None)
    needed = (
        (f, ("_records", "_subscriptions", "_notify", "_wait_consume_future", "_create_fetch_waiter", "_closed")),
        (consumer, ("_coordinator", "_subscription", "_closed")),
        (fetcher.FetchResult, ("check_assignment", "_update_position", "has_more", "getall")),
        (fetcher, ("READ_UNCOMMITTED", "PartitionRecords")),
    )
    supported = f is not None and all(hasattr(obj, name) for obj, names in needed for name in names)
    if not (supported and hasattr(fetcher, "MemoryRecords") and _reads_alike(native=False)):
        return False
    if keep_fetched_bytes() and not _reads_alike(native=True):  # the kernel reads otherwise: aiokafka does
        setattr(fetcher, "MemoryRecords", memory_records.MemoryRecords)  # noqa: B010
    return True


def _reads_alike(native: bool) -> bool:
    """:func:`take` (``native``: the kernel reading the bytes) and aiokafka's ``PartitionRecords``
    read the same records from one batch."""
    from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import TopicPartition

    try:
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1,
            batch_size=1 << 16,
        )  # fmt: skip
        for i, key in enumerate((b"a", None, b"c")):
            builder.append(i, timestamp=1_000 + i, key=key, value=b"v%d" % i, headers=[])
        raw = bytes(builder.build())
        tp = TopicPartition("self-test", 0)
        theirs = list(PartitionRecords(tp, MemoryRecords(raw), [], 1, None, None, True, READ_UNCOMMITTED))
        source = KeptRecords(raw) if native else MemoryRecords(raw)
        records = PartitionRecords(tp, source, [], 1, None, None, True, READ_UNCOMMITTED)
        first, _ = take(records, tp, 1)
        rest, done = take(records, tp, 10)
        ours = (first.keys + rest.keys, first.values + rest.values, first.offsets + rest.offsets, first.first_ts)
        return done and ours == ([m.key for m in theirs], [m.value for m in theirs], [m.offset for m in theirs],
                                 theirs[0].timestamp)  # fmt: skip
    except Exception:  # another aiokafka: getmany reads it
        return False


async def poll_columns(consumer: Any, columns: bool, timeout_ms: int, max_records: int) -> dict[Any, Columns]:
    """The next poll, each partition's records as columns: :func:`getmany_columns` where
    ``columns`` (:func:`columns_supported` said so), else ``getmany`` read by :func:`columns_of`."""
    if columns:
        return await getmany_columns(consumer, timeout_ms, max_records)
    fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    return {tp: columns_of(msgs) for tp, msgs in fetched.items()}


async def getmany_columns(consumer: Any, timeout_ms: int, max_records: int) -> dict[Any, Columns]:
    """``consumer.getmany(timeout_ms=..., max_records=...)``, each partition's records as columns."""
    from aiokafka.errors import ConsumerStoppedError

    if consumer._closed:
        raise ConsumerStoppedError()
    consumer._coordinator.check_errors()
    with consumer._subscription.fetch_context():
        return await _fetched(consumer._fetcher, timeout_ms / 1000, max_records)


async def _fetched(fetcher: Any, timeout: float, max_records: int) -> dict[Any, Columns]:
    """``Fetcher.fetched_records`` (aiokafka 0.14) for all assigned partitions, read by :func:`take`."""
    from aiokafka.consumer.fetcher import FetchResult

    while True:
        if fetcher._subscriptions.reassignment_in_progress:
            await fetcher._subscriptions.wait_for_assignment()
        start = time.monotonic()
        drained: dict[Any, Columns] = {}
        for tp in list(fetcher._records.keys()):
            res = fetcher._records[tp]
            if type(res) is FetchResult:
                cols = _take_result(res, tp, max_records)
                if not res.has_more():
                    del fetcher._records[tp]  # all read: the fetcher asks for more
                    fetcher._notify(fetcher._wait_consume_future)
                if not cols:
                    continue
                drained[tp] = cols
                max_records -= len(cols)
                if max_records <= 0:
                    break
            elif drained:
                return drained  # the error is raised at the next call
            else:
                del fetcher._records[tp]
                fetcher._notify(fetcher._wait_consume_future)
                res.check_raise()
        if drained or not timeout:
            return drained
        waiter = fetcher._create_fetch_waiter()
        done, pending = await asyncio.wait([waiter], timeout=timeout)
        if not done or fetcher._closed:
            for fut in pending:
                fut.cancel()
            return {}
        if waiter.done():
            waiter.result()  # authorization errors
        timeout = max(0.0, timeout - (time.monotonic() - start))


def _take_result(res: Any, tp: Any, max_records: int) -> Columns:
    """``FetchResult.getall`` as columns: nothing if the partition was paused, moved or revoked."""
    from aiokafka.consumer.fetcher import READ_UNCOMMITTED

    if not res.check_assignment(tp) or not res.has_more():
        return Columns([], [], [], 0)
    records = res._partition_records
    if records._isolation_level != READ_UNCOMMITTED:
        return columns_of(res.getall(max_records))
    cols, exhausted = take(records, tp, max_records)
    res._update_position()
    if exhausted:
        res._partition_records = None
    return cols


def take(records: Any, tp: Any, max_records: int) -> tuple[Columns, bool]:
    """Up to ``max_records`` of a partition's fetched records (aiokafka's ``PartitionRecords``),
    from where the last call stopped; (columns, all read). Moves ``next_fetch_offset`` as
    ``PartitionRecords`` does: past each record read, past a control batch, and to a batch's
    end once it is read (compaction may have left its last offsets empty)."""
    from aiokafka.errors import CorruptRecordException

    # aiokafka's own reader of these records, never started here: dropped, as it would drop it
    # once read, or it keeps them (up to a fetch's bytes) in a cycle for the collector to find
    records._records_iterator = None
    native = _native_take(records, tp, max_records)
    if native is not None:
        return native
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    offsets: list[int] = []
    key, value, offset = keys.append, values.append, offsets.append
    first_ts: int | None = None
    source = records._records
    setattr(records, AT, -1)  # read here from now on
    batch = getattr(records, BATCH, None)
    n = 0
    while n < max_records:
        if batch is None:
            if not source.has_next():
                setattr(records, BATCH, None)
                return Columns(keys, values, offsets, first_ts or 0), True
            batch = source.next_batch()
            if records._check_crcs and not batch.validate_crc():
                raise CorruptRecordException(f"Invalid CRC - {tp}")
            if batch.is_control_batch:
                records.next_fetch_offset = batch.next_offset
                batch = None
                continue
            iter(batch)  # once per batch (it decompresses; a second call is refused)
        after = records.next_fetch_offset
        for record in iter(batch.__next__, None):  # a later call goes on where this one stopped
            at = record.offset
            if at < after:
                continue  # before the fetch offset (a compressed batch is read whole)
            if first_ts is None:
                first_ts = record.timestamp
            key(record.key)
            value(record.value)
            offset(at)
            after = at + 1
            n += 1
            if n >= max_records:
                break
        else:
            records.next_fetch_offset = batch.next_offset
            batch = None
            continue
        records.next_fetch_offset = after
    setattr(records, BATCH, batch)
    return Columns(keys, values, offsets, first_ts or 0), False


def _native_take(records: Any, tp: Any, max_records: int) -> tuple[Columns, bool] | None:
    """:func:`take` by the kernel, over the bytes :class:`KeptRecords` kept; None where
    aiokafka reads them (not kept, compressed or an older format, or begun by aiokafka)."""
    from aiokafka.errors import CorruptRecordException

    from geofences.index import kernel_function

    raw = getattr(records._records, "raw", None)
    at = getattr(records, AT, None)
    if raw is None or (at is not None and at < 0):
        return None
    read = kernel_function("read_records")
    if at is None:
        if read is None or not kernel_function("plain_batches")(raw):
            setattr(records, AT, -1)
            return None
        at = 0
    try:
        keys, values, offsets, first_ts, at, records.next_fetch_offset, done = read(
            raw, at, records.next_fetch_offset, max_records, records._check_crcs
        )
    except ValueError as exc:
        raise CorruptRecordException(
            f"{'Invalid CRC' if 'CRC' in str(exc) else 'Corrupt records'} - {tp}: {exc}"
        ) from exc
    setattr(records, AT, at)
    return Columns(keys, values, offsets, first_ts or 0), done
