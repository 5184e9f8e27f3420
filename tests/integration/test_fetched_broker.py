"""Pings read as columns on the real broker: the same records, offsets and positions as getmany."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer import fetcher
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from geofences.index import kernel_function
from streams.fetched import KeptRecords, columns_of, columns_supported, getmany_columns
from streams.local_kafka import LocalKafka

pytestmark = pytest.mark.integration
PARTITIONS = 3
RECORDS = 3_000


def produce(bootstrap: str, topic: str) -> None:
    """Half the records in plain batches, half gzip-compressed; some without a key."""
    for compression, part in ((None, range(0, RECORDS // 2)), ("gzip", range(RECORDS // 2, RECORDS))):
        producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression, linger_ms=5)
        for i in part:
            key = None if i % 97 == 0 else f"dev-{i % 50}".encode()
            producer.send(topic, key=key, value=b'{"n":%d}' % i, partition=i % PARTITIONS)
        producer.flush()
        producer.close()


async def read(bootstrap: str, topic: str, columns: bool) -> tuple[dict[int, Any], dict[int, int], bool]:
    """Every record of ``topic`` (per partition: keys, values, offsets) in polls of 37, the
    consumer's positions after, and whether the columns path was supported."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4096)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    supported = columns_supported(consumer)
    got: dict[int, tuple[list[Any], list[Any], list[int]]] = {p: ([], [], []) for p in range(PARTITIONS)}
    try:
        for _ in range(2_000):
            if sum(len(offsets) for _, _, offsets in got.values()) >= RECORDS:
                break
            if columns:
                polled = await getmany_columns(consumer, 200, 37)
            else:
                polled = {
                    tp: columns_of(m) for tp, m in (await consumer.getmany(timeout_ms=200, max_records=37)).items()
                }
            assert sum(len(c) for c in polled.values()) <= 37
            for tp, cols in polled.items():
                keys, values, offsets = got[tp.partition]
                keys += cols.keys
                values += cols.values
                offsets += cols.offsets
        positions = {tp.partition: await consumer.position(tp) for tp in tps}
    finally:
        await consumer.stop()
    return got, positions, supported


def test_columns_read_what_getmany_reads_through_small_fetches(kafka_broker: LocalKafka, unique: str) -> None:
    topic = f"columns-{unique}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        admin.close()
    produce(kafka_broker.bootstrap, topic)
    ours, our_positions, supported = asyncio.run(read(kafka_broker.bootstrap, topic, columns=True))
    theirs, their_positions, _ = asyncio.run(read(kafka_broker.bootstrap, topic, columns=False))
    assert supported, "the pinned aiokafka's fetcher is read as columns"
    # and, the kernel built, its plain batches by the kernel (the gzip ones by aiokafka)
    assert (fetcher.MemoryRecords is KeptRecords) == (kernel_function("read_records") is not None)
    assert ours == theirs
    assert sum(len(offsets) for _, _, offsets in ours.values()) == RECORDS
    assert our_positions == their_positions == {p: len(ours[p][2]) for p in range(PARTITIONS)}
    assert any(k is None for keys, _, _ in ours.values() for k in keys)
