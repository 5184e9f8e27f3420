"""kill -9 a worker mid-run and restart it: every ping still reaches its decision, and no
notification id appears twice (the idempotent budget step; see streams/emitted.py).

The decision step writes outputs, then state, then commits (streams/agents/decide.py), so a
kill repeats decisions at most (at-least-once); notification ids are stable and the budget step
never writes one twice. The phones keep sending, paced, while the worker dies and restarts."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec

from decisions.records import Decision
from streams.phones import SimPing
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.processes import WorkerProcess
from tests.integration.test_decision_stream import decision_key, read_topic, replayed

pytestmark = pytest.mark.integration


def wait_for_records(s: Settings, topic: str, n: int, timeout_s: float) -> int:
    """Poll the topic's end offsets until at least ``n`` records are on it; return how many."""
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in range(s.topic_partitions)]
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline:
            total = sum(
                o.offset for o in admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in parts}).values()
            )
            if total >= n:
                break
            time.sleep(0.05)
        return total
    finally:
        admin.close()


PACE_PER_S = 10_000


def send_paced(producer: KafkaProducer, topic: str, pings: list[SimPing], per_s: float) -> None:
    """Send the pings in time order at about ``per_s`` a second (slices every 50 ms)."""
    step = max(1, int(per_s / 20))
    t0 = time.monotonic()
    for i in range(0, len(pings), step):
        for p in pings[i : i + step]:
            producer.send(topic, key=p.device_id.encode(), value=orjson.dumps(p.body))
        producer.flush()
        time.sleep(max(0.0, t0 + (i + step) / per_s - time.monotonic()))


@pytest.mark.slow
def test_kill_9_mid_run_loses_nothing_and_duplicates_nothing(settings: Settings, tmp_path: Path) -> None:
    s = settings
    ensure_topics(s)
    devices, pings, expected, notified = replayed(s, 3000, seed=23)

    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=10)
    for d in devices:
        producer.send(s.topic_devices, key=d.device_id.encode(), value=d.dumps())
    producer.flush()
    first = WorkerProcess(s, ["-m", "streams.cli", "worker"], tmp_path / "first.log")
    first.start()
    # the phones keep sending, paced (~10 s in all), while the worker is killed and restarted
    feeder = threading.Thread(target=send_paced, args=(producer, s.topic_pings, pings, PACE_PER_S), daemon=True)
    try:
        first.wait_for_log("decide partitions assigned", timeout_s=90)
        feeder.start()
        # kill it once it is well into the work
        done = wait_for_records(s, s.topic_decisions, sum(expected.values()) // 3, timeout_s=90)
        assert 0 < done < sum(expected.values()), "the worker finished before it could be killed"
    finally:
        first.kill9()
    second = WorkerProcess(s, ["-m", "streams.cli", "worker"], tmp_path / "second.log")
    with second:
        feeder.join(timeout=120)
        producer.close()
        got = read_topic(s.kafka_bootstrap, s.topic_decisions, sum(expected.values()), timeout_s=180)
        sent = read_topic(s.kafka_bootstrap, s.topic_notifications, notified, timeout_s=30)
    actual = Counter(decision_key(Decision.loads(v)) for _, v, _, _ in got)
    missing = set(expected) - set(actual)
    on_topic = {k for k, _, _, _ in sent}
    assert set(actual) == set(expected), (
        f"missing {len(missing)}, unexpected {len(set(actual) - set(expected))}; missing by (transition, outcome, "
        f"reason): {Counter(k[4:7] for k in missing)}; their notification ids on the topic: "
        f"{sum(1 for k in missing if k[-1] and k[-1].encode() in on_topic)}; devices: {sorted({k[0] for k in missing})[:5]}"
    )
    ids = Counter(k for k, _, _, _ in sent)
    assert not [i for i, n in ids.items() if n > 1], "a notification id was sent twice"
    want_ids = {key[-1].encode() for key in expected if key[5] == "notify"}
    assert set(ids) == want_ids and len(ids) == notified
    repeats = sum((actual - expected).values())
    print(f"decisions: {sum(expected.values())} expected, {repeats} repeated after kill -9 (at-least-once)")
