"""The decision stream on the real broker: same decisions as `geopush replay`, bad pings to the DLQ."""

from __future__ import annotations

import base64
import io
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from decisions.engine import Engine
from decisions.records import DeadLetter, Decision, Device
from decisions.replay import replay
from geofences.load import load_catalog
from streams.phones import SimPing, simulate
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.processes import WorkerProcess

pytestmark = pytest.mark.integration
START = datetime.fromisoformat("2026-11-24T12:00:00+09:00")


def read_topic(bootstrap: str, topic: str, want: int, timeout_s: float) -> list[tuple[bytes, bytes, int, int]]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=1000, isolation_level="read_committed",
    )  # fmt: skip
    got: list[tuple[bytes, bytes, int, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(got) < want:
            for m in consumer:
                got.append((m.key, m.value, m.partition, m.offset))
        time.sleep(1.0)
        for m in consumer:
            got.append((m.key, m.value, m.partition, m.offset))
    finally:
        consumer.close()
    return got


def decision_key(d: Decision) -> tuple[object, ...]:
    return (d.device_id, d.ts, d.store_id, d.campaign_id, d.transition, d.outcome, d.reason, d.notification_id)


def replayed(
    s: Settings, phones: int, seed: int
) -> tuple[list[Device], list[SimPing], Counter[tuple[object, ...]], int]:
    """Simulated devices and pings, and what ``geopush replay`` decides for them (and notifies)."""
    catalog = load_catalog([s.catalog_path])
    devices, pings = simulate(catalog, phones, int(START.timestamp() * 1000), seed=seed)
    out = io.BytesIO()
    summary = replay(Engine.for_catalog(catalog), {d.device_id: d for d in devices},
                     (orjson.dumps(p.body) for p in pings), out)  # fmt: skip
    expected = Counter(decision_key(Decision.loads(line)) for line in out.getvalue().splitlines())
    return devices, pings, expected, sum(summary.notified.values())


@pytest.mark.slow
def test_stream_decides_exactly_like_replay_and_dead_letters_bad_pings(settings: Settings, tmp_path: Path) -> None:
    # polls of 97 pings: the producer's record batches are larger, so polls stop part-way through
    # them and the next poll goes on from there (streams.fetched)
    s = settings.model_copy(update={"poll_max_records": 97})
    ensure_topics(s)
    devices, pings, expected, notified = replayed(s, 300, seed=11)
    assert notified > 20 and len(expected) > 100

    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=10)
    for d in devices:
        producer.send(s.topic_devices, key=d.device_id.encode(), value=d.dumps())
    producer.flush()
    worker = WorkerProcess(s, ["-m", "streams.cli", "worker"], tmp_path / "worker.log")
    with worker:
        worker.wait_for_log("Ready", timeout_s=90)
        time.sleep(3)
        for p in pings:
            producer.send(s.topic_pings, key=p.device_id.encode(), value=orjson.dumps(p.body))
        bad = [(b"a", b"not json"), (b"b", b"[1,2]"),
               (b"x", orjson.dumps({"device_id": "x", "ts": 1795395600000, "lat": 91, "lng": 0})),
               (b"y", orjson.dumps({"device_id": "y", "lat": 35.0, "lng": 139.0})), (b"c", b"\xff\xfe")]  # fmt: skip
        for key, raw in bad:
            producer.send(s.topic_pings, key=key, value=raw)
        producer.send(s.topic_pings, key=b"other", value=orjson.dumps(
            {"device_id": "mismatch", "ts": 1795395600000, "lat": 35.0, "lng": 139.0}))  # fmt: skip
        producer.flush()
        producer.close()
        got = read_topic(s.kafka_bootstrap, s.topic_decisions, sum(expected.values()), timeout_s=120)
        dlq = read_topic(s.kafka_bootstrap, s.topic_pings_dlq, len(bad) + 1, timeout_s=30)
        sent = read_topic(s.kafka_bootstrap, s.topic_notifications, notified, timeout_s=30)

    actual = Counter(decision_key(Decision.loads(v)) for _, v, _, _ in got)
    assert actual == expected, f"missing {sum((expected - actual).values())}, extra {sum((actual - expected).values())}"
    ids = [k for k, _, _, _ in sent]
    assert len(ids) == len(set(ids)) == notified
    letters = [DeadLetter.loads(v) for _, v, _, _ in dlq]
    assert sorted(x.reason for x in letters) == sorted(
        ["not_json", "not_object", "lat_out_of_range", "missing_field", "not_json", "key_mismatch"]
    )
    assert all(x.topic == s.topic_pings and x.offset >= 0 and x.partition >= 0 for x in letters)
    everything = read_topic(s.kafka_bootstrap, s.topic_pings, len(pings) + len(bad) + 1, timeout_s=30)
    logged = {(part, offset): value for _, value, part, offset in everything}
    for x in letters:  # each names the place of the very ping it holds
        raw = base64.b64decode(x.payload_b64) if x.payload_b64 is not None else x.payload.encode()
        assert logged[x.partition, x.offset] == raw, x
    assert {x.payload for x in letters} >= {"not json", "[1,2]"}
