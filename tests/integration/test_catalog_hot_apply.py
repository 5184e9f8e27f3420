"""Hot apply on the real broker: a running worker takes a new catalog without restart; a bad
catalog is never published; a published catalog the worker cannot build leaves the old one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from decisions.records import Decision, Device
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import REPO, settings_env
from tests.integration.processes import WorkerProcess
from tests.integration.test_decision_stream import read_topic

pytestmark = pytest.mark.integration
NEW_STORE = """
  - id: osaka-umeda-900
    name: Umeda
    timezone: Asia/Tokyo
    tags: [cafe, flagship]
    geofence:
      circle: {lat: 34.7025, lng: 135.4959, radius_m: 150}
"""


def cli(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=REPO, env=settings_env(s),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def visit(device: str, t0: int) -> list[bytes]:
    """Pings standing in the middle of the Umeda fence for 3 minutes."""
    return [orjson.dumps({"device_id": device, "ts": t0 + k * 20_000, "lat": 34.7025, "lng": 135.4959,
                          "accuracy_m": 8}) for k in range(10)]  # fmt: skip


@pytest.mark.slow
def test_worker_swaps_catalog_without_restart(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    new_dir = tmp_path / "catalog"
    shutil.copytree(REPO / "config" / "catalog", new_dir)
    stores = new_dir / "stores.yaml"
    stores.write_text(stores.read_text() + NEW_STORE)
    bad_dir = tmp_path / "bad"
    shutil.copytree(new_dir, bad_dir)
    (bad_dir / "stores.yaml").write_text((bad_dir / "stores.yaml").read_text().replace("radius_m: 150", "radius_m: 5"))

    t0 = int(datetime.fromisoformat("2026-11-24T12:00:00+09:00").timestamp() * 1000)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for dev in ("before", "after"):
        record = Device(device_id=dev, token=f"tok-{dev}", locale="ja", opt_in=True,
                        updated_at=datetime.fromisoformat("2026-11-24T00:00:00+00:00"))  # fmt: skip
        producer.send(settings.topic_devices, key=dev.encode(), value=record.dumps())
    producer.flush()

    worker = WorkerProcess(settings, ["-m", "streams.cli", "worker"], tmp_path / "worker.log")
    with worker:
        worker.wait_for_log("Ready", timeout_s=90)
        for raw in visit("before", t0):
            producer.send(settings.topic_pings, key=b"before", value=raw)
        producer.flush()
        time.sleep(3)

        rejected = cli(settings, "catalog", "apply", str(bad_dir))
        assert rejected.returncode == 1, rejected.stdout + rejected.stderr
        assert "radius_m" in rejected.stderr and "nothing was published" in rejected.stderr

        applied = cli(settings, "catalog", "apply", str(new_dir))
        assert applied.returncode == 0, applied.stderr
        version = applied.stdout.split()[2]
        worker.wait_for_log(f"catalog {version} applied", timeout_s=60)

        for raw in visit("after", t0 + 600_000):
            producer.send(settings.topic_pings, key=b"after", value=raw)
        # a published record the worker cannot build: the worker keeps the good catalog
        producer.send(settings.topic_catalog, key=b"catalog",
                      value=orjson.dumps({"v": 1, "version": "broken", "files": {"x.yaml": "stores: 5"}}))  # fmt: skip
        producer.flush()
        worker.wait_for_log("catalog broken could not be applied; keeping " + version, timeout_s=60)
        got = [
            Decision.loads(v) for _, v, _, _ in read_topic(settings.kafka_bootstrap, settings.topic_decisions, 2, 60)
        ]
    producer.close()
    umeda = [d for d in got if d.store_id == "osaka-umeda-900"]
    assert {d.device_id for d in umeda} == {"after"}, got
    assert any(d.outcome == "notify" and d.campaign_id == "welcome-flagship" for d in umeda), umeda
    assert all(d.catalog_version == version for d in umeda)
