"""The budget step: outbox candidates -> final decisions + notifications, one campaign at a time.

Candidates are keyed by campaign id, so every candidate of a campaign reaches one partition and
one worker: the budget (a coupon run has N coupons) is counted in one place even when many
partitions decide at once. A plain aiokafka consumer (group ``{app_id}-budget``, manual commits).

Idempotent: before deciding in a partition, the worker reads that partition of
``notifications`` back (:class:`streams.emitted.EmittedIds`); a candidate whose notification id
is already there is not sent again, and its decision is written again (a crash between the
notification's and the decision's writes would otherwise lose it). The budget spent is counted
on a compacted changelog *before* the sends, so a crash can only under-spend a campaign.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import faust

from decisions.decided import Rows
from decisions.decision_row import DecisionRow
from decisions.engine import apply_budget
from streams.agents.decide import observe_decisions
from streams.emitted import EmittedIds
from streams.fetched import Columns, columns_supported, poll_columns
from streams.groups import Rebalance, budget_group
from streams.metrics import Metrics, metrics_of
from streams.outbox import Pending
from streams.produce import producer_kwargs, send_keyed, send_records, warm
from streams.restore import read_to_end
from streams.settings import Settings
from streams.topics import budget_changelog, outbox_topic

log = logging.getLogger("geopush.budget")
POLL_MS = 200
MAX_CANDIDATES = 1000  # a poll's most candidates


class BudgetLoop:
    """Spends campaign budgets; owns the counts of the outbox partitions it is assigned."""

    def __init__(self, settings: Settings, metrics: Metrics, counts: Counter[str]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.counts = counts
        self.used: dict[int, Counter[str]] = {}
        self.emitted = EmittedIds(settings.kafka_bootstrap, settings.topic_notifications)
        self.lock = asyncio.Lock()
        self.producer: Any = None

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.errors import CommitFailedError

        s = self.settings
        consumer = AIOKafkaConsumer(
            group_id=budget_group(s), enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=MAX_CANDIDATES, session_timeout_ms=int(s.consumer_session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.consumer_heartbeat_s * 1000), **s.aiokafka_kwargs(),
        )  # fmt: skip
        self.producer = AIOKafkaProducer(**producer_kwargs(), **s.aiokafka_kwargs())
        consumer.subscribe([outbox_topic(s)], listener=Rebalance(self))
        await self.producer.start()
        await warm(self.producer, [s.topic_notifications, budget_changelog(s)])
        await consumer.start()
        columns = columns_supported(consumer)  # read as the decision step reads its pings
        log.info("budget started: group %s, %s -> %s", budget_group(s), outbox_topic(s), s.topic_notifications)
        try:
            while True:
                records = await poll_columns(consumer, columns, POLL_MS, MAX_CANDIDATES)
                async with self.lock:
                    records = {tp: cols for tp, cols in records.items() if tp.partition in self.used}
                    if not records:
                        continue
                    await self.handle(records)
                    try:
                        await consumer.commit({tp: cols.offsets[-1] + 1 for tp, cols in records.items()})
                    except CommitFailedError as exc:
                        self.counts["commit_failed"] += 1
                        log.warning("commit of candidates failed (rebalance), they will be seen again: %s", exc)
        finally:
            await consumer.stop()
            await self.producer.stop()

    async def handle(self, records: dict[Any, Columns]) -> None:
        s, producer = self.settings, self.producer
        # (partition, final decision, its bytes, candidate, notification id if sent)
        outputs: list[tuple[int, DecisionRow, bytes, Pending, bytes | None]] = []
        spent: dict[int, set[str]] = {}
        final: list[DecisionRow] = []  # decided here (a duplicate's decision was counted the first time)
        for tp, cols in records.items():
            p = tp.partition
            used = self.used[p]
            emitted = await self.emitted.of(p)
            for value, offset in zip(cols.values, cols.offsets, strict=True):
                try:
                    cand = Pending.loads(value)
                except ValueError as exc:
                    self.counts["bad_candidates"] += 1
                    log.error("unreadable candidate at %s[%d]@%d: %s", tp.topic, p, offset, exc)
                    continue
                nid: bytes = cand.notification_id.encode()
                if nid in emitted:
                    self.counts["duplicate_candidates"] += 1
                    # its decision again; never its notification
                    outputs.append((p, cand.decision, cand.decision_bytes, cand, None))
                    continue
                campaign = cand.decision.campaign_id or ""
                decision, spend = apply_budget(cand.decision, cand.budget, used[campaign])
                if spend:
                    used[campaign] += 1
                    spent.setdefault(p, set()).add(campaign)
                    emitted.add(nid)
                raw = cand.decision_bytes if decision is cand.decision else decision.dumps()
                outputs.append((p, decision, raw, cand, nid if spend else None))
                final.append(decision)
        for (outcome, reason), n in observe_decisions(self.metrics, Rows(final), transitions=False).items():
            self.counts[f"decision:{outcome}:{reason}"] += n
        # 1. the budget spent, acknowledged: a crash after this can only under-spend
        acks: list[Any] = []
        for p, campaigns in spent.items():
            counts = ((c.encode(), str(self.used[p][c]).encode()) for c in sorted(campaigns))
            acks.extend(x.future for x in await send_records(producer, budget_changelog(s), p, counts))
        await asyncio.gather(*acks)
        # 2. decisions and notifications
        decisions = [(decision.device_id.encode(), raw) for _, decision, raw, _, _ in outputs]
        pushes: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        for p, _, _, cand, sent_id in outputs:
            if sent_id is not None:
                pushes.setdefault(p, []).append((sent_id, cand.notification))
        sent = await send_keyed(producer, s.topic_decisions, decisions)
        for p, rows in pushes.items():
            sent += await send_records(producer, s.topic_notifications, p, rows)
        await asyncio.gather(*(x.future for x in sent))

    async def assign(self, parts: set[int]) -> None:
        """Read back the partitions' notification ids and budget counts before any candidate."""
        async with self.lock:
            new = parts - set(self.used)
            await self.emitted.preload(new)
            counts: dict[int, Counter[str]] = {p: Counter() for p in new}
            async for p, msgs in read_to_end(self.settings, budget_changelog(self.settings), dict.fromkeys(new, 0)):
                for m in msgs:
                    if m.key is not None and m.value is not None:
                        counts[p][m.key.decode()] = int(m.value)
            self.used.update(counts)
            self.metrics.set_assigned(budget_group(self.settings), outbox_topic(self.settings), len(self.used))
            log.info("budget partitions assigned: %s", sorted(parts))

    async def revoke(self, parts: set[int]) -> None:
        async with self.lock:
            for p in parts:
                self.used.pop(p, None)
            self.emitted.forget(parts)
            self.metrics.set_assigned(budget_group(self.settings), outbox_topic(self.settings), len(self.used))


def register_budget(app: faust.App, settings: Settings) -> None:
    """Run the budget step inside the worker."""
    counts: Counter[str] = Counter()
    loop = BudgetLoop(settings, metrics_of(app), counts)

    @app.task
    async def budget() -> None:
        await loop.run()

    @app.timer(30.0)
    async def report_budget() -> None:
        if counts:
            log.info("budget counts %s", dict(sorted(counts.items())))
