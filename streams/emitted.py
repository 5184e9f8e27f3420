"""Which ids were already written to a topic, per partition: what makes a step idempotent.

Used twice. The budget step writes each notification to the partition of the outbox record it
came from and awaits the broker's ack before its offset can be committed; after a crash the
outbox is re-read from the last commit, and before deciding anything in a partition a worker
reads that partition of ``notifications`` back (the recent tail; when the partition is
assigned, or at the latest before its first event) and skips every id already there. The
delivery step does the same with ``deliveries``: a notification whose result is recorded is not
sent again. So an id is never written twice, whatever was in flight when a worker died.
"""

from __future__ import annotations

import logging

log = logging.getLogger("geopush.emitted")
LOOKBACK = 200_000  # records per partition read back on (re)assignment


class EmittedIds:
    """Notification ids already on the topic, loaded per partition on first use."""

    def __init__(self, bootstrap: str, topic: str, lookback: int = LOOKBACK) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.lookback = lookback
        self.ids: dict[int, set[bytes]] = {}

    def forget(self, partitions: set[int]) -> None:
        """A revoked partition must be read back again if it comes back."""
        for p in partitions:
            self.ids.pop(p, None)

    async def preload(self, partitions: set[int]) -> None:
        """Read partitions back as soon as they are assigned, before any event is processed."""
        for p in sorted(partitions):
            if p not in self.ids:
                self.ids[p] = await self._read_back(p)

    async def seen(self, partition: int, notification_id: bytes) -> bool:
        return notification_id in await self.of(partition)

    async def of(self, partition: int) -> set[bytes]:
        """The partition's ids (read back first if not yet), to test and add to in a loop."""
        if partition not in self.ids:
            self.ids[partition] = await self._read_back(partition)
        return self.ids[partition]

    def add(self, partition: int, notification_id: bytes) -> None:
        self.ids.setdefault(partition, set()).add(notification_id)

    async def _read_back(self, partition: int) -> set[bytes]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        ids: set[bytes] = set()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            start = max(0, end - self.lookback)
            consumer.seek(tp, start)
            while end > start and await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for msg in batch.get(tp, []):
                    if msg.key is not None:
                        ids.add(msg.key)
        finally:
            await consumer.stop()
        log.info("read back %d notification ids from %s[%d]", len(ids), self.topic, partition)
        return ids
