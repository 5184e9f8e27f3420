"""The delivery step: ``notifications`` -> FCM -> ``deliveries`` (+ dead tokens tombstoned on ``devices``).

A plain aiokafka consumer in its own group (``{app_id}-delivery``) with manual commits, so the
order of effects is explicit: send, write the final result keyed by notification id (acked by
the broker), then commit the offset. After a crash the uncommitted notifications come back;
each partition's recent ``deliveries`` are read back first (:class:`streams.emitted.EmittedIds`)
and a notification with a recorded result is not sent again. The only possible resend is one
FCM accepted but whose result was not yet written — and it carries the same collapse key
(the notification id), so the phone shows one notification.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka import ConsumerRebalanceListener

from decisions.records import Delivery, Notification
from delivery.dispatch import Dispatcher, Final, Sender
from delivery.outgoing import outgoing_for
from delivery.policy import Backoff
from delivery.rate import TokenBucket, fair_share
from streams.emitted import EmittedIds
from streams.groups import delivery_group
from streams.metrics import Metrics, metrics_of
from streams.produce import warm
from streams.settings import Settings

log = logging.getLogger("geopush.deliver")


def now_utc() -> datetime:
    return datetime.now(UTC)


class DeliveryLoop:
    """Consumes notifications in batches and records one final delivery result for each."""

    def __init__(
        self, settings: Settings, sender: Sender, counts: Counter[str] | None = None,
        clock: Callable[[], datetime] = now_utc, metrics: Metrics | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.sender = sender
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self.rate_per_s = settings.fcm_rate_per_min / 60.0
        bucket = TokenBucket(0.0, burst=float(settings.fcm_batch_size), clock=time.monotonic)
        backoff = Backoff(settings.fcm_backoff_base_s, settings.fcm_backoff_max_s)
        self.dispatcher = Dispatcher(
            sender, clock, asyncio.sleep, bucket, backoff, random.Random(), batch_max=settings.fcm_concurrency
        )
        self.done = EmittedIds(settings.kafka_bootstrap, settings.topic_deliveries)
        self.lock = asyncio.Lock()
        self.clock = clock
        self.assigned: set[int] = set()

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s = self.settings
        consumer = AIOKafkaConsumer(
            group_id=delivery_group(s), enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=s.fcm_batch_size, session_timeout_ms=int(s.consumer_session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.consumer_heartbeat_s * 1000), **s.aiokafka_kwargs(),
        )  # fmt: skip
        consumer.subscribe([s.topic_notifications], listener=_Rebalance(self))
        producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **s.aiokafka_kwargs())
        await producer.start()
        await warm(producer, [s.topic_deliveries])
        await consumer.start()
        log.info("delivery started: group %s, %s -> FCM -> %s", delivery_group(s), s.topic_notifications,
                 s.topic_deliveries)  # fmt: skip
        try:
            while True:
                records = await consumer.getmany(timeout_ms=1000, max_records=s.fcm_batch_size)
                if not records:
                    continue
                async with self.lock:
                    await self.handle(records, producer)
                    await consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in records.items()})
        finally:
            await consumer.stop()
            await producer.stop()
            await self.sender.close()

    async def handle(self, records: dict[Any, list[Any]], producer: Any) -> None:
        """Deliver one polled batch to the end; every final result is written as soon as it is
        known (one round of ``fcm_concurrency`` messages at a time) and broker-acked before return."""
        todo: dict[str, tuple[int, Notification]] = {}
        for tp, msgs in records.items():
            for m in msgs:
                n = self._parse(m)
                if n is None:
                    continue
                if n.notification_id in todo or await self.done.seen(tp.partition, n.notification_id.encode()):
                    self.counts["delivery:already_recorded"] += 1
                    continue
                todo[n.notification_id] = (tp.partition, n)
        acks: list[Any] = []
        outgoing = []
        for partition, n in todo.values():
            o = outgoing_for(n)
            if o is None:
                acks.extend(await self._record(producer, partition, n, None))
            else:
                outgoing.append(o)
        share = fair_share(self.rate_per_s, len(self.assigned) or 1, self.settings.topic_partitions)
        self.dispatcher.bucket.set_rate(share)

        async def record(finals: list[Final]) -> None:
            for f in finals:
                partition, n = todo[f.outgoing.notification_id]
                acks.extend(await self._record(producer, partition, n, f))

        retries_before = Counter(self.dispatcher.stats)
        await self.dispatcher.deliver(outgoing, on_final=record)
        await asyncio.gather(*acks)
        for key, count in (self.dispatcher.stats - retries_before).items():
            if key.startswith("retry:"):
                self.metrics.fcm_retries.labels(code=key.removeprefix("retry:")).inc(count)

    async def _record(self, producer: Any, partition: int, n: Notification, f: Final | None) -> list[Any]:
        """Send the delivery record (and a tombstone for a dead token); return the pending acks."""
        record = Delivery(
            notification_id=n.notification_id, device_id=n.device_id, campaign_id=n.campaign_id,
            store_id=n.store_id, result=f.result if f else "failed", message_name=f.message_name if f else None,
            error_code=f.error_code if f else "NO_TOKEN", attempts=f.attempts if f else 0, decided_at=n.ts,
            at=self.clock(),
        )  # fmt: skip
        self.counts[f"delivery:{record.result}"] += 1
        self.metrics.deliveries.labels(result=record.result).inc()
        key = n.notification_id.encode()
        acks = [await producer.send(self.settings.topic_deliveries, key=key, value=record.dumps(), partition=partition)]
        # Nothing is sent to a dead token again. The tombstone deletes the whole device record: if
        # the app registered a fresh token in the instant before it, that registration is lost
        # too, until the app writes its record again (apps re-register at every start).
        if record.result == "invalid_token":
            acks.append(await producer.send(self.settings.topic_devices, key=n.device_id.encode(), value=None))
        self.done.add(partition, key)
        return acks

    def _parse(self, m: Any) -> Notification | None:
        try:
            return Notification.loads(m.value)
        except ValueError as exc:
            self.counts["delivery:bad_record"] += 1
            log.error("unreadable notification at %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
            return None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc,unused-ignore]
    """Read back recorded results when partitions arrive; let a running batch finish before they go."""

    def __init__(self, loop: DeliveryLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.loop.lock:
            gone = {tp.partition for tp in revoked}
            self.loop.done.forget(gone)
            self.loop.assigned -= gone
            self.loop.metrics.set_assigned(
                delivery_group(self.loop.settings), self.loop.settings.topic_notifications, len(self.loop.assigned)
            )

    async def on_partitions_assigned(self, assigned: Any) -> None:
        parts = {tp.partition for tp in assigned}
        await self.loop.done.preload(parts)
        self.loop.assigned |= parts
        self.loop.metrics.set_assigned(
            delivery_group(self.loop.settings), self.loop.settings.topic_notifications, len(self.loop.assigned)
        )
        log.info("delivery partitions assigned: %s", sorted(parts))


def register_deliver(app: faust.App, settings: Settings) -> None:
    """Run the delivery loop inside the worker when ``GEOPUSH_DELIVER`` is on."""
    if not settings.deliver:
        return
    from streams.fcm import FcmSender

    counts: Counter[str] = Counter()
    metrics = metrics_of(app)

    def observe(seconds: float, n: int) -> None:
        metrics.fcm_latency.observe(seconds)

    sender = FcmSender(settings, observe)  # fails the start, with the reason, when there are no credentials

    @app.task
    async def deliver() -> None:
        await DeliveryLoop(settings, sender, counts, metrics=metrics).run()

    @app.timer(30.0)
    async def report_deliveries() -> None:
        if counts:
            log.info("delivery counts %s", dict(sorted(counts.items())))
