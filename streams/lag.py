"""Consumer lag: end offset minus committed offset, per group, topic and partition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def lag_rates(
    before: list[PartitionLag], after: list[PartitionLag], seconds: float
) -> dict[tuple[str, str, int], float]:
    """Change of lag per second for each partition read twice (negative = catching up)."""
    old = {(r.group, r.topic, r.partition): r.lag for r in before}
    return {
        key: (r.lag - old[key]) / seconds
        for r in after
        if (key := (r.group, r.topic, r.partition)) in old and seconds > 0
    }


def over_limit(rows: list[PartitionLag], max_lag: int) -> list[PartitionLag]:
    """Partitions lagging by more than ``max_lag`` records."""
    return [r for r in rows if r.lag > max_lag]


def lag_table(rows: list[PartitionLag], rates: dict[tuple[str, str, int], float]) -> Any:
    """A rich table: group, topic, partition, committed, end, lag, and the trend."""
    from rich.table import Table

    table = Table(title=f"consumer lag ({len(rows)} partitions, total {sum(r.lag for r in rows):,})")
    for name in ("group", "topic", "partition", "committed", "end", "lag", "trend /s"):
        table.add_column(name, justify="left" if name in ("group", "topic") else "right")
    for r in rows:
        rate = rates.get((r.group, r.topic, r.partition))
        trend = "" if rate is None else ("steady" if abs(rate) < 0.05 else f"{rate:+,.1f}")
        style = "red" if rate is not None and rate > 0 and r.lag > 0 else None
        committed = "-" if r.committed is None else f"{r.committed:,}"
        table.add_row(r.group, r.topic, str(r.partition), committed, f"{r.end:,}", f"{r.lag:,}", trend, style=style)
    return table
