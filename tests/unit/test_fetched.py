"""Fetched records read as columns give what aiokafka's own PartitionRecords gives, record for
record and position for position (batches built by aiokafka's builder, as a broker returns them),
read through aiokafka's record objects or, from the bytes the fetcher kept, by the kernel."""

from __future__ import annotations

import gc
import struct
import weakref
from typing import Any

import pytest
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

import streams.fetched as fetched_module
from geofences.index import kernel_function
from streams.fetched import AT, Columns, KeptRecords, columns_of, columns_supported, keep_fetched_bytes, take

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


NATIVE = kernel_function("read_records") is not None
READERS = [False, pytest.param(True, marks=pytest.mark.skipif(not NATIVE, reason="kernel not built"))]


def fetched(raw: bytes, fetch_offset: int, crcs: bool = True, kept: bool = False) -> PartitionRecords:
    """A partition's fetched records; ``kept``: its bytes kept (KeptRecords) for the kernel to read."""
    source = KeptRecords(raw) if kept else MemoryRecords(raw)
    return PartitionRecords(TP, source, [], fetch_offset, None, None, crcs, READ_UNCOMMITTED)


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


def by_columns(raw: bytes, fetch_offset: int, sizes: list[int], kept: bool = False) -> list[tuple[Columns, int]]:
    records, out, done = fetched(raw, fetch_offset, kept=kept), [], False
    for size in sizes:
        cols, done = take(records, TP, size) if not done else (Columns([], [], [], 0), True)
        out.append((cols, records.next_fetch_offset))
    return out


SIZES = [1, 7, 3, 50, 2, 1000, 5]
LOG = batch(100, list(range(10))) + batch(110, [0, 2, 5], none_key_at=2) + batch(116, list(range(30)), GZIP)
PLAIN = batch(100, list(range(10))) + batch(110, [0, 2, 5], none_key_at=2) + batch(116, list(range(30)))


@pytest.mark.parametrize("kept", READERS)
@pytest.mark.parametrize("log", [LOG, PLAIN, PLAIN[:-7]], ids=["gzip", "plain", "truncated"])
@pytest.mark.parametrize("fetch_offset", [100, 104, 111, 113, 130])
def test_takes_match_aiokafka_record_for_record_and_offset_for_offset(
    fetch_offset: int, log: bytes, kept: bool
) -> None:
    assert by_columns(log, fetch_offset, SIZES, kept) == by_aiokafka(log, fetch_offset, SIZES)


@pytest.mark.skipif(not NATIVE, reason="kernel not built")
@pytest.mark.parametrize(("log", "native"), [(PLAIN, True), (LOG, False)], ids=["plain", "gzip"])
def test_the_kernel_reads_kept_bytes_unless_a_batch_is_compressed(log: bytes, native: bool) -> None:
    records = fetched(log, 0, kept=True)
    take(records, TP, 5)
    assert (getattr(records, AT) >= 0) == native


@pytest.mark.skipif(not NATIVE, reason="kernel not built")
def test_random_logs_read_alike() -> None:
    """Batches of random sizes, gaps and null keys, a random fetch offset and random takes."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    batches = st.lists(
        st.tuples(st.lists(st.integers(0, 40), min_size=1, max_size=12, unique=True), st.integers(-1, 12)),
        min_size=1, max_size=5,
    )  # fmt: skip

    @settings(max_examples=150, deadline=None)
    @given(batches, st.integers(0, 200), st.lists(st.integers(1, 20), min_size=1, max_size=8), st.integers(0, 30))
    def check(spec: list[tuple[list[int], int]], fetch_at: int, sizes: list[int], cut: int) -> None:
        raw, base = b"", 0
        for deltas, none_at in spec:
            deltas = sorted(deltas)
            raw += batch(base, deltas, none_key_at=none_at)
            base += deltas[-1] + 1
        raw = raw[: len(raw) - cut]  # a fetch may end within its last batch
        assert by_columns(raw, fetch_at, sizes, kept=True) == by_aiokafka(raw, fetch_at, sizes)

    check()


@pytest.mark.parametrize("kept", READERS)
def test_columns_hold_keys_values_offsets_and_the_first_time(kept: bool) -> None:
    cols, done = take(fetched(PLAIN if kept else LOG, 0, kept=kept), TP, 10_000)
    assert done
    assert cols.offsets == [*range(100, 110), 110, 112, 115, *range(116, 146)]
    assert cols.keys[11] is None and cols.keys[0] == b"dev-100" and cols.values[12] == b'{"n":115}'
    assert cols.first_ts == 1_764_000_000_100 and len(cols) == 43


@pytest.mark.parametrize("kept", READERS)
def test_a_gap_at_a_batchs_end_moves_the_offset_past_it(kept: bool) -> None:
    records = fetched(batch(0, [0, 1, 7]), 0, kept=kept)  # the batch ends at offset 7; 2..6 compacted away
    cols, done = take(records, TP, 2)
    assert (cols.offsets, done, records.next_fetch_offset) == ([0, 1], False, 2)
    cols, done = take(records, TP, 2)
    assert (cols.offsets, records.next_fetch_offset) == ([7], 8)
    cols, done = take(records, TP, 2)
    assert (cols.offsets, done) == ([], True)


@pytest.mark.parametrize("kept", READERS)
def test_a_corrupt_batch_is_refused_with_its_partition(kept: bool) -> None:
    raw = bytearray(batch(0, [0, 1, 2]))
    raw[-3] ^= 0xFF  # inside the last record's value, under the CRC
    with pytest.raises(CorruptRecordException, match=r"Invalid CRC.*pings.*3"):
        take(fetched(bytes(raw), 0, kept=kept), TP, 100)
    assert len(take(fetched(bytes(raw), 0, crcs=False, kept=kept), TP, 100)[0]) == 3  # unchecked when asked


@pytest.mark.skipif(not NATIVE, reason="kernel not built")
def test_a_record_running_past_its_batch_is_named() -> None:
    raw = bytearray(batch(0, [0, 1, 2]))
    raw[-1] = 0x02  # the last record's header count: one header, past the batch's end
    with pytest.raises(CorruptRecordException, match=r"pings.*3.*past the batch"):
        take(fetched(bytes(raw), 0, crcs=False, kept=True), TP, 100)


@pytest.mark.parametrize("kept", READERS)
def test_records_read_are_freed_without_the_cycle_collector(kept: bool) -> None:
    records = fetched(PLAIN if kept else LOG, 0, kept=kept)
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
    assert fetched_module._reads_alike(native=False)
    assert fetched_module._reads_alike(native=True)
    wrong = lambda records, tp, n: (Columns([], [], [], 0), True)  # noqa: E731
    monkeypatch.setattr(fetched_module, "take", wrong)
    assert not fetched_module._reads_alike(native=False)
    assert not fetched_module._reads_alike(native=True)


@pytest.mark.skipif(not NATIVE, reason="kernel not built")
def test_the_fetcher_keeps_its_bytes_once_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiokafka_fetcher, "MemoryRecords", MemoryRecords)  # put back after the test
    assert keep_fetched_bytes()
    kept = aiokafka_fetcher.MemoryRecords(PLAIN)
    assert isinstance(kept, KeptRecords) and kept.raw == PLAIN
    assert kept.size_in_bytes() == len(PLAIN) and kept.has_next() and kept.next_batch().base_offset == 100


def test_a_consumer_not_started_is_read_by_getmany() -> None:
    assert not columns_supported(object())
