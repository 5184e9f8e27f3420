"""The decision stream in Faust: pings -> (DLQ | engine) -> decisions, outbox -> budget -> notifications.

Thin by design: parsing, gates, presence, campaigns and caps are ``decisions.*``. Pings are
taken in batches (one vectorised match per batch); every table read/write and every output is
attached to the event of its own device, so state and sends land in the right partition
(and, with exactly-once, in that partition's transaction).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from faust.streams import _current_event

from decisions.engine import Candidate, Engine, apply_budget
from decisions.pings import Ping, PingRejected, PresenceCheck, parse_record, presence_check_bytes
from decisions.records import DeadLetter, Decision, Device, Notification
from decisions.state import DeviceState
from geofences.load import Catalog, load_catalog
from streams.catalog_feed import CatalogFeed
from streams.emitted import EmittedIds
from streams.metrics import Metrics, metrics_of
from streams.settings import Settings
from streams.topics import outbox_topic, state_ttl_ms

log = logging.getLogger("geopush.decide")
BATCH_MAX = 2000
BATCH_WITHIN_S = 0.05


def use_event(event: faust.EventT) -> None:
    """Make ``event`` the current event of this task, so table writes and sends go to its
    partition. Only the context variable is set: ``Stream.current_event`` belongs to the
    stream's own reader, which fills the next batch concurrently (setting it loses events)."""
    _current_event.set(weakref.ref(event))


class TableStates:
    """Device state in a Faust table; each access switches to that device's event."""

    def __init__(self, table: Any, events: dict[str, faust.EventT]) -> None:
        self.table, self.events = table, events
        self.dirty: dict[str, DeviceState] = {}

    def get(self, device_id: str) -> DeviceState | None:
        if device_id in self.dirty:
            return self.dirty[device_id]
        use_event(self.events[device_id])
        raw = self.table.get(device_id)
        return DeviceState.loads(raw) if raw is not None else None

    def put(self, device_id: str, state: DeviceState) -> None:
        self.dirty[device_id] = state

    def flush(self) -> None:
        for device_id, state in self.dirty.items():
            use_event(self.events[device_id])
            self.table[device_id] = state.dumps()


class TableDevices:
    def __init__(self, table: Any, events: dict[str, faust.EventT]) -> None:
        self.table, self.events = table, events

    def get(self, device_id: str) -> Device | None:
        use_event(self.events[device_id])
        raw = self.table.get(device_id)
        return Device.loads(raw) if raw is not None else None


def dead_letter(event: faust.EventT, reason: str, detail: str) -> DeadLetter:
    msg = event.message
    key = msg.key if isinstance(msg.key, bytes) else None
    return DeadLetter.of(msg.value, key, reason, detail, msg.topic, msg.partition, msg.offset, datetime.now(UTC))


def engine_for(catalog: Catalog, settings: Settings) -> Engine:
    """The decision engine for a catalog (builds its fence index)."""
    return Engine.for_catalog(
        catalog, state_ttl_s=settings.state_ttl_days * 86400.0, presence_timeout_s=settings.presence_timeout_s
    )


class LiveEngine:
    """The engine in use; ``swap`` builds the next one and replaces it in one assignment."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.on_swap: Callable[[Catalog], None] | None = None

    def swap(self, catalog: Catalog) -> None:
        new = engine_for(catalog, self.settings)
        new.stream_ms = dict(self.engine.stream_ms)
        old, self.engine = self.engine.version, new
        log.info(
            "catalog %s applied (was %s): %d stores, %d campaigns, %d index cells",
            catalog.version, old, len(catalog.stores), len(catalog.campaigns), new.index.cell_count(),
        )  # fmt: skip
        if self.on_swap is not None:
            self.on_swap(catalog)


def register_decide(app: faust.App, settings: Settings) -> None:
    """Topics, tables and agents of the decision stream, with the catalog loaded from settings."""
    catalog = load_catalog([settings.catalog_path])
    live = LiveEngine(engine_for(catalog, settings), settings)
    n = settings.topic_partitions

    def raw_topic(name: str, internal: bool = False) -> Any:
        return app.topic(name, partitions=n, internal=internal, key_serializer="raw", value_serializer="raw")

    pings = raw_topic(settings.topic_pings)
    dlq = raw_topic(settings.topic_pings_dlq)
    devices_topic = raw_topic(settings.topic_devices)
    decisions = raw_topic(settings.topic_decisions)
    notifications = raw_topic(settings.topic_notifications)
    outbox = raw_topic(outbox_topic(settings), internal=True)
    # idle devices also expire from the changelog, so recovery never brings them back
    ttl_ms = state_ttl_ms(settings)
    presence = app.Table(
        "presence", partitions=n, key_type=str, value_type=bytes,
        extra_topic_configs={"cleanup.policy": "compact,delete", "retention.ms": str(ttl_ms)},
    )  # fmt: skip
    device_book = app.Table("devices", partitions=n, key_type=str, value_type=bytes)
    budget_used = app.Table("budget", partitions=n, default=int, key_type=str, value_type=int)
    counts: Counter[str] = Counter()
    metrics = metrics_of(app)
    metrics.set_catalog(catalog.version, len(catalog.fences))
    live.on_swap = lambda cat: metrics.set_catalog(cat.version, len(cat.fences))
    log.info("catalog %s: %d stores, %d campaigns", catalog.version, len(catalog.stores), len(catalog.campaigns))

    def failed(version: str) -> None:
        counts["catalog_failures"] += 1
        metrics.catalog_failures.inc()

    feed = CatalogFeed(settings, lambda: live.engine.version, live.swap, failed)

    @app.task
    async def follow_catalog() -> None:
        await feed.run()

    @app.agent(pings)
    async def pings_agent(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await decide_batch(events)

    async def decide_batch(events: Sequence[faust.EventT]) -> None:
        parsed: dict[int, list[Ping | PresenceCheck]] = {}
        by_device: dict[str, faust.EventT] = {}
        for event in events:
            try:
                ping = parse_record(event.message.value, event.message.key)
            except PingRejected as exc:
                counts[f"invalid:{exc.reason}"] += 1
                metrics.invalid.labels(reason=exc.reason).inc()
                use_event(event)
                letter = dead_letter(event, exc.reason, exc.detail).dumps()
                await (await dlq.send(key=event.message.key, value=letter, force=True))
                continue
            parsed.setdefault(event.message.partition, []).append(ping)
            by_device[ping.device_id] = event
        counts["pings"] += len(events)
        metrics.pings.inc(len(events))
        states = TableStates(presence, by_device)
        devices = TableDevices(device_book, by_device)
        found: list[Decision] = []
        candidates: list[Candidate] = []
        gated: list[tuple[Ping, str]] = []
        engine = live.engine  # one catalog per batch; a swap takes effect at the next batch
        matched_before = engine.matched_pings
        for partition, batch in parsed.items():
            part_decisions, part_candidates, part_gated = engine.decide(batch, states, devices, partition)
            found.extend(part_decisions)
            candidates.extend(part_candidates)
            gated.extend(part_gated)
        metrics.matched.inc(engine.matched_pings - matched_before)
        for _, reason in gated:
            counts[f"gated:{reason}"] += 1
            metrics.gated.labels(reason=reason).inc()
        observe_decisions(metrics, found)
        # outputs first, acknowledged by the broker, then the state that says they happened:
        # a crash in between repeats a decision (at-least-once) but never loses one
        acks = []
        for d in found:
            counts[f"decision:{d.outcome}:{d.reason}"] += 1
            acks.append(await decisions.send(key=d.device_id.encode(), value=d.dumps(), force=True))
        for c in candidates:
            key = (c.decision.campaign_id or "").encode()
            acks.append(await outbox.send(key=key, value=candidate_bytes(c), force=True))
        await asyncio.gather(*acks)
        states.flush()

    @app.agent(devices_topic)
    async def devices_agent(stream: faust.StreamT) -> None:
        """Keep each device record in the co-partitioned table; a tombstone deletes it."""
        async for event in stream.events():
            key = event.key.decode() if isinstance(event.key, bytes) else None
            if key is None:
                continue
            if event.value is None:
                device_book.pop(key, None)
                continue
            try:
                Device.loads(event.value)
            except ValueError as exc:
                log.warning("bad device record at %s/%s: %s", event.message.partition, event.message.offset, exc)
                continue
            device_book[key] = event.value

    emitted = EmittedIds(settings.kafka_bootstrap, settings.topic_notifications)

    @app.on_partitions_revoked.connect
    async def forget_emitted(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", set())
        emitted.forget({tp.partition for tp in revoked if tp.topic == outbox.get_topic_name()})

    @app.on_partitions_assigned.connect
    async def preload_emitted(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", set())
        await emitted.preload({tp.partition for tp in assigned if tp.topic == outbox.get_topic_name()})

    @app.agent(outbox)
    async def budget_agent(stream: faust.StreamT) -> None:
        """The campaign-keyed step: spend the campaign's budget, or suppress with ``budget``.

        Idempotent: a candidate whose notification id is already on ``notifications`` (this
        partition's) is not sent again, so reprocessing after a crash never sends an id twice.
        Its decision is written again, though: a worker killed after the notification reached
        the broker but before the decision did (different topics, different batches) would
        otherwise lose that decision. Decisions are at-least-once; notifications exactly once.

        The budget is counted before the sends, so a crash in between can only under-spend a
        campaign (by the records in flight), never overspend it."""
        async for event in stream.events():
            partition = event.message.partition
            cand = candidate_loads(event.value)
            nid = cand.notification.notification_id.encode()
            if await emitted.seen(partition, nid):
                counts["duplicate_candidates"] += 1
                decision = cand.decision
                await (await decisions.send(key=decision.device_id.encode(), value=decision.dumps(), force=True))
                continue
            campaign = cand.decision.campaign_id or ""
            decision, spend = apply_budget(cand, budget_used[campaign])
            if spend:
                budget_used[campaign] += 1
            counts[f"decision:{decision.outcome}:{decision.reason}"] += 1
            observe_decisions(metrics, [decision], transitions=False)
            acks = [await decisions.send(key=decision.device_id.encode(), value=decision.dumps(), force=True)]
            if spend:
                acks.append(
                    await notifications.send(key=nid, value=cand.notification.dumps(), partition=partition, force=True)
                )
                emitted.add(partition, nid)
            await asyncio.gather(*acks)

    @app.timer(settings.presence_sweep_s)
    async def sweep_silent_devices() -> None:
        """Ask the stream to end the visits of devices that went silent inside a fence.

        The check goes through the pings topic under the device's key, so it is decided in
        order with the device's own pings, in its partition, by the same code as replay."""
        engine = live.engine
        if not engine.stream_ms:
            return
        now = max(engine.stream_ms.values())
        checks = 0
        items = list(presence.items())
        metrics.table_keys.labels(table="presence").set(len(items))
        metrics.table_keys.labels(table="devices").set(sum(1 for _ in device_book))
        for device_id, raw in items:
            if engine.silent_visits(DeviceState.loads(raw), now):
                await pings.send(key=device_id.encode(), value=presence_check_bytes(device_id, now), force=True)
                checks += 1
        if checks:
            counts["presence_checks"] += checks

    @app.timer(30.0)
    async def report() -> None:
        if counts:
            log.info("counts %s", dict(sorted(counts.items())))


def observe_decisions(metrics: Metrics, found: Sequence[Decision], transitions: bool = True) -> None:
    """Decisions by outcome and reason, their latency from ping time, and distinct transitions.

    Notify candidates are counted once, by the budget step that makes them final."""
    now = datetime.now(UTC)
    moved = set()
    for d in found:
        if transitions:
            moved.add((d.device_id, d.ts, d.store_id, d.transition))
        if d.outcome == "notify" and transitions:
            continue
        metrics.decisions.labels(outcome=d.outcome, reason=d.reason).inc()
        metrics.decision_latency.observe(max(0.0, (now - d.ts).total_seconds()))
    for *_, kind in moved:
        metrics.transitions.labels(kind=kind).inc()


def candidate_bytes(c: Candidate) -> bytes:
    return orjson.dumps(
        {
            "decision": c.decision.model_dump(mode="json"),
            "notification": c.notification.model_dump(mode="json"),
            "budget": c.budget,
        }
    )


def candidate_loads(raw: bytes) -> Candidate:
    obj = orjson.loads(raw)
    return Candidate(
        Decision.model_validate(obj["decision"]), Notification.model_validate(obj["notification"]), obj["budget"]
    )
