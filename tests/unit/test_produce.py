"""Keyed batches land where the producer's own partitioner would put each record."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from streams.produce import KeyPartitions


def test_kept_partitions_follow_the_topics_partition_count() -> None:
    keys = [f"campaign-{i}".encode() for i in range(200)]
    known = KeyPartitions()
    for partitions in (12, 12, 24, 12):  # a topic grown and, in a test cluster, recreated smaller
        everything = list(range(partitions))
        assert [known.partition(k, partitions) for k in keys] == [
            DefaultPartitioner()(k, everything, everything) for k in keys
        ]
        assert known.partitions == partitions and len(known.of) == len(keys)
