"""Keyed batches land where the producer's own partitioner would put each record."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.index import load_kernel
from streams.produce import KeyPartitions, aiokafka_batches, encoder_for, kernel_batches, partition_of


def test_kept_partitions_follow_the_topics_partition_count() -> None:
    keys = [f"campaign-{i}".encode() for i in range(200)]
    known = KeyPartitions()
    for partitions in (12, 12, 24, 12):  # a topic grown and, in a test cluster, recreated smaller
        everything = list(range(partitions))
        assert [known.partition(k, partitions) for k in keys] == [
            DefaultPartitioner()(k, everything, everything) for k in keys
        ]
        assert known.partitions == partitions and len(known.of) == len(keys)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=50), st.integers(1, 1000))
def test_the_kernels_partitions_are_the_default_partitioners(keys: list[bytes], partitions: int) -> None:
    """murmur2 in the kernel (where built) puts every key where aiokafka's partitioner does."""
    everything = list(range(partitions))
    assert [partition_of(k, partitions) for k in keys] == [
        DefaultPartitioner()(k, everything, everything) for k in keys
    ]


records = st.lists(
    st.tuples(st.one_of(st.none(), st.binary(max_size=40)), st.one_of(st.none(), st.binary(max_size=700))),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    records,
    st.integers(64, 4096),
    st.integers(0, 2**41),
    st.tuples(st.integers(-1, 2**40), st.integers(-1, 300), st.integers(0, 2**31 - 1000)),
)
def test_the_kernels_batches_are_aiokafkas_byte_for_byte(
    rows: list[tuple[bytes | None, bytes | None]], size: int, at: int, state: tuple[int, int, int]
) -> None:
    """Records encoded by the kernel and sent as RecordsBatch: the same batches, split at the
    same records, header, sequence and CRC-32C included, as aiokafka's builder writes."""
    kernel = load_kernel()
    if kernel is None:
        pytest.skip("kernel not built")
    assert kernel_batches(kernel, rows, size, at, state) == aiokafka_batches(rows, size, at, state)


def test_a_record_batch_reads_back_with_aiokafkas_reader() -> None:
    from aiokafka.record.default_records import DefaultRecordBatch

    kernel = load_kernel()
    if kernel is None:
        pytest.skip("kernel not built")
    rows = [(b"dev-1", b"[2,1795395600000,35.6,139.7,{},[],[]]"), (None, b"x"), (b"gone", None)]
    (raw,) = kernel_batches(kernel, rows, 1 << 20, 1_795_395_600_123, (77, 2, 1000))
    batch = DefaultRecordBatch(raw)
    batch.validate_crc()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (77, 2, 1000)
    assert [(r.key, r.value, r.timestamp, r.offset) for r in batch] == [
        (k, v, 1_795_395_600_123, i) for i, (k, v) in enumerate(rows)
    ]


def test_compressed_or_transactional_producers_keep_aiokafkas_builder() -> None:
    class Producer:
        _compression_type = 2  # e.g. snappy: the kernel does not compress
        _txn_manager = None

    class Transactions:
        transactional_id: str | None = "geopush-tx"

    assert encoder_for(Producer()) is None
    Producer._compression_type, Producer._txn_manager = 0, Transactions()  # type: ignore[assignment]
    assert encoder_for(Producer()) is None
    Transactions.transactional_id = None  # idempotent only: its manager has no id
    assert (encoder_for(Producer()) is not None) == (load_kernel() is not None)
