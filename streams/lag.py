"""Consumer lag: end offset minus committed offset, per group, topic and partition."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec


@dataclass(frozen=True, order=True)
class PartitionLag:
    """Where one consumer group stands on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        """Records not yet processed; a group that never committed lags by the whole log."""
        return self.end - (self.committed or 0)


def group_lag(admin: KafkaAdminClient, group: str, topics: set[str] | None = None) -> list[PartitionLag]:
    """Committed and end offsets of every partition ``group`` has committed (or of ``topics``)."""
    committed = admin.list_group_offsets({group: None}).get(group, {})
    partitions: set[TopicPartition] = set(committed)
    if topics:
        described = admin.describe_topics(sorted(topics))
        for topic in described:
            name = topic.get("name", topic.get("topic"))
            for p in topic["partitions"]:
                index = p.get("partition_index", p.get("partition"))
                partitions.add(TopicPartition(name, index))
        partitions = {tp for tp in partitions if tp.topic in topics}
    if not partitions:
        return []
    ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
    rows = []
    for tp in partitions:
        meta = committed.get(tp)
        offset = meta.offset if meta is not None and meta.offset >= 0 else None
        rows.append(PartitionLag(group, tp.topic, tp.partition, offset, int(ends[tp].offset)))
    return sorted(rows)
