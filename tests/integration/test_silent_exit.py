"""A device that goes silent inside a fence gets its EXIT from the worker's presence sweep."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from decisions.records import Decision, Device
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.processes import WorkerProcess
from tests.integration.test_decision_stream import START, read_topic

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_silent_device_exits_via_the_sweep(settings: Settings, tmp_path: Path) -> None:
    s = settings.model_copy(update={"presence_timeout_s": 60.0, "presence_sweep_s": 1.0})
    ensure_topics(s)
    t0 = int(START.timestamp() * 1000)
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    for dev in ("quiet", "walker"):
        record = Device(device_id=dev, token=f"tok-{dev}", locale="en", opt_in=True, updated_at=datetime.now(UTC))
        producer.send(s.topic_devices, key=dev.encode(), value=record.dumps())
    producer.flush()
    worker = WorkerProcess(s, ["-m", "streams.cli", "worker"], tmp_path / "worker.log")
    with worker:
        worker.wait_for_log("Ready", timeout_s=90)
        time.sleep(2)
        for k in range(4):  # inside Kanda Jimbocho, then silence
            ping = {"device_id": "quiet", "ts": t0 + k * 15_000, "lat": 35.6959, "lng": 139.7577, "accuracy_m": 8}
            producer.send(s.topic_pings, key=b"quiet", value=orjson.dumps(ping))
        for k in range(20):  # someone else, far away, keeps stream time moving for 5 minutes
            ping = {"device_id": "walker", "ts": t0 + k * 15_000, "lat": 35.80, "lng": 139.90, "accuracy_m": 8}
            producer.send(s.topic_pings, key=b"walker", value=orjson.dumps(ping))
        producer.flush()
        producer.close()
        got = [Decision.loads(v) for _, v, _, _ in read_topic(s.kafka_bootstrap, s.topic_decisions, 1, 60)]
    exits = [d for d in got if d.device_id == "quiet" and d.transition == "exit"]
    assert [(d.store_id, d.campaign_id, d.outcome) for d in exits] == [("tokyo-kanda-018", "book-thanks", "notify")]
    assert exits[0].ts > datetime.fromtimestamp((t0 + 45_000 + 60_000) / 1000, tz=UTC)
