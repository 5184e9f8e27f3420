"""The foundation on the real broker: Metadata, a Faust relay agent exactly once, consumer lag."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from streams.lag import group_lag
from streams.local_kafka import LocalKafka, metadata_ok
from streams.settings import Settings
from tests.integration.processes import WorkerProcess

pytestmark = pytest.mark.integration


def create(bootstrap: str, *names: str, partitions: int = 4) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()


def drain(bootstrap: str, topic: str, want: int, timeout_s: float) -> list[tuple[bytes, bytes, int]]:
    """Read ``topic`` from the start until ``want`` records arrived (and 2 s more) or time runs out."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=1000, isolation_level="read_committed",
    )  # fmt: skip
    got: list[tuple[bytes, bytes, int]] = []
    deadline = time.monotonic() + timeout_s
    settle = None
    try:
        while time.monotonic() < deadline:
            for msg in consumer:
                got.append((msg.key, msg.value, msg.partition))
            if len(got) >= want:
                settle = settle or time.monotonic() + 2.0
                if time.monotonic() > settle:
                    break
    finally:
        consumer.close()
    return got


def test_broker_answers_metadata(kafka_broker: LocalKafka) -> None:
    assert metadata_ok(kafka_broker.bootstrap)


def test_broker_runs_with_kafkas_jvm_options_and_logs_its_pauses(kafka_broker: LocalKafka) -> None:
    """The JVM as Kafka's start script runs it (G1 aiming at 20-ms pauses, not its 200-ms
    default), its collector's pauses in a log beside the broker's."""
    assert kafka_broker.process is not None
    argv = Path(f"/proc/{kafka_broker.process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-XX:MaxGCPauseMillis=20" in argv
    assert b"-XX:+UseG1GC" in argv
    assert "Using G1" in kafka_broker.gc_log_path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_faust_agent_relays_10k_records_exactly_once(
    settings: Settings, unique: str, tmp_path: Path, guarantee: str
) -> None:
    s = settings.model_copy(update={"store": "memory"})
    src, dst = f"relay-in-{unique}", f"relay-out-{unique}"
    create(s.kafka_bootstrap, src, dst)
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5)
    sent = {}
    for i in range(10_000):
        key = f"device-{i % 257}".encode()
        value = f"record-{i}".encode()
        sent[value] = key
        producer.send(src, key=key, value=value)
    producer.flush()
    producer.close()

    worker = WorkerProcess(
        s, ["-m", "tests.integration.relay_worker"], tmp_path / "worker.log",
        RELAY_IN=src, RELAY_OUT=dst, RELAY_GUARANTEE=guarantee,
    )  # fmt: skip
    with worker:
        worker.wait_for_log("relay ready")
        got = drain(s.kafka_bootstrap, dst, 10_000, timeout_s=120)
    counts = Counter(value for _, value, _ in got)
    duplicates = [v for v, c in counts.items() if c > 1]
    assert not duplicates, f"{len(duplicates)} duplicated, e.g. {duplicates[:3]}"
    assert set(counts) == set(sent), f"missing {len(set(sent) - set(counts))} of 10000"
    for key, value, _ in got:
        assert sent[value] == key


def test_consumer_lag_is_end_minus_committed(kafka_broker: LocalKafka, unique: str) -> None:
    topic, group = f"lag-{unique}", f"group-{unique}"
    create(kafka_broker.bootstrap, topic, partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for p, n in enumerate([10, 20, 30]):
        for i in range(n):
            producer.send(topic, value=b"x%d" % i, partition=p)
    producer.flush()
    producer.close()

    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=group,
                             enable_auto_commit=False)  # fmt: skip
    consumer.commit({
        TopicPartition(topic, 0): OffsetAndMetadata(4, "", -1),
        TopicPartition(topic, 1): OffsetAndMetadata(20, "", -1),
    })  # fmt: skip
    consumer.close()

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        rows = group_lag(admin, group, topics={topic})
    finally:
        admin.close()
    assert [(r.partition, r.committed, r.end, r.lag) for r in rows] == [
        (0, 4, 10, 6),
        (1, 20, 20, 0),
        (2, None, 30, 30),
    ]


def test_keyed_batches_land_where_single_sends_do(kafka_broker: LocalKafka, unique: str) -> None:
    """The hot path sends keyed records (candidates by campaign, budget decisions by device) in
    batches per partition: each must land on the partition aiokafka's own ``send`` picks for its
    key, in order, so a key's records stay together and in sequence."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from streams.produce import next_offset, send_keyed

    single, batched = f"single-{unique}", f"batched-{unique}"
    create(kafka_broker.bootstrap, single, batched, partitions=6)
    records = [(f"key-{i % 37}".encode(), f"v{i}".encode()) for i in range(500)]

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(single, key=k, value=v) for k, v in records])
            sent = await send_keyed(producer, batched, records)
            assert await next_offset(sent) is not None and sum(x.count for x in sent) == len(records)
        finally:
            await producer.stop()

    asyncio.run(send())
    by_single = {v: p for _, v, p in drain(kafka_broker.bootstrap, single, len(records), 30)}
    got = drain(kafka_broker.bootstrap, batched, len(records), 30)
    assert {v: p for _, v, p in got} == by_single
    for key in {k for k, _ in records}:  # each key's values in the order they were given
        assert [v for k, v, _ in got if k == key] == [v for k, v in records if k == key]
