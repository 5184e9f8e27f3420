"""Fixtures for the real parts: one local Kafka broker per test session, unique topics per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.local_kafka import LocalKafka, free_port
from streams.settings import Settings, environ_for, load_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real Apache Kafka (KRaft) broker on 127.0.0.1, shared by every integration test."""
    base = load_settings({k: v for k, v in os.environ.items() if k.startswith("GEOPUSH_KAFKA_")})
    broker = LocalKafka(
        data_dir=tmp_path_factory.mktemp("kafka"),
        kafka_home=base.kafka_home,
        version=base.kafka_version,
        heap_mb=512,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names and app ids of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(kafka_broker: LocalKafka, unique: str, tmp_path: Path) -> Settings:
    """Settings for one test: the session broker, its own topics, app id and data dir."""
    return load_settings(
        {},
        kafka_bootstrap=kafka_broker.bootstrap,
        kafka_home=kafka_broker.kafka_home,
        app_id=f"t-{unique}",
        topic_pings=f"pings-{unique}",
        topic_pings_dlq=f"pings.dlq-{unique}",
        topic_devices=f"devices-{unique}",
        topic_decisions=f"decisions-{unique}",
        topic_notifications=f"notifications-{unique}",
        topic_deliveries=f"deliveries-{unique}",
        topic_catalog=f"catalog-{unique}",
        topic_partitions=4,
        data_dir=tmp_path / "var",
        consumer_session_timeout_s=6.0,
        consumer_heartbeat_s=1.0,
        catalog_path=REPO / "config" / "catalog",
        web_port=free_port(),
        deliver=False,  # tests of delivery turn it on with the FCM emulator (fcm_emulator fixture)
    )


def settings_env(s: Settings) -> dict[str, str]:
    """The GEOPUSH_* environment that reproduces ``s`` in a subprocess."""
    return environ_for(s)
