"""The Kafka topics geopush owns: names from the settings, partitions and cleanup policy here."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, partition count and whether it is compacted (a keyed registry)."""

    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None  # with compaction: compact,delete (idle keys expire)

    def config(self) -> dict[str, str]:
        if self.compacted and self.retention_ms is not None:
            return {"cleanup.policy": "compact,delete", "retention.ms": str(self.retention_ms)}
        return {"cleanup.policy": "compact"} if self.compacted else {}


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic geopush reads or writes, keyed by device id or campaign id as documented."""
    n = settings.topic_partitions
    return [
        TopicSpec(settings.topic_pings, n),
        TopicSpec(settings.topic_pings_dlq, n),
        TopicSpec(settings.topic_devices, n, compacted=True),
        TopicSpec(settings.topic_decisions, n),
        TopicSpec(settings.topic_notifications, n),
        TopicSpec(settings.topic_deliveries, n),
        TopicSpec(settings.topic_catalog, 1, compacted=True),
        TopicSpec(outbox_topic(settings), n),
        *changelog_specs(settings),
    ]


def state_ttl_ms(settings: Settings) -> int:
    """How long an idle device's presence state is kept (table expiry and changelog retention)."""
    return int(settings.state_ttl_days * 86400 * 1000)


def presence_changelog(settings: Settings) -> str:
    """Device state (key device id), co-partitioned with pings; idle devices expire from it."""
    return f"{settings.app_id}-presence-changelog"


def budget_changelog(settings: Settings) -> str:
    """Budget spent per campaign (key campaign id), co-partitioned with the outbox."""
    return f"{settings.app_id}-budget-changelog"


def changelog_specs(settings: Settings) -> list[TopicSpec]:
    """The steps' state topics (the ``devices`` topic is its own changelog)."""
    n = settings.topic_partitions
    return [
        TopicSpec(presence_changelog(settings), n, compacted=True, retention_ms=state_ttl_ms(settings)),
        TopicSpec(budget_changelog(settings), n, compacted=True),
    ]


def outbox_topic(settings: Settings) -> str:
    """Notify candidates between the device-keyed and the campaign-keyed (budget) step."""
    return f"{settings.app_id}-outbox"


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the missing topics; return the names created. Existing topics are left alone."""
    specs = topic_specs(settings) if specs is None else specs
    admin = KafkaAdminClient(**settings.kafka_client_kwargs())
    try:
        existing = set(admin.list_topics())
        todo = [s for s in specs if s.name not in existing]
        created: list[str] = []
        for spec in todo:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            num_partitions=spec.partitions,
                            replication_factor=settings.topic_replicas,
                            topic_configs=spec.config(),
                        )
                    ]
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics", extra={"topics": created})
        return created
    finally:
        admin.close()
