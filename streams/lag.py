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
    """Committed and end offsets of every partition ``group`` has committed (or of ``topics``).

    Blocking (kafka-python): for the CLI and benchmarks. The worker reads with :func:`group_lag_async`."""
    committed = admin.list_group_offsets({group: None}).get(group, {})
    partitions = _partitions(committed, admin.describe_topics(sorted(topics)) if topics else [], topics)
    if not partitions:
        return []
    ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
    return _rows(group, committed, {tp: int(ends[tp].offset) for tp in partitions})


async def group_lag_async(admin: Any, consumer: Any, group: str, topics: set[str] | None = None) -> list[PartitionLag]:
    """:func:`group_lag` with aiokafka's admin client and a group-less consumer (for end
    offsets), on the event loop: a worker reading lag with kafka-python in a thread made that
    thread fight the decision step for the GIL (p99 of the first 5 s at half load: 240 -> 124 ms
    with the refresh off)."""
    from aiokafka import TopicPartition as AioPartition

    committed = await admin.list_consumer_group_offsets(group)
    partitions = _partitions(committed, await admin.describe_topics(sorted(topics)) if topics else [], topics)
    if not partitions:
        return []
    ends = await consumer.end_offsets([AioPartition(tp.topic, tp.partition) for tp in partitions])
    return _rows(group, committed, {TopicPartition(tp.topic, tp.partition): int(end) for tp, end in ends.items()})


def _partitions(committed: dict[Any, Any], described: list[Any], topics: set[str] | None) -> set[TopicPartition]:
    """The partitions to report: those committed, plus every partition of ``topics`` (only those, if given)."""
    partitions = {TopicPartition(tp.topic, tp.partition) for tp in committed}
    for topic in described:
        name = topic.get("name", topic.get("topic"))
        for p in topic["partitions"]:
            partitions.add(TopicPartition(name, p.get("partition_index", p.get("partition"))))
    return {tp for tp in partitions if tp.topic in topics} if topics else partitions


def _rows(group: str, committed: dict[Any, Any], ends: dict[TopicPartition, int]) -> list[PartitionLag]:
    rows = []
    by_partition = {(tp.topic, tp.partition): meta for tp, meta in committed.items()}
    for tp, end in ends.items():
        meta = by_partition.get((tp.topic, tp.partition))
        offset = meta.offset if meta is not None and meta.offset >= 0 else None
        rows.append(PartitionLag(group, tp.topic, tp.partition, offset, end))
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
