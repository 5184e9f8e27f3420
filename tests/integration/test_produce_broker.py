"""Records sent as the kernel's batches on the real broker: an idempotent producer's batches
are accepted in sequence and read back as sent, keys, values, nulls and order."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from geofences.index import load_kernel
from streams.local_kafka import LocalKafka
from streams.produce import encoder_for, next_offset, producer_kwargs, send_records

pytestmark = pytest.mark.integration


async def send_and_read(bootstrap: str, topic: str, rows: list[tuple[bytes | None, bytes | None]]) -> list[object]:
    kwargs = {**producer_kwargs(), "max_batch_size": 4096}  # several batches per call
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **kwargs)
    await producer.start()
    try:
        assert (encoder_for(producer) is not None) == (load_kernel() is not None)
        sent = []
        for start in range(0, len(rows), 700):  # calls in a row: sequences go on across them
            sent += await send_records(producer, topic, 1, rows[start : start + 700])
        assert len(sent) > 5 and sum(s.count for s in sent) == len(rows)
        assert await next_offset(sent) == len(rows)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 1)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    got: list[object] = []
    try:
        while len(got) < len(rows):
            for msgs in (await consumer.getmany(tp, timeout_ms=1000)).values():
                got += [(m.key, m.value, m.offset) for m in msgs]
    finally:
        await consumer.stop()
    return got


def test_kernel_batches_are_accepted_in_sequence_and_read_back(kafka_broker: LocalKafka, unique: str) -> None:
    topic = f"batches-{unique}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    rows: list[tuple[bytes | None, bytes | None]] = [
        (None if i % 101 == 0 else b"dev-%d" % (i % 300), None if i % 89 == 0 else b"[2,%d]" % i + b"x" * (i % 200))
        for i in range(3000)
    ]
    got = asyncio.run(send_and_read(kafka_broker.bootstrap, topic, rows))
    assert got == [(k, v, i) for i, (k, v) in enumerate(rows)]
