"""Fetched records read as columns give what aiokafka's own PartitionRecords gives, record for
record and position for position (batches built by aiokafka's builder, as a broker returns them)."""

from __future__ import annotations

import gc
import struct
import weakref
from typing import Any

import pytest
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

import streams.fetched as fetched_module
from streams.fetched import Columns, columns_of, columns_supported, take

TP = TopicPartition("pings", 3)
GZIP = 1


def batch(base: int, deltas: list[int], compression: int = 0, none_key_at: int = -1) -> bytes:
    """One record batch at ``base`` with records at ``base + delta`` (gaps: compacted away)."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=compression, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for d in deltas:
        key = None if d == none_key_at else f"dev-{base + d}".encode()
        builder.append(d, timestamp=1_764_000_000_000 + base + d, key=key, value=b'{"n":%d}' % (base + d), headers=[])
    return struct.pack(">q", base) + bytes(builder.build())[8:]


def fetched(raw: bytes, fetch_offset: int, crcs: bool = True) -> PartitionRecords:
    return PartitionRecords(TP, MemoryRecords(raw), [], fetch_offset, None, None, crcs, READ_UNCOMMITTED)


def by_aiokafka(raw: bytes, fetch_offset: int, sizes: list[int]) -> list[tuple[Columns, int]]:
    """aiokafka's own records in takes of ``sizes``, with its next fetch offset after each."""
    records, out, done = fetched(raw, fetch_offset), [], False
    for size in sizes:
        got: list[Any] = []
        if not done:
            for m in records:  # as FetchResult.getall reads it
                got.append(m)
                if len(got) >= size:
                    break
            else:
                done = True
        out.append((columns_of(got), records.next_fetch_offset))
    return out


def by_columns(raw: bytes, fetch_offset: int, sizes: list[int]) -> list[tuple[Columns, int]]:
    records, out, done = fetched(raw, fetch_offset), [], False
    for size in sizes:
        cols, done = take(records, TP, size) if not done else (Columns([], [], [], 0), True)
        out.append((cols, records.next_fetch_offset))
    return out


SIZES = [1, 7, 3, 50, 2, 1000, 5]
LOG = batch(100, list(range(10))) + batch(110, [0, 2, 5], none_key_at=2) + batch(116, list(range(30)), GZIP)


@pytest.mark.parametrize("fetch_offset", [100, 104, 111, 113, 130])
def test_takes_match_aiokafka_record_for_record_and_offset_for_offset(fetch_offset: int) -> None:
    assert by_columns(LOG, fetch_offset, SIZES) == by_aiokafka(LOG, fetch_offset, SIZES)


def test_columns_hold_keys_values_offsets_and_the_first_time() -> None:
    cols, done = take(fetched(LOG, 0), TP, 10_000)
    assert done
    assert cols.offsets == [*range(100, 110), 110, 112, 115, *range(116, 146)]
    assert cols.keys[11] is None and cols.keys[0] == b"dev-100" and cols.values[12] == b'{"n":115}'
    assert cols.first_ts == 1_764_000_000_100 and len(cols) == 43


def test_a_gap_at_a_batchs_end_moves_the_offset_past_it() -> None:
    records = fetched(batch(0, [0, 1, 7]), 0)  # the batch ends at offset 7; 2..6 compacted away
    cols, done = take(records, TP, 2)
    assert (cols.offsets, done, records.next_fetch_offset) == ([0, 1], False, 2)
    cols, done = take(records, TP, 2)
    assert (cols.offsets, records.next_fetch_offset) == ([7], 8)
    cols, done = take(records, TP, 2)
    assert (cols.offsets, done) == ([], True)


def test_a_corrupt_batch_is_refused_with_its_partition() -> None:
    raw = bytearray(batch(0, [0, 1, 2]))
    raw[-3] ^= 0xFF  # inside the last record's value, under the CRC
    with pytest.raises(CorruptRecordException, match=r"Invalid CRC.*pings.*3"):
        take(fetched(bytes(raw), 0), TP, 100)
    assert len(take(fetched(bytes(raw), 0, crcs=False), TP, 100)[0]) == 3  # unchecked when asked


def test_records_read_are_freed_without_the_cycle_collector() -> None:
    records = fetched(LOG, 0)
    take(records, TP, 5)
    take(records, TP, 10_000)
    gone = weakref.ref(records)
    gc.disable()
    try:
        del records
        assert gone() is None, "a reference cycle keeps a fetch's records until a collection"
    finally:
        gc.enable()


def test_the_self_check_passes_on_this_aiokafka_and_fails_on_a_reader_that_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fetched_module._reads_alike()
    wrong = lambda records, tp, n: (Columns([], [], [], 0), True)  # noqa: E731
    monkeypatch.setattr(fetched_module, "take", wrong)
    assert not fetched_module._reads_alike()


def test_a_consumer_not_started_is_read_by_getmany() -> None:
    assert not columns_supported(object())
