"""The decision step: pings -> (dead letters | engine) -> decisions + outbox candidates.

A plain aiokafka consumer (group ``{app_id}-decide``, manual commits) inside the worker, batch
first: each poll is read as columns per partition (:mod:`streams.fetched`), parsed, matched in
one vectorised call and decided by ``decisions.engine`` (the same code as ``geopush replay``).
Per-device state lives in a local store per partition (RocksDB), backed by a compacted
changelog topic.

Outputs (decisions, candidates, dead letters) are sent as each poll is decided; each
partition's state changes are checkpointed once every ``commit_interval_s``, for all the polls
decided since its last checkpoint at once (a device's state written once, however often it
pinged), the partitions in turns spread over the interval.

The order of effects is what makes it safe: a checkpoint's outputs are acknowledged by the
broker first, then the state changes that say they happened (changelog, then the local
store), then the pings' offsets are committed. A crash anywhere repeats work (a decision may
appear twice; a candidate's notification id is stable and the budget step never sends it
twice) but never loses a ping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from decisions.decided import Decisions
from decisions.engine import Engine
from decisions.ping_columns import parse_poll
from decisions.pings import Ping, PingRejected, PresenceCheck, presence_check_bytes
from decisions.records import DeadLetter, Device
from decisions.state import DeviceState
from geofences.index import load_kernel
from geofences.load import Catalog
from streams.agents.rotation import Rotation
from streams.device_store import CHANGELOG_NEXT, DEVICES_NEXT, LocalStore, PartitionStore, drop_per_partition_stores
from streams.device_view import BookStates, Changes, StoreDevices, StoreStates, state_view
from streams.fetched import Columns, columns_supported, poll_columns
from streams.groups import Rebalance, decide_group
from streams.heap import Pauses, collections_paused, settle_heap
from streams.metrics import Metrics, observe_many
from streams.outbox import candidate_bytes
from streams.produce import KeyPartitions, Sent, next_offset, producer_kwargs, send_keyed, send_records, warm
from streams.restore import end_offsets, read_to_end
from streams.settings import Settings
from streams.topics import outbox_topic, presence_changelog

log = logging.getLogger("geopush.decide")
POLL_MS = 50
CHECKPOINTS_IN_FLIGHT = 3  # intervals' checkpoints waiting for the broker while later polls are decided
COMMIT_SPACING = 0.5  # of commit_interval_s: the least time between two commits of the pings' offsets
SLOW_CHECKPOINT_S = 1.0  # a checkpoint taking longer is logged with its phases (offsets wait that long)


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
        self.on_swap: list[Any] = []

    def swap(self, catalog: Catalog) -> None:
        with collections_paused():
            new = engine_for(catalog, self.settings)
        new.stream_ms = dict(self.engine.stream_ms)
        old, self.engine = self.engine.version, new
        settled = settle_heap()  # the new catalog out of future collections, the old one freed
        log.info(
            "catalog %s applied (was %s): %d stores, %d campaigns, %d index cells (heap settled in %.2f s)",
            catalog.version, old, len(catalog.stores), len(catalog.campaigns), new.index.cell_count(), settled,
        )  # fmt: skip
        for listener in self.on_swap:
            listener(catalog)


@dataclass
class Checkpoint:
    """What the polls decided still have to make durable for some partitions, in this order:
    their outputs acknowledged, the partitions' state changes on the changelog (acknowledged),
    then in the local stores, then the pings' offsets committed."""

    records: int = 0  # of its partitions (set when a checkpoint is split off the pending polls)
    acks: list[Any] = field(default_factory=list)
    changes: dict[int, Changes] = field(default_factory=dict)  # taken when the checkpoint starts
    offsets: dict[Any, int] = field(default_factory=dict)
    decide_s: float = 0.0
    polls: int = 0
    by_partition: Counter[int] = field(default_factory=Counter)  # records of each partition

    def add(self, records: dict[int, int], acks: list[Any], offsets: dict[Any, int], decide_s: float) -> None:
        """One more poll decided: its records by partition, its outputs, its offsets (the newest
        of each partition win)."""
        self.polls += 1
        self.by_partition.update(records)
        self.acks.extend(acks)
        self.offsets.update(offsets)
        self.decide_s += decide_s

    def __bool__(self) -> bool:
        return bool(self.acks or self.offsets)

    def split(self, parts: set[int]) -> Checkpoint:
        """The share of a checkpoint of ``parts``: every output decided so far (later
        checkpoints follow this one, so they follow its acknowledgements too) and the offsets
        of ``parts``; the other partitions' offsets stay here for their turn."""
        offsets = {tp: o for tp, o in self.offsets.items() if tp.partition in parts}
        records = sum(self.by_partition.pop(p, 0) for p in parts)
        cp = Checkpoint(records, self.acks, offsets=offsets, decide_s=self.decide_s, polls=self.polls)
        for tp in offsets:
            del self.offsets[tp]
        self.acks, self.decide_s, self.polls = [], 0.0, 0
        return cp


@dataclass
class Turns:
    """The two steps of a checkpoint the next one waits for: its changelog records queued (the
    next checkpoint's follow them on each partition) and its states in the local stores (written
    in order, with the changelog offset each reflects). A failure fails both, so nothing of a
    later checkpoint reaches the store or the committed offsets."""

    queued: asyncio.Future[None]
    stored: asyncio.Future[None]

    @classmethod
    def new(cls) -> Turns:
        loop = asyncio.get_running_loop()
        return cls(loop.create_future(), loop.create_future())

    def fail(self, exc: BaseException) -> None:
        for turn in (self.queued, self.stored):
            if not turn.done():
                turn.set_exception(exc)
                turn.exception()  # retrieved: the checkpoint that failed raises it


class DecideLoop:
    """Consumes pings in batches; owns the device state of the partitions it is assigned.

    A partition's checkpoint covers the polls decided in a ``commit_interval_s``
    (:class:`Checkpoint`): its changed states are taken from its view once, so a device that
    pinged in several of them is serialised, logged and stored once. The partitions take turns
    (:class:`Rotation`, one every ``commit_interval_s / n``): taken all at once, a second's
    states were a burst of work the polls waited behind (at 50k pings/s p99 93-206 ms, in turns
    37-47 in three runs of four; bench/results/e2e.md, twenty-sixth session). Later polls are
    decided while earlier checkpoints wait for the broker (up to CHECKPOINTS_IN_FLIGHT
    intervals' worth), so a ping does not wait behind another poll's acknowledgements: a slow changelog ack (measured 150-260 ms in a
    fresh worker's first seconds) does not stop the deciding. The checkpoints overlap too: one's
    changelog records are queued as soon as its outputs are acknowledged and the previous one's
    records are queued (not acknowledged), only the local store writes go one checkpoint at a
    time, and commits carry the newest offsets stored. Chained end to end instead (each after
    the previous one's commit), one worker spent ~45 % of its time waiting for them
    (bench/results/e2e.md, tenth session)."""

    def __init__(self, settings: Settings, live: LiveEngine, metrics: Metrics, counts: Counter[str]) -> None:
        self.settings = settings
        self.live = live
        self.metrics = metrics
        self.counts = counts
        self.local: LocalStore | None = None  # every partition's store, opened at the first assignment
        self.stores: dict[int, PartitionStore] = {}
        self.views: dict[int, StoreStates | BookStates] = {}  # the engine's view of each store
        self.devices: dict[int, StoreDevices] = {}  # and of its device records
        self.open_visits: dict[int, set[str]] = {}  # devices inside a fence, for the silence sweep
        self.lock = asyncio.Lock()
        self.producer: Any = None
        self.devices_consumer: Any = None
        self.inflight: deque[asyncio.Future[None]] = deque()  # earlier polls' checkpoints, oldest first
        self.turns: Turns | None = None  # the newest checkpoint's, for the next one to follow
        self.due: dict[Any, int] = {}  # offsets stored, not yet committed
        self.consumer: Any = None  # the pings consumer, for commits (set by run)
        self.pending = Checkpoint()  # what the polls decided that no checkpoint has taken yet
        self.rotation = Rotation()  # which partitions' turn it is to be checkpointed
        self.clock: Callable[[], float] = time.monotonic  # when checkpoints and commits are due (tests set it)
        self.checkpointed_at = 0.0  # clock() of the last checkpoint of all, when not in turns
        self.committed_at = 0.0  # clock() of the last commit of pings' offsets
        self.campaign_partitions = KeyPartitions()  # the outbox partition of each campaign seen
        self.committing = asyncio.Lock()
        self.failure: BaseException | None = None  # a checkpoint that failed where it could not be raised

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s = self.settings
        consumer = AIOKafkaConsumer(
            group_id=decide_group(s), enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=s.poll_max_records, session_timeout_ms=int(s.consumer_session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.consumer_heartbeat_s * 1000), fetch_min_bytes=s.fetch_min_bytes,
            fetch_max_wait_ms=s.fetch_max_wait_ms, **s.aiokafka_kwargs(),
        )  # fmt: skip
        self.producer = AIOKafkaProducer(**producer_kwargs(), **s.aiokafka_kwargs())
        self.devices_consumer = AIOKafkaConsumer(
            enable_auto_commit=False, auto_offset_reset="earliest", **s.aiokafka_kwargs()
        )
        self.consumer = consumer
        consumer.subscribe([s.topic_pings], listener=Rebalance(self))
        await self.producer.start()
        await warm(
            self.producer, [s.topic_decisions, outbox_topic(s), presence_changelog(s), s.topic_pings_dlq, s.topic_pings]
        )
        await self.devices_consumer.start()
        await consumer.start()
        columns = columns_supported(consumer)
        if not columns:
            log.warning("this aiokafka's fetcher is not the one geopush reads as columns: reading records one by one")
        log.info("decide started: group %s, %s -> %s", decide_group(s), s.topic_pings, s.topic_decisions)
        try:
            while True:
                records = await self.poll(consumer, columns)
                async with self.lock:
                    if self.failure is not None:
                        raise self.failure
                    while self.inflight and self.inflight[0].done():
                        self.inflight.popleft().result()  # raises what a checkpoint raised
                    await self.follow_devices()
                    # a rebalance may have taken a partition between the poll and the lock: its
                    # records are left (not committed) for the new owner
                    records = {tp: cols for tp, cols in records.items() if tp.partition in self.stores}
                    if records:
                        self.observe_age(records)
                        await self.decide_poll(records)
                    self.checkpoint_if_due()  # after a quiet poll too: what was decided is not left waiting
                    while len(self.inflight) >= CHECKPOINTS_IN_FLIGHT * max(1, len(self.views)):
                        await self.inflight.popleft()
        finally:
            try:
                self.checkpoint_now()
                await self.settle()
                await self.commit_due()
            except Exception as exc:  # stopping anyway; the pings are decided again after a restart
                log.warning("last checkpoint failed on stop: %s", exc)
            await consumer.stop()
            await self.devices_consumer.stop()
            await self.producer.stop()
            if self.local is not None:
                self.local.close()

    async def poll(self, consumer: Any, columns: bool) -> dict[Any, Columns]:
        """The next poll's pings, each partition's as columns (:mod:`streams.fetched`)."""
        return await poll_columns(consumer, columns, POLL_MS, self.settings.poll_max_records)

    def checkpoint_if_due(self) -> None:
        """Start a checkpoint of the partitions whose turn came (:class:`Rotation`: each once a
        ``commit_interval_s``, in turns spread over it; or all of them, without ``checkpoint_in_turns``)."""
        s, now, views = self.settings, self.clock(), sorted(self.views)
        if s.checkpoint_in_turns:
            parts = self.rotation.due(views, now, s.commit_interval_s)
        elif now - self.checkpointed_at >= s.commit_interval_s:
            parts, self.checkpointed_at = views, now
        else:
            parts = []
        if parts:
            self.checkpoint_now(set(parts))
        self.commit_if_due(now)  # offsets a checkpoint left within the spacing, if it is over

    def checkpoint_now(self, parts: set[int] | None = None) -> None:
        """Start the checkpoint of ``parts`` for the polls decided since their last one, if
        any: their state changes taken from the views now, as they stand after the last of
        them, with every output decided so far. ``parts`` None: every assigned partition, and
        every change (none held back: ``state_refresh_s``), for a stop, a rebalance or expiry."""
        everything = parts is None
        if not self.pending and not everything:
            return
        parts = set(self.views) if parts is None else parts
        cp = self.pending.split(parts)
        views = [(p, self.views[p]) for p in sorted(parts) if p in self.views]
        cp.changes = {p: rows for p, view in views if (rows := view.take(everything))}
        if cp or cp.changes:
            self.chain(cp)

    def chain(self, cp: Checkpoint) -> None:
        """Start a checkpoint, following the newest one in flight."""
        turns = Turns.new()
        self.enqueue(self.checkpoint(cp, turns, self.turns))
        self.turns = turns

    def enqueue(self, checkpoint: Any) -> None:
        """Start a checkpoint after those in flight."""
        self.inflight.append(asyncio.ensure_future(checkpoint))

    async def settle(self) -> None:
        """Wait for every checkpoint in flight; raise the first failure."""
        tasks, self.inflight = list(self.inflight), deque()
        if tasks:
            await asyncio.wait(tasks)
            failures = [exc for task in tasks if (exc := task.exception()) is not None]  # all retrieved
            if failures:
                raise failures[0]

    async def drain(self) -> None:
        """Checkpoint what was decided, :meth:`settle`, then commit what the checkpoints stored,
        for the rebalance listener and timers: a failure is kept for the main loop to raise at
        its next poll (raised here, it would die with the caller)."""
        try:
            self.checkpoint_now()
            await self.settle()
            await self.commit_due()
        except Exception as exc:
            self.failure = exc

    def observe_age(self, records: dict[Any, Columns]) -> None:
        """How long the poll's oldest ping waited before the step got it (and, at DEBUG, per poll)."""
        oldest = min(cols.first_ts for cols in records.values())
        age = max(0.0, time.time() - oldest / 1000.0)
        self.metrics.poll_age.observe(age)
        if log.isEnabledFor(logging.DEBUG):
            busy = sum(1 for t in self.inflight if not t.done())
            n = sum(len(cols) for cols in records.values())
            log.debug("poll: %d records, oldest %.0f ms old, checkpoints in flight %d", n, age * 1000, busy)

    def observe_checkpoint(self, cp: Checkpoint, seconds: float, phases: dict[str, float]) -> None:
        """Each phase of the checkpoint into its histogram (decide is observed by each poll); one
        slower than SLOW_CHECKPOINT_S also logged."""
        for phase, spent in phases.items():
            self.metrics.poll_phase.labels(phase=phase).observe(spent)
        where = ", ".join(f"{k} {v * 1000:.0f}" for k, v in phases.items())
        states = sum(map(len, cp.changes.values()))
        args = (cp.records, states, len(cp.changes), seconds * 1000, cp.polls, cp.decide_s * 1000, where)
        what = "%d records, %d states of %d partitions in %.0f ms (%d polls since the last, deciding %.0f ms; %s)"
        if seconds >= SLOW_CHECKPOINT_S:
            log.warning("slow checkpoint: " + what, *args)
        else:
            log.debug("checkpoint: " + what, *args)

    async def decide_poll(self, records: dict[Any, Columns]) -> None:
        """Decide one poll and queue its outputs; what the next checkpoint must make durable
        goes into ``pending``."""
        try:
            await self._decide_poll(records)
        except BaseException:
            self.forget_all()  # the engine may have changed states it will not write
            raise

    async def checkpoint(self, cp: Checkpoint, turns: Turns, after: Turns | None = None) -> None:
        """Outputs acknowledged; the state changes queued on the changelog after the previous
        checkpoint's (``after``), acknowledged, then in the local store after the previous
        checkpoint's; then the offsets committed."""
        began = time.perf_counter()
        try:
            await asyncio.gather(*cp.acks)
            acked = time.perf_counter()
            if after is not None:
                await after.queued  # its failure is this one's: nothing later may be written
            turn = time.perf_counter()
            pending = await self.log_states(cp.changes)
            turns.queued.set_result(None)
            ends = await self.logged(pending)
            logged = time.perf_counter()
            if after is not None:
                await after.stored
            await self.store_states(pending, ends)
            turns.stored.set_result(None)
            stored = time.perf_counter()
            await self.commit(cp.offsets)
        except BaseException as exc:
            turns.fail(exc)
            self.forget_all()  # states ahead of what reached the changelog
            raise
        done = time.perf_counter()
        phases = {
            "outputs": acked - began, "queued": turn - acked,
            "changelog": logged - turn, "store": stored - logged, "commit": done - stored,
        }  # fmt: skip
        self.observe_checkpoint(cp, done - began, phases)

    async def commit(self, offsets: dict[Any, int]) -> None:
        """A checkpoint's offsets are stored: commit them with the others due, unless a commit
        went out less than half a ``commit_interval_s`` ago (checkpoints in turns would send
        one a partition, a dozen a second; they ride on the next, see :meth:`commit_if_due`)."""
        self.due.update(offsets)
        if self.spaced(self.clock()):
            await self.commit_due()

    def commit_if_due(self, now: float) -> None:
        """Commit the offsets left due once the spacing is over, without waiting for a checkpoint
        (a stream gone quiet has none)."""
        if self.due and self.spaced(now):
            self.enqueue(self.commit_due())

    def spaced(self, now: float) -> bool:
        """Whether the last commit went out at least COMMIT_SPACING of an interval before ``now``."""
        return now - self.committed_at >= self.settings.commit_interval_s * COMMIT_SPACING

    async def commit_due(self) -> None:
        """Commit the newest offsets stored: a checkpoint that finds a commit in flight leaves
        its offsets to the next commit, which carries every poll stored by then."""
        from aiokafka.errors import CommitFailedError

        async with self.committing:
            due, self.due = self.due, {}
            if not due:
                return  # committed with a later checkpoint's
            self.committed_at = self.clock()
            try:
                await self.consumer.commit(due)
            except CommitFailedError as exc:  # the group moved on; the new owner redoes them
                self.counts["commit_failed"] += 1
                log.warning("commit of pings failed (rebalance), they will be decided again: %s", exc)

    def forget_all(self) -> None:
        """Drop the states held (and so the polls decided since the last checkpoint, which
        are decided again after the restart the failure leads to)."""
        self.pending = Checkpoint()
        for view in self.views.values():
            view.forget()

    async def _decide_poll(self, records: dict[Any, Columns]) -> None:
        began = time.perf_counter()
        s, producer = self.settings, self.producer
        engine = self.live.engine  # one catalog per poll; a swap takes effect at the next one
        acks: list[Any] = []
        matched_before = engine.matched_pings
        batches: dict[int, Sequence[Ping | PresenceCheck]] = {}
        parsed = parse_poll([(cols.values, cols.keys) for cols in records.values()])
        for (tp, cols), (batch, rejected) in zip(records.items(), parsed, strict=True):
            p = tp.partition
            batches[p] = batch
            if rejected:
                letters = self.dead_letters(tp, cols, rejected)
                acks.extend(x.future for x in await send_records(producer, s.topic_pings_dlq, p, letters))
        pings = sum(len(cols) for cols in records.values())
        self.counts["pings"] += pings
        self.metrics.pings.inc(pings)
        decided = engine.decide_poll(batches, self.views, self.devices)
        outbox: list[tuple[bytes, bytes]] = []  # candidates, keyed by campaign (the budget step's key)
        for p, (found, candidates, gated) in decided.items():
            states = self.views[p]
            visits = self.open_visits.setdefault(p, set())
            for k, inside in states.visiting():
                if inside:
                    visits.add(k)
                else:
                    visits.discard(k)
            for reason, n in gated.by_reason().items():
                self.counts[f"gated:{reason}"] += n
                self.metrics.gated.labels(reason=reason).inc(n)
            for (outcome, reason), n in observe_decisions(self.metrics, found).items():
                self.counts[f"decision:{outcome}:{reason}"] += n
            sent = await send_records(producer, s.topic_decisions, p, found.records())
            acks.extend(x.future for x in sent)
            outbox.extend(((c.decision.campaign_id or "").encode(), candidate_bytes(c)) for c in candidates)
        acks.extend(x.future for x in await send_keyed(producer, outbox_topic(s), outbox, self.campaign_partitions))
        self.metrics.matched.inc(engine.matched_pings - matched_before)
        offsets = {tp: cols.offsets[-1] + 1 for tp, cols in records.items()}
        decide_s = time.perf_counter() - began
        self.pending.add({tp.partition: len(cols) for tp, cols in records.items()}, acks, offsets, decide_s)
        self.metrics.poll_phase.labels(phase="decide").observe(decide_s)

    def dead_letters(
        self, tp: Any, cols: Columns, rejected: list[tuple[int, PingRejected]]
    ) -> list[tuple[bytes | None, bytes]]:
        """(key, dead letter) of each rejected ping of a partition's poll, counted by reason;
        sent as one batch (a send per letter cost ~25 µs each, and a burst of bad pings from a
        broken app release would be a send per ping)."""
        now = datetime.now(UTC)
        letters: list[tuple[bytes | None, bytes]] = []
        for reason, n in Counter(exc.reason for _, exc in rejected).items():
            self.counts[f"invalid:{reason}"] += n
            self.metrics.invalid.labels(reason=reason).inc(n)
        for i, exc in rejected:
            value, key = cols.values[i], cols.keys[i]
            letter = DeadLetter.of(value, key, exc.reason, exc.detail, tp.topic, tp.partition, cols.offsets[i], now)
            letters.append((key, letter.dumps()))
        return letters

    async def log_states(self, changes: dict[int, Changes]) -> list[tuple[int, Changes, list[Sent]]]:
        """Queue the state changes on the changelog, partition by partition."""
        changelog = presence_changelog(self.settings)
        pending = []
        for p, rows in changes.items():
            if rows:
                await asyncio.sleep(0)  # a checkpoint's partitions in turns with the polls (see store_states)
                sent = await send_records(self.producer, changelog, p, zip(rows.encoded_ids(), rows.raws, strict=True))
                pending.append((p, rows, sent))
        return pending

    async def logged(self, pending: list[tuple[int, Changes, list[Sent]]]) -> list[int | None]:
        """Once the changelog acknowledged them: the offset after each partition's records."""
        return [await next_offset(sent) for _, _, sent in pending]

    async def store_states(self, pending: list[tuple[int, Changes, list[Sent]]], ends: list[int | None]) -> None:
        """The changes in the local stores, with the changelog offset they now reflect, a
        partition at a time in turns with the polls: a second's states are ~30k at full load,
        ~35 ms of RocksDB writes in one piece."""
        for (p, rows, _), end in zip(pending, ends, strict=True):
            await asyncio.sleep(0)
            self.stores[p].write_states(rows, end)
            self.views[p].written(rows)

    # ------------------------------------------------------------------ device records
    async def follow_devices(self) -> None:
        """Apply the device records that arrived since the last poll (a tombstone deletes)."""
        if not self.devices_consumer.assignment():
            return
        batch = await self.devices_consumer.getmany(timeout_ms=0)
        for tp, msgs in batch.items():
            if tp.partition in self.stores:
                self.apply_devices(tp.partition, msgs)

    def apply_devices(self, p: int, msgs: Sequence[Any]) -> None:
        changes: list[tuple[str, bytes | None]] = []
        for m in msgs:
            if m.key is None:
                continue
            if m.value is not None:
                try:
                    Device.loads(m.value)
                except ValueError as exc:
                    self.counts["bad_device_records"] += 1
                    log.warning("bad device record at %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
                    continue
            changes.append((m.key.decode(errors="replace"), m.value))
        self.stores[p].write_devices(changes, msgs[-1].offset + 1)

    # ------------------------------------------------------------------ rebalance
    async def assign(self, parts: set[int]) -> None:
        """Open the new partitions' stores and bring them up to date before any ping is decided."""
        async with self.lock:
            await self._assign(parts)

    async def _assign(self, parts: set[int]) -> None:
        s = self.settings
        new = sorted(parts - set(self.stores))
        local = self.local_store()
        for p in new:
            self.stores[p] = local.partition(p)
        changelog = presence_changelog(s)
        ends = await end_offsets(s, changelog, set(new))
        for p in new:
            if self.stores[p].next_offset(CHANGELOG_NEXT) > ends[p]:
                log.warning("local state of partition %d is ahead of %s (topic recreated?): rebuilt", p, changelog)
                self.stores[p].reset()
        restored = 0
        async for p, msgs in read_to_end(s, changelog, {p: self.stores[p].next_offset(CHANGELOG_NEXT) for p in new}):
            self.stores[p].write_states(((m.key.decode(), m.value) for m in msgs), msgs[-1].offset + 1)
            restored += len(msgs)
        async for p, msgs in read_to_end(
            s, s.topic_devices, {p: self.stores[p].next_offset(DEVICES_NEXT) for p in new}
        ):
            self.apply_devices(p, msgs)
        for p in new:
            self.open_visits[p] = {d for d, raw in self.stores[p].states() if DeviceState.loads(raw).visits}
            refresh_ms = int(s.state_refresh_s * 1000)
            self.views[p] = state_view(self.stores[p], load_kernel() if s.presence_book else None, 0, refresh_ms)
            self.devices[p] = StoreDevices(self.stores[p])
        self.share_cache()
        self.follow_devices_of(set(self.stores))
        self.metrics.set_assigned(decide_group(s), s.topic_pings, len(self.stores))
        log.info("decide partitions assigned: %s (restored %d state records)", sorted(parts), restored)

    def local_store(self) -> LocalStore:
        """The worker's local store, opened once (an older geopush's store per partition removed)."""
        if self.local is None:
            s = self.settings
            path = None if s.store == "memory" else s.data_dir / "state" / s.app_id / "presence"
            if path is not None and (gone := drop_per_partition_stores(path.parent, "presence")):
                log.info("removed %d local stores of one partition each: the changelog fills the shared one", len(gone))
            self.local = LocalStore(path)
        return self.local

    async def revoke(self, parts: set[int]) -> None:
        """Finish the checkpoints in flight and commit the offsets they stored (the revoked
        partitions' while they are still ours), then drop their state."""
        async with self.lock:
            await self.drain()  # commits every partition's stored offsets, while they are ours
            for p in parts:
                self.stores.pop(p, None)  # its keys stay in the local store, for when it comes back
                self.open_visits.pop(p, None)
                self.views.pop(p, None)
                self.devices.pop(p, None)
            self.share_cache()
            self.follow_devices_of(set(self.stores))
            self.metrics.set_assigned(decide_group(self.settings), self.settings.topic_pings, len(self.stores))

    def share_cache(self) -> None:
        """Split the worker's decoded-state budget evenly over its partitions."""
        for view in self.views.values():
            view.keep = self.settings.state_cache_devices // len(self.views)
        for book in self.devices.values():
            book.keep = max(1000, self.settings.state_cache_devices // 4 // len(self.devices))

    def follow_devices_of(self, parts: set[int]) -> None:
        from aiokafka import TopicPartition

        tps = [TopicPartition(self.settings.topic_devices, p) for p in sorted(parts)]
        self.devices_consumer.assign(tps)
        for tp in tps:
            self.devices_consumer.seek(tp, self.stores[tp.partition].next_offset(DEVICES_NEXT))

    # ------------------------------------------------------------------ silence and expiry
    async def sweep(self) -> int:
        """Ask the stream to end the visits of devices that went silent inside a fence.

        The check goes through the pings topic under the device's key, in its partition, so
        it is decided in order with the device's own pings by the same code as replay."""
        engine = self.live.engine
        if not engine.stream_ms or self.producer is None:
            return 0
        now = max(engine.stream_ms.values())
        async with self.lock:
            due = [
                (p, d) for p, ids in self.open_visits.items() for d in ids
                if (state := self.views[p].get(d)) is not None and engine.silent_visits(state, now)
            ]  # fmt: skip
        pings = self.settings.topic_pings
        acks = [
            await self.producer.send(pings, key=d.encode(), value=presence_check_bytes(d, now), partition=p)
            for p, d in due
        ]
        await asyncio.gather(*acks)
        if due:
            self.counts["presence_checks"] += len(due)
        return len(due)

    async def expire(self) -> int:
        """Delete idle devices' state (past the engine's TTL against the partition's stream time),
        locally and with a tombstone on the changelog. Reads without the lock, a slice at a time."""
        engine = self.live.engine
        gone: dict[int, list[str]] = {}
        keys = 0
        for p in list(self.stores):
            now = engine.stream_ms.get(p)
            store = self.stores.get(p)
            if now is None or store is None:
                continue
            for i, (device_id, raw) in enumerate(store.states()):
                keys += 1
                if now - DeviceState.ts_of(raw) > engine.ttl_ms:
                    gone.setdefault(p, []).append(device_id)
                if i % 10_000 == 9_999:
                    await asyncio.sleep(0)
                    if self.stores.get(p) is not store:
                        break
        self.metrics.table_keys.labels(table="presence").set(keys)
        deleted = 0
        async with self.lock:
            await self.drain()  # every decided state in the store before it is judged idle
            if self.failure is not None:
                return 0  # the views were dropped; the main loop stops on it
            for p, ids in gone.items():
                if p not in self.stores:
                    continue
                now = engine.stream_ms[p]
                ids = [
                    d for d in ids if (cur := self.stores[p].state(d)) and now - DeviceState.ts_of(cur) > engine.ttl_ms
                ]
                tombstones = ((d.encode(), None) for d in ids)
                sent = await send_records(self.producer, presence_changelog(self.settings), p, tombstones)
                self.stores[p].write_states(((d, None) for d in ids), await next_offset(sent))
                self.views[p].forget(ids)
                self.open_visits.get(p, set()).difference_update(ids)
                deleted += len(ids)
        if deleted:
            self.counts["expired_states"] += deleted
        return deleted


def observe_decisions(metrics: Metrics, found: Decisions, transitions: bool = True) -> Counter[tuple[str, str]]:
    """Decisions by outcome and reason, their latency from ping time, and (``transitions``:
    the decision step's) distinct transitions; returns the count of every (outcome, reason),
    notify candidates included.

    Notify candidates are counted once, by the budget step that makes them final. Counters are
    incremented once per label, not per decision (a labelled increment costs ~1.5 µs)."""
    now_ms = time.time() * 1000.0
    by_label = found.labels()
    ts_ms = found.ts_ms(notify=not transitions)  # a candidate waits for its budget
    observe_many(metrics.decision_latency, np.maximum(0.0, (now_ms - ts_ms) / 1000.0))
    for (outcome, reason), n in by_label.items():
        if not (transitions and outcome == "notify"):
            metrics.decisions.labels(outcome=outcome, reason=reason).inc(n)
    if transitions:
        for kind, n in found.transitions().items():
            metrics.transitions.labels(kind=kind).inc(n)
    return by_label


EXPIRE_EVERY_S = 900.0
GC_REPORT_S = 5.0


def register_decide(app: Any, settings: Settings) -> DecideLoop:
    """The decision step inside the worker, with the catalog loaded from settings and followed
    on the catalog topic (hot apply), the silence sweep and the idle-state expiry."""
    from geofences.load import load_catalog
    from streams.catalog_feed import CatalogFeed
    from streams.metrics import metrics_of

    with collections_paused():
        catalog = load_catalog([settings.catalog_path])
        live = LiveEngine(engine_for(catalog, settings), settings)
    metrics = metrics_of(app)
    counts: Counter[str] = Counter()
    metrics.set_catalog(catalog.version, len(catalog.fences))
    live.on_swap.append(lambda cat: metrics.set_catalog(cat.version, len(cat.fences)))
    log.info("catalog %s: %d stores, %d campaigns", catalog.version, len(catalog.stores), len(catalog.campaigns))
    loop = DecideLoop(settings, live, metrics, counts)

    def failed(version: str) -> None:
        counts["catalog_failures"] += 1
        metrics.catalog_failures.inc()

    feed = CatalogFeed(settings, lambda: live.engine.version, live.swap, failed)

    @app.task
    async def follow_catalog() -> None:
        await feed.run()

    @app.task
    async def decide() -> None:
        await loop.run()

    @app.timer(settings.presence_sweep_s)
    async def sweep_silent_devices() -> None:
        await loop.sweep()

    @app.timer(EXPIRE_EVERY_S)
    async def expire_idle_devices() -> None:
        await loop.expire()

    pauses = Pauses().install()

    @app.timer(GC_REPORT_S)
    async def report_gc_pauses() -> None:
        for generation, spent in pauses.drain().items():
            for seconds in spent:
                metrics.gc_pause.labels(generation=str(generation)).observe(seconds)

    @app.timer(30.0)
    async def report() -> None:
        if counts:
            log.info("counts %s", dict(sorted(counts.items())))

    return loop
