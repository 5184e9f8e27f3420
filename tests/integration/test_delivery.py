"""Delivery on the real broker through the real firebase-admin client and the project's FCM emulator.

A worker process (the full pipeline, delivery on) reads ``notifications`` and writes
``deliveries``; the emulator runs in this test process and records what it accepted."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer

from decisions.records import Delivery, Device, Notification
from streams.fcm_emulator import EmulatorThread, RunningEmulator
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.processes import WorkerProcess
from tests.integration.test_crash import wait_for_records

pytestmark = pytest.mark.integration
TEXT = {"ja": ("{n}店へようこそ", "本日10%オフ・{n}"), "en": ("Welcome to shop {n}", "10% off today at {n}")}


@pytest.fixture
def emulator(tmp_path: Path, settings: Settings) -> Iterator[RunningEmulator]:
    thread = EmulatorThread(settings.fcm_project_id, tmp_path / "fcm" / "service-account.json")
    running = thread.start()
    try:
        yield running
    finally:
        thread.stop()


@pytest.fixture
def dsettings(settings: Settings, emulator: RunningEmulator) -> Settings:
    """Settings with delivery on, pointed at the emulator, with short backoffs for the test's pace."""
    s = settings.model_copy(update={
        "deliver": True, "fcm_credentials": emulator.credentials, "fcm_endpoint": emulator.base_url,
        "fcm_backoff_base_s": 0.2, "fcm_backoff_max_s": 2.0,
    })  # fmt: skip
    ensure_topics(s)
    return s


def notification(i: int, token: str, locale: str = "ja", valid_s: float = 3600) -> Notification:
    title, body = TEXT[locale]
    now = datetime.now(UTC)
    return Notification(
        notification_id=f"{i:064x}", device_id=f"dev-{i}", campaign_id="lunch", store_id=f"s{i % 7}", ts=now,
        locale=locale, title=title.format(n=i), body=body.format(n=i), deeplink=f"geopush://offer/lunch/{i}",
        token=token, expires_at=now + timedelta(seconds=valid_s),
    )  # fmt: skip


def produce(s: Settings, notes: list[Notification], devices: Sequence[Device] = ()) -> None:
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=5)
    for d in devices:
        producer.send(s.topic_devices, key=d.device_id.encode(), value=d.dumps())
    for n in notes:
        producer.send(s.topic_notifications, key=n.notification_id.encode(), value=n.dumps())
    producer.flush()
    producer.close()


def deliveries(s: Settings, want: int, timeout_s: float) -> list[tuple[Delivery, int]]:
    """Delivery records (with the broker's append time, ms) until ``want`` distinct ids or the timeout."""
    consumer = KafkaConsumer(s.topic_deliveries, bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=500)  # fmt: skip
    got: list[tuple[Delivery, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len({d.notification_id for d, _ in got}) < want:
            got.extend((Delivery.loads(m.value), m.timestamp) for m in consumer)
        time.sleep(1.0)
        got.extend((Delivery.loads(m.value), m.timestamp) for m in consumer)
    finally:
        consumer.close()
    return got


def recorded(emulator: RunningEmulator) -> list[dict[str, Any]]:
    return list(httpx.get(f"{emulator.base_url}/emulator/messages", timeout=30).json())


def fault(emulator: RunningEmulator, **rule: Any) -> None:
    httpx.post(f"{emulator.base_url}/emulator/faults", json=rule, timeout=10).raise_for_status()


def worker(s: Settings, log: Path) -> WorkerProcess:
    return WorkerProcess(s, ["-m", "streams.cli", "worker"], log)


def test_notifications_arrive_with_token_text_collapse_key_and_ttl(
    dsettings: Settings, emulator: RunningEmulator, tmp_path: Path
) -> None:
    s = dsettings
    notes = [notification(i, f"tok-{i}", "ja" if i % 3 else "en", valid_s=600 + 10 * i) for i in range(240)]
    notes.append(notes[5])  # a repeated record is delivered once
    produce(s, notes)
    with worker(s, tmp_path / "worker.log"):
        got = deliveries(s, 240, timeout_s=120)
    results = {d.notification_id: d for d, _ in got}
    assert len(results) == 240 and len(got) == 240
    assert Counter(d.result for d in results.values()) == {"sent": 240}
    by_target = {m["target"]: m for m in recorded(emulator)}
    assert len(by_target) == 240 and len(recorded(emulator)) == 240
    for n in notes[:240]:
        m = by_target[n.token or ""]
        msg = m["message"]
        assert results[n.notification_id].message_name == m["name"]
        assert msg["notification"] == {"title": n.title, "body": n.body}
        assert msg["data"]["notification_id"] == n.notification_id and msg["data"]["deeplink"] == n.deeplink
        assert msg["android"]["collapse_key"] == n.notification_id == msg["apns"]["headers"]["apns-collapse-id"]
        assert msg["android"]["priority"] == "high" and msg["apns"]["headers"]["apns-priority"] == "10"
        left = (n.expires_at - datetime.fromisoformat(m["received_at"])).total_seconds()
        assert abs(int(msg["android"]["ttl"].rstrip("s")) - left) <= 2, (msg["android"]["ttl"], left)
        assert msg["apns"]["headers"]["apns-expiration"] == str(int(n.expires_at.timestamp()))


def test_each_injected_failure_leads_to_its_documented_outcome(
    dsettings: Settings, emulator: RunningEmulator, tmp_path: Path
) -> None:
    s = dsettings
    fault(emulator, error="UNREGISTERED", target="dead")
    fault(emulator, error="INVALID_ARGUMENT", target="bad")
    fault(emulator, error="SENDER_ID_MISMATCH", target="other-sender")
    fault(emulator, error="UNAVAILABLE", target="flaky", times=2)
    fault(emulator, error="INTERNAL", target="hiccup", times=1)
    fault(emulator, error="QUOTA_EXCEEDED", target="busy", times=1, retry_after_s=2)
    fault(emulator, error="UNAVAILABLE", target="down")  # until its offer runs out
    cases = {"dead": "invalid_token", "bad": "failed", "other-sender": "failed", "flaky": "sent", "hiccup": "sent",
             "busy": "sent", "down": "expired", "fine": "sent"}  # fmt: skip
    notes = [notification(i, token, valid_s=8 if token == "down" else 3600) for i, token in enumerate(cases)]
    dead_device = Device(device_id=notes[0].device_id, token="dead", opt_in=True, updated_at=datetime.now(UTC))
    produce(s, notes, [dead_device])
    started = time.monotonic()
    with worker(s, tmp_path / "worker.log"):
        got = deliveries(s, len(cases), timeout_s=120)
    by_token = {n.token: n.notification_id for n in notes}
    results = {d.notification_id: d for d, _ in got}
    assert {token: results[by_token[token]].result for token in cases} == cases
    assert results[by_token["dead"]].error_code == "UNREGISTERED"
    assert results[by_token["bad"]].error_code == "INVALID_ARGUMENT"
    assert results[by_token["flaky"]].attempts == 3 and results[by_token["hiccup"]].attempts == 2
    assert results[by_token["down"]].attempts > 2 and results[by_token["down"]].error_code == "UNAVAILABLE"
    assert time.monotonic() - started > 2  # the 429 paused the sender for its Retry-After
    stats = httpx.get(f"{emulator.base_url}/emulator/stats").json()
    assert stats["INVALID_ARGUMENT"] == 1 and stats["UNREGISTERED"] == 1  # never retried
    # the dead token's device is tombstoned: a compacted-topic delete
    consumer = KafkaConsumer(s.topic_devices, bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=2000)  # fmt: skip
    history = [(m.key.decode(), m.value) for m in consumer if m.key.decode() == dead_device.device_id]
    consumer.close()
    assert history[-1] == (dead_device.device_id, None) and len(history) == 2


def test_an_outage_delays_but_loses_nothing(dsettings: Settings, emulator: RunningEmulator, tmp_path: Path) -> None:
    s = dsettings
    fault(emulator, error="UNAVAILABLE", for_s=8)
    notes = [notification(i, f"tok-{i}") for i in range(200)]
    started = time.monotonic()
    produce(s, notes)
    with worker(s, tmp_path / "worker.log"):
        got = deliveries(s, 200, timeout_s=120)
    results = {d.notification_id: d for d, _ in got}
    assert Counter(d.result for d in results.values()) == {"sent": 200}
    assert time.monotonic() - started >= 8
    assert max(d.attempts for d in results.values()) > 1
    assert {m["collapse_key"] for m in recorded(emulator)} == {n.notification_id for n in notes}


@pytest.mark.slow
def test_kill_9_mid_delivery_delivers_everything_and_never_resends_a_recorded_success(
    dsettings: Settings, emulator: RunningEmulator, tmp_path: Path
) -> None:
    s = dsettings.model_copy(update={"fcm_rate_per_min": 24_000})  # 400/s, so the kill lands mid-delivery
    notes = [notification(i, f"tok-{i}", "en" if i % 2 else "ja") for i in range(3000)]
    produce(s, notes)
    first = worker(s, tmp_path / "first.log").start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and httpx.get(f"{emulator.base_url}/emulator/stats").json()["accepted"] < 600:
            time.sleep(0.1)
        assert wait_for_records(s, s.topic_deliveries, 1, timeout_s=30) < 3000, "finished before the kill"
    finally:
        first.kill9()
    with worker(s, tmp_path / "second.log"):
        got = deliveries(s, 3000, timeout_s=180)
    first_success: dict[str, int] = {}
    for d, appended_ms in got:
        if d.result == "sent":
            first_success[d.notification_id] = min(appended_ms, first_success.get(d.notification_id, appended_ms))
    assert len(first_success) == 3000, f"{3000 - len(first_success)} notifications never delivered"
    sends: dict[str, list[datetime]] = defaultdict(list)
    for m in recorded(emulator):
        assert m["collapse_key"] == m["message"]["data"]["notification_id"]  # a resend replaces, never stacks
        sends[m["collapse_key"]].append(datetime.fromisoformat(m["received_at"]))
    assert set(sends) == {n.notification_id for n in notes}
    late = [nid for nid, at in sends.items() if any(t.timestamp() * 1000 > first_success[nid] + 5 for t in at)]
    assert not late, f"{len(late)} notifications were sent again after their success was recorded"
    resent = sum(len(at) - 1 for at in sends.values())
    print(f"kill -9 mid-delivery: 3000 delivered, {resent} resent in the unrecorded window (same collapse key)")
