"""The decision engine: pings in, decisions and notification candidates out — no Kafka inside.

The stream (``streams.agents.decide``) and ``geopush replay`` run this same code; only where
device state and device records are kept differs (a Faust table or a dict), and the clock is
always the pings' own timestamps.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, SimpleNamespace
from typing import Any, Protocol, cast

import numpy as np

from decisions.caps import CapsMs, blocked_by_caps_ms, effective_caps, longest_window
from decisions.decided import BOOK_TRIGGERS, Decisions, Gated, Rows, Written
from decisions.decision_row import DecisionRow
from decisions.notification_row import NotificationRow
from decisions.ping_columns import PingColumns, concatenated, of_pings
from decisions.pings import Ping, PresenceCheck
from decisions.presence import Inside, Rules, Step, quiet_step, step
from decisions.records import Device, Outcome, Transition
from decisions.schedule import blocked_at, closes_at, local_time, store_tz
from decisions.state import DeviceState
from geofences.catalog import Campaign, Caps, Store
from geofences.index import FenceIndex, load_kernel
from geofences.load import Catalog

DEFAULT_VALIDITY = timedelta(hours=2)
NAN = float("nan")
TEXTS_KEPT = 100_000  # rendered offer texts kept per engine (campaign x store x device locale)
SCHEDULES_KEPT = 100_000  # schedule answers kept per engine (see Engine._blocked_at)
MINUTE_MS = 60_000
NOWHERE: Inside = MappingProxyType({})  # what the index says about a ping in no fence (shared, read-only)
# the presence book's gate codes and triggers (kernel/src/presence.rs: GATES, EXIT, ENTER, DWELL)
GATE_NAMES = ("", "duplicate", "out_of_order", "stale", "impossible_jump", "low_accuracy", "drive_by")
# a device record as the book's campaign checks see it (kernel/src/campaigns.rs: NO_DEVICE...)
NO_DEVICE, OPTED_OUT, REACHABLE, NO_TOKEN = 0, 1, 2, 3


class StateStore(Protocol):
    def get(self, device_id: str) -> DeviceState | None: ...
    def put(self, device_id: str, state: DeviceState) -> None: ...


class DeviceBook(Protocol):
    def get(self, device_id: str) -> Device | None: ...


class BookStates(StateStore, Protocol):
    """A partition's states held by the native presence book (``geofences._kernel.PresenceBook``):
    :meth:`Engine.decide` steps gates and presence there and decides only campaigns here."""

    book: Any

    def prepare(self, engine: Any, device_ids: list[str]) -> None:
        """Configure the book for ``engine`` (if it is not yet) and load these devices' states."""


@dataclass(frozen=True)
class Found:
    """The index's matches for a batch: ping ``k`` is in ``fence[ptr[k]:ptr[k + 1]]``, with
    ``certain`` False where its accuracy circle crosses that fence's boundary; ``columns``:
    the batch's (kind, ts, lat, lng, accuracy, speed) arrays."""

    ptr: Any  # int64[n + 1]
    fence: Any  # int64[m]
    certain: Any  # bool[m]
    columns: tuple[Any, ...]

    def part(self, start: int, n: int) -> Found:
        """The matches of pings ``start`` to ``start + n``, numbered from 0."""
        lo, hi = int(self.ptr[start]), int(self.ptr[start + n])
        cols = tuple(c[start : start + n] for c in self.columns)
        return Found(self.ptr[start : start + n + 1] - lo, self.fence[lo:hi], self.certain[lo:hi], cols)


@dataclass(frozen=True)
class Candidate:
    """A notify decision waiting for the campaign's budget (the campaign-keyed step)."""

    decision: DecisionRow
    notification: NotificationRow
    budget: int | None


Decided = tuple[Decisions, list[Candidate], Gated]  # one partition's batch


def notification_id(device_id: str, campaign_id: str, store_id: str, visit_ms: int) -> str:
    """Stable id of the one push a visit may cause for a campaign: reprocessing cannot mint another."""
    raw = f"{device_id}|{campaign_id}|{store_id}|{visit_ms}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def pick_locale(device_locale: str, offered: Sequence[str], fallback: str) -> str:
    """Device locale, then its language, then the catalog default, then the first offered."""
    if device_locale in offered:
        return device_locale
    lang = device_locale.split("-")[0]
    if lang in offered:
        return lang
    if fallback in offered:
        return fallback
    return offered[0]


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class _Loaded:
    """The batch's view of device state: each device read once, the same object all batch long
    (gates, presence and the presence checks all change that one object)."""

    def __init__(self, states: StateStore) -> None:
        self.states = states
        self.loaded: dict[str, DeviceState | None] = {}

    def get(self, device_id: str) -> DeviceState | None:
        if device_id not in self.loaded:
            self.loaded[device_id] = self.states.get(device_id)
        return self.loaded[device_id]

    def put(self, device_id: str, state: DeviceState) -> None:
        self.loaded[device_id] = state
        self.states.put(device_id, state)


class Engine:
    """Decides, for a batch of pings, every transition and every campaign it may trigger."""

    def __init__(self, catalog: Catalog, rules: Rules, index: FenceIndex | None = None) -> None:
        self.catalog = catalog
        self.rules = rules
        self.index = index or FenceIndex(catalog.fences)
        self.index.warm()
        self.stream_ms: dict[int, int] = {}
        self.matched_pings = 0  # pings inside at least one fence (uncertain included), for metrics
        self.fence_of = {sid: i for i, sid in enumerate(self.index.store_ids)}
        self.stores: dict[str, Store] = {s.id: s for s in catalog.stores}
        self.by_trigger: dict[tuple[str, str], list[Campaign]] = defaultdict(list)
        for c in sorted(catalog.campaigns, key=lambda c: -c.priority):
            for sid in catalog.campaign_stores(c):
                self.by_trigger[(sid, c.trigger)].append(c)
        self.dwells: dict[str, list[tuple[str, float]]] = {  # store -> (campaign id, dwell ms) of its dwell campaigns
            sid: [(c.id, c.dwell_seconds * 1000) for c in cs if c.dwell_seconds is not None]
            for (sid, trigger), cs in self.by_trigger.items()
            if trigger == "dwell"
        }
        self.caps: dict[str, Caps] = {c.id: effective_caps(c.caps, catalog.defaults) for c in catalog.campaigns}
        self.caps_ms: dict[str, CapsMs] = {cid: CapsMs(caps) for cid, caps in self.caps.items()}
        self.tz_of: dict[str, str] = {s.id: store_tz(s, catalog.defaults) for s in catalog.stores}
        # the last ping's store-local time (a ping that triggers ten campaigns converts once)
        self._local: tuple[int, str, datetime] = (0, "", utc(0))
        self.texts: dict[tuple[str, str, str], tuple[str, str, str]] = {}  # see _text
        self.schedules: dict[tuple[str, str, str, int], str] = {}  # see _blocked_at
        self.keep_ms = int(longest_window(list(self.caps.values())).total_seconds() * 1000)
        self.ttl_ms = max(int(rules.state_ttl_s * 1000), self.keep_ms)
        self.campaign_of: dict[str, Campaign] = {c.id: c for c in catalog.campaigns}
        kernel = load_kernel()
        self.read_columns: Any = getattr(kernel, "columns", None)  # the batch's columns in one pass
        self._presence_catalog: Any = None
        self.book_config = self._book_config()  # the kernel's PresenceCatalog arguments

    def _book_config(self) -> tuple[Any, ...]:
        """The presence book's catalog: fences' stores, campaigns' caps, the campaigns due at
        each store by trigger with their schedule group (campaign, store hours, zone: what
        :meth:`_blocked_at` keys its answers by), rules, state TTL and longest cap window."""
        number = {c.id: i for i, c in enumerate(self.catalog.campaigns)}
        codes: dict[str, int] = {trigger: code for code, trigger in BOOK_TRIGGERS.items()}
        groups: dict[tuple[str, str, str], int] = {}
        due = []
        for (sid, trigger), cs in self.by_trigger.items():
            for c in cs:
                if trigger == "dwell" and c.dwell_seconds is None:
                    continue
                group = groups.setdefault(self._schedule_key(c, self.stores[sid]), len(groups))
                dwell_ms = c.dwell_seconds * 1000 if c.dwell_seconds is not None else 0.0
                due.append((codes[trigger], sid, number[c.id], group, float(dwell_ms)))
        caps = [self.caps_ms[c.id] for c in self.catalog.campaigns]
        r = self.rules
        return (
            list(self.index.store_ids),
            [(c.id, m.cooldown_ms, m.campaign_ms, m.campaign_max, m.device_ms, m.device_max)
             for c, m in zip(self.catalog.campaigns, caps, strict=True)],
            due,
            (r.min_accuracy_m, r.exit_buffer_m, r.max_age_s, r.drive_by_mps, r.impossible_mps,
             r.min_speed_interval_s, r.presence_timeout_s),
            self.ttl_ms,
            self.keep_ms,
            self.catalog.version,
        )  # fmt: skip

    @classmethod
    def for_catalog(cls, catalog: Catalog, **rules: float) -> Engine:
        """The engine with the catalog's presence rules (accuracy, exit buffer); ``rules``
        overrides the others (``state_ttl_s``, ``presence_timeout_s``, ...)."""
        base = {"min_accuracy_m": catalog.defaults.min_accuracy_m, "exit_buffer_m": catalog.defaults.exit_buffer_m}
        return cls(catalog, Rules(**{**base, **rules}))

    def presence_catalog(self, kernel: Any) -> Any:
        """This engine's catalog for the presence books (built at the first call, then shared)."""
        if self._presence_catalog is None:
            self._presence_catalog = kernel.PresenceCatalog(*self.book_config)
        return self._presence_catalog

    @property
    def version(self) -> str:
        return self.catalog.version

    def decide_poll(
        self, batches: Mapping[int, Sequence[Ping | PresenceCheck]], states: Mapping[int, StateStore],
        devices: Mapping[int, DeviceBook],
    ) -> dict[int, Decided]:  # fmt: skip
        """:meth:`decide` for a poll of several partitions: every ping matched in one vectorised
        call (a few hundred pings per partition cost twice as much per ping to match alone),
        then each partition decided with its own state and device records."""
        parts = list(batches.values())
        everything: Sequence[Ping | PresenceCheck]
        if all(isinstance(b, PingColumns) for b in parts):
            everything = concatenated(cast(list[PingColumns], parts))
        else:
            everything = [p for batch in parts for p in batch]
        found = self.found(everything)
        if len(batches) > 1 and all(getattr(states[p], "book", None) is not None for p in batches):
            return self._decide_books(batches, cast(Mapping[int, BookStates], states), devices, everything, found)
        out: dict[int, Decided] = {}
        start = 0
        for p, batch in batches.items():
            out[p] = self.decide(batch, states[p], devices[p], p, found.part(start, len(batch)))
            start += len(batch)
        return out

    def found(self, pings: Sequence[Ping | PresenceCheck]) -> Found:
        """What the index says about each ping (presence checks: nowhere), in one call."""
        n = len(pings)
        read = self.read_columns
        if isinstance(pings, PingColumns):
            columns = pings.columns
        else:
            columns = read(list(pings), Ping) if read is not None else of_pings(pings).columns
        kind, _, lat, lng, acc, _ = columns
        real: Any = None  # positions of the pings among the items (None: all are pings)
        if kind.any():
            real = np.flatnonzero(kind == 0)
            lat, lng, acc = lat[real], lng[real], acc[real]
        acc = np.where(np.isnan(acc), 0.0, acc)
        m = self.index.match_accuracy(lat, lng, acc)
        assert m.certain is not None
        where = m.ping if real is None else real[m.ping]
        counts = np.bincount(where, minlength=n)
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        self.matched_pings += int(np.count_nonzero(counts))
        return Found(ptr, m.fence, m.certain, columns)

    def see(self, pings: Sequence[Ping | PresenceCheck]) -> list[Inside]:
        """What the index says about each ping, as store id -> certain (presence checks: nowhere)."""
        return self._inside(self.found(pings))

    def decide(
        self, pings: Sequence[Ping | PresenceCheck], states: StateStore, devices: DeviceBook, partition: int = 0,
        found: Found | None = None,
    ) -> Decided:  # fmt: skip
        """(decisions, candidates, gated) for a batch of one partition, in ping order.

        Stream time (for the staleness gate) is the newest ping seen in that partition, since
        partitions are consumed at their own pace. ``gated`` lists pings a gate dropped or
        stopped from entering, with the reason (for metrics). ``found``: what :meth:`found`
        said of these pings, if already asked. States held by the native presence book
        (:class:`BookStates`) are stepped there; any other store, here in Python."""
        if not pings:
            return Rows([]), [], Gated(pings, [], [])
        if found is None:
            found = self.found(pings)
        book = getattr(states, "book", None)
        if book is not None:
            return self._decide_book(pings, cast(BookStates, states), devices, partition, found)
        return self._decide_python(pings, states, devices, partition, self._inside(found))

    def _decide_python(
        self, pings: Sequence[Ping | PresenceCheck], states: StateStore, devices: DeviceBook, partition: int,
        seen: Sequence[Inside],
    ) -> Decided:  # fmt: skip
        decisions: list[DecisionRow] = []
        candidates: list[Candidate] = []
        gated_at: list[int] = []
        gated_why: list[str] = []
        states = _Loaded(states)
        away = self._away_distances(pings, seen, states)
        stream_ms = self.stream_ms.get(partition, 0)
        for k, ping in enumerate(pings):
            if isinstance(ping, PresenceCheck):
                self._check_presence(ping, states, devices, decisions, candidates)
                continue
            stream_ms = max(stream_ms, ping.ts_ms)
            state = states.get(ping.device_id)
            if state is None or ping.ts_ms - state.ts_ms > self.ttl_ms:
                state = DeviceState()  # new, or idle past the TTL: start afresh
                states.loaded[ping.device_id] = state
            result: Step | None = None
            if not (seen[k] or state.visits or state.held):  # most pings: near no store, none to leave
                reason, dropped = quiet_step(ping, state, stream_ms, self.rules)
            else:
                outside = self._outside(k, state, seen[k], away) if state.visits else {}
                result = step(ping, state, seen[k], outside, stream_ms, self.rules)
                reason, dropped = result.gate, result.dropped
            if reason is not None:
                gated_at.append(k)
                gated_why.append(reason)
            if dropped:
                continue
            if result is not None and (
                result.entered or result.exited or result.blocked_enter or self._dwell_due(ping.ts_ms, state, seen[k])
            ):
                self._transitions(ping, state, result, seen[k], devices, decisions, candidates)
            state.prune_sent(ping.ts_ms, self.keep_ms)
            states.put(ping.device_id, state)
        self.stream_ms[partition] = stream_ms
        return Rows(decisions), candidates, Gated(pings, gated_at, gated_why)

    def _decide_book(
        self, pings: Sequence[Ping | PresenceCheck], states: BookStates, devices: DeviceBook, partition: int,
        found: Found,
    ) -> Decided:  # fmt: skip
        """:meth:`decide` with gates, presence and campaign checks done by the native presence
        book, which writes the suppressions' records itself (:class:`Written`) and returns the
        notifications, rendered here by the Python path's code. The book asks this engine for
        device records and schedule answers (``schedule_answer``)."""
        return self._decide_books({partition: pings}, {partition: states}, {partition: devices}, pings, found)[
            partition
        ]

    def _decide_books(
        self, batches: Mapping[int, Sequence[Ping | PresenceCheck]], states: Mapping[int, BookStates],
        devices: Mapping[int, DeviceBook], everything: Sequence[Ping | PresenceCheck], found: Found,
    ) -> dict[int, Decided]:  # fmt: skip
        """:meth:`_decide_book` for a poll's partitions, all in one call of the kernel
        (``PresenceBook.decide_many``; one partition alone too): ``everything`` and ``found``
        are the poll's pings, the partitions' end to end."""
        bounds = [0]
        for p, batch in batches.items():
            states[p].prepare(self, _ids(batch))
            bounds.append(bounds[-1] + len(batch))
        books = [states[p].book for p in batches]
        kind, ts, lat, lng, acc, speed = found.columns
        answers = type(books[0]).decide_many(
            books, bounds, _ids(everything), kind, ts, lat, lng, acc, speed, found.ptr, found.fence, found.certain,
            [self.stream_ms.get(p, 0) for p in batches], self.index.signed_distance_m,
            [_status_of(devices[p]) for p in batches], self.schedule_answer,
        )  # fmt: skip
        return {
            p: self._decided(batch, devices[p], p, answer)
            for (p, batch), answer in zip(batches.items(), answers, strict=True)
        }

    def _decided(
        self, pings: Sequence[Ping | PresenceCheck], devices: DeviceBook, partition: int, answer: Any
    ) -> Decided:
        """A partition's answer from the book, as :meth:`decide` returns it: its notifications
        rendered, its gates named."""
        codes, notify, stream_ms, suppressed = answer
        self.stream_ms[partition] = stream_ms
        names = GATE_NAMES
        stopped = np.flatnonzero(codes)
        gated = Gated(pings, stopped.tolist(), [names[c] for c in codes[stopped].tolist()])
        candidates: list[Candidate] = []
        for k, what, store_id, campaign_id, visit_ms in notify:
            at = pings[k]
            device = devices.get(at.device_id)
            assert device is not None  # the book asked for it: reachable
            c = self.campaign_of[campaign_id]
            self._notify(at, store_id, visit_ms, c, BOOK_TRIGGERS[what], device, candidates)
        return Written(suppressed, pings, self.catalog.version), candidates, gated

    def _check_presence(
        self, check: PresenceCheck, states: StateStore, devices: DeviceBook,
        decisions: list[DecisionRow], candidates: list[Candidate],
    ) -> None:  # fmt: skip
        """End the visits a silent device has not confirmed for the presence timeout."""
        state = states.get(check.device_id)
        if state is None or check.ts_ms <= state.ts_ms:
            return  # unknown, or the device spoke since the check was sent
        timeout_ms = self.rules.presence_timeout_s * 1000
        gone = [(s, v.entered_ms) for s, v in state.visits.items() if check.ts_ms - v.last_in_ms > timeout_ms]
        if not gone:
            return
        for store_id, _ in gone:
            del state.visits[store_id]
        tick = Ping(check.device_id, check.ts_ms, state.lat or 0.0, state.lng or 0.0)
        self._transitions(tick, state, Step(exited=gone), NOWHERE, devices, decisions, candidates)
        states.put(check.device_id, state)

    def silent_visits(self, state: DeviceState, now_ms: int) -> bool:
        """Whether a presence check would end one of this device's visits at ``now_ms``."""
        timeout_ms = self.rules.presence_timeout_s * 1000
        return any(now_ms - v.last_in_ms > timeout_ms for v in state.visits.values())

    # ------------------------------------------------------------------ internals
    def _inside(self, found: Found) -> list[Inside]:
        """Each ping's matches as store id -> certain, in the index's order."""
        n = len(found.ptr) - 1
        seen: list[Inside] = [NOWHERE] * n  # most pings are near no store
        if not len(found.fence):
            return seen
        ids = self.index.store_ids
        pings = np.repeat(np.arange(n), np.diff(found.ptr))
        for p, f, c in zip(pings.tolist(), found.fence.tolist(), found.certain.tolist(), strict=True):
            inside = seen[p]
            if inside is NOWHERE:
                seen[p] = inside = {}
            assert isinstance(inside, dict)
            inside[ids[f]] = c
        return seen

    def _away_distances(
        self, pings: Sequence[Ping | PresenceCheck], seen: Sequence[Inside], states: _Loaded
    ) -> dict[tuple[int, str], float]:
        """Signed distances, in one vectorised call, from each ping to every store its device
        may be visiting without being inside it: the visits the device had before the batch
        and every store it was seen in earlier in the batch (a superset of its visits then)."""
        maybe: dict[str, set[str]] = {}
        which: list[tuple[int, str]] = []
        for k, ping in enumerate(pings):
            if not isinstance(ping, Ping):
                continue
            visiting = maybe.get(ping.device_id)
            if visiting is None:
                state = states.get(ping.device_id)
                visiting = maybe[ping.device_id] = set(state.visits) if state is not None else set()
            inside = seen[k]
            if visiting:
                for store in visiting:
                    if store not in inside and store in self.fence_of:
                        which.append((k, store))
            if inside:
                visiting.update(inside)
        if not which:
            return {}
        at = [pings[k] for k, _ in which]
        fences = np.fromiter((self.fence_of[store] for _, store in which), np.int64, len(which))
        lat = np.fromiter((p.lat for p in at if isinstance(p, Ping)), np.float64, len(which))
        lng = np.fromiter((p.lng for p in at if isinstance(p, Ping)), np.float64, len(which))
        return dict(zip(which, self.index.signed_distance_m(fences, lat, lng).tolist(), strict=True))

    def _outside(
        self, k: int, state: DeviceState, inside: Inside, away: dict[tuple[int, str], float]
    ) -> dict[str, float]:
        """Distance to each store the device is visiting but ping ``k`` is not inside (NaN: the
        store left the catalog)."""
        return {s: away.get((k, s), NAN) for s in state.visits if s not in inside}

    def _dwell_due(self, ts_ms: int, state: DeviceState, inside: Inside) -> bool:
        """Whether a visit the ping confirms has a dwell campaign due and not yet fired (most
        pings of a dwelling device: none, so the transitions step is skipped)."""
        if not state.visits:
            return False
        for store_id in inside:
            visit = state.visits.get(store_id)
            if visit is None:
                continue
            for campaign_id, dwell_ms in self.dwells.get(store_id, ()):
                if ts_ms - visit.entered_ms >= dwell_ms and campaign_id not in visit.fired:
                    return True
        return False

    def _transitions(
        self,
        ping: Ping,
        state: DeviceState,
        result: Step,
        inside: Inside,
        devices: DeviceBook,
        decisions: list[DecisionRow],
        candidates: list[Candidate],
    ) -> None:
        device: Device | None = None
        looked = False

        def dev() -> Device | None:
            nonlocal device, looked
            if not looked:
                device, looked = devices.get(ping.device_id), True
            return device

        for store_id in result.blocked_enter:
            self._enter_suppressed(ping, store_id, result.gate or "uncertain_position", decisions)
        for store_id, visit_ms in result.exited:
            for c in self.by_trigger.get((store_id, "exit"), []):
                self._campaign(ping, state.sent, store_id, visit_ms, c, "exit", dev(), decisions, candidates)
        for store_id in result.entered:
            visit_ms = state.visits[store_id].entered_ms
            for c in self.by_trigger.get((store_id, "enter"), []):
                self._campaign(ping, state.sent, store_id, visit_ms, c, "enter", dev(), decisions, candidates)
        for store_id, visit in state.visits.items():
            if store_id not in inside:
                continue
            for c in self.by_trigger.get((store_id, "dwell"), []):
                if c.id in visit.fired or c.dwell_seconds is None:
                    continue
                if ping.ts_ms - visit.entered_ms >= c.dwell_seconds * 1000:
                    visit.fired.append(c.id)
                    self._campaign(
                        ping, state.sent, store_id, visit.entered_ms, c, "dwell", dev(), decisions, candidates
                    )

    def _enter_suppressed(
        self, ping: Ping | PresenceCheck, store_id: str, why: str, decisions: list[DecisionRow]
    ) -> None:
        """Each enter campaign of a store the ping could not enter, suppressed for ``why``."""
        for c in self.by_trigger.get((store_id, "enter"), []):
            decisions.append(self._decision(ping, store_id, c.id, "enter", "suppressed", why, None))

    def _decision(
        self, ping: Ping | PresenceCheck, store_id: str, campaign_id: str | None, transition: Transition,
        outcome: Outcome, reason: str, nid: str | None,
    ) -> DecisionRow:  # fmt: skip
        return DecisionRow(
            ping.device_id, ping.ts_ms, store_id, campaign_id, transition, outcome, reason, nid, self.catalog.version
        )

    def _local_time(self, ts_ms: int, tz: str) -> datetime:
        """``local_time(ts_ms, tz)``, remembered for the last ping and zone."""
        at, zone, when = self._local
        if at != ts_ms or zone != tz:
            when = local_time(ts_ms, tz)
            self._local = (ts_ms, tz, when)
        return when

    def _schedule_key(self, c: Campaign, store: Store) -> tuple[str, str, str]:
        """What a campaign's schedule answer at a store depends on besides the time: the
        campaign, the store's own hours if the campaign respects them, and its zone."""
        hours = store.id if c.respect_store_hours and store.hours is not None else ""
        return (c.id, hours, self.tz_of[store.id])

    def _blocked_at(self, c: Campaign, store: Store, ts_ms: int) -> str | None:
        """``blocked_at`` at the store's local time, answered once per campaign, store hours,
        zone and minute: every rule it checks changes only on a whole local minute (dates,
        weekdays, HH:MM windows), and a zone whose offset is whole minutes keeps local minutes
        aligned with UTC ones. A campaign over 100k cafés asks it ~0.4 times a ping."""
        key = (*self._schedule_key(c, store), ts_ms // MINUTE_MS)
        known = self.schedules.get(key)
        if known is not None:
            return known or None
        reason, whole_minute = self._schedule(c, store, ts_ms)
        if whole_minute:
            if len(self.schedules) >= SCHEDULES_KEPT:
                self.schedules.clear()  # answers for minutes long past: start over rather than grow
            self.schedules[key] = reason or ""
        return reason

    def schedule_answer(self, campaign_id: str, store_id: str, ts_ms: int) -> tuple[str | None, bool]:
        """The presence book's question: why a campaign may not send at a store at ``ts_ms``
        (None: it may), and whether that answer holds for the whole UTC minute (the book
        keeps it per schedule group and minute, as :meth:`_blocked_at` does)."""
        return self._schedule(self.campaign_of[campaign_id], self.stores[store_id], ts_ms)

    def _schedule(self, c: Campaign, store: Store, ts_ms: int) -> tuple[str | None, bool]:
        local = self._local_time(ts_ms, self.tz_of[store.id])
        offset = local.utcoffset()
        whole_minute = offset is not None and offset.seconds % 60 == 0 and offset.microseconds == 0
        return blocked_at(c, store, self.catalog.defaults, local), whole_minute

    def _campaign(
        self, ping: Ping | PresenceCheck, sent: list[tuple[int, str, str]], store_id: str, visit_ms: int, c: Campaign,
        transition: Transition, device: Device | None,
        decisions: list[DecisionRow], candidates: list[Candidate],
    ) -> None:  # fmt: skip
        store = self.stores[store_id]
        reason = None
        if device is None:
            reason = "no_device"
        elif not device.opt_in:
            reason = "opted_out"
        else:
            reason = self._blocked_at(c, store, ping.ts_ms)
            if reason is None:
                reason = blocked_by_caps_ms(self.caps_ms[c.id], sent, c.id, store_id, ping.ts_ms)
            if reason is None and not device.token:
                reason = "no_token"
        if reason is not None:
            decisions.append(self._decision(ping, store_id, c.id, transition, "suppressed", reason, None))
            return
        assert device is not None
        sent.append((ping.ts_ms, c.id, store_id))
        self._notify(ping, store_id, visit_ms, c, transition, device, candidates)

    def _notify(
        self, ping: Ping | PresenceCheck, store_id: str, visit_ms: int, c: Campaign, transition: Transition,
        device: Device, candidates: list[Candidate],
    ) -> None:  # fmt: skip
        """A campaign that passed every check: its candidate, waiting for the budget step."""
        local = self._local_time(ping.ts_ms, self.tz_of[store_id])
        nid = notification_id(ping.device_id, c.id, store_id, visit_ms)
        decision = self._decision(ping, store_id, c.id, transition, "notify", "ok", nid)
        notification = self._render(ping, self.stores[store_id], c, device, nid, local)
        candidates.append(Candidate(decision, notification, self.caps[c.id].budget))

    def _render(
        self, ping: Ping | PresenceCheck, store: Store, c: Campaign, device: Device, nid: str, local: datetime
    ) -> NotificationRow:  # fmt: skip
        """The push for this device: the offer's text in its locale, valid until the offer's
        validity or the store's closing, whichever is first (``local``: the store's time now)."""
        locale, title, body = self._text(store, c, device.locale)
        expires = local + (c.offer.valid_for or DEFAULT_VALIDITY)
        closing = closes_at(store, local)
        if closing is not None and closing < expires:
            expires = closing
        return NotificationRow(
            nid, ping.device_id, c.id, store.id, ping.ts_ms, locale, title, body, c.offer.deeplink, device.token,
            device.token_kind, expires,
        )  # fmt: skip

    def _text(self, store: Store, c: Campaign, device_locale: str) -> tuple[str, str, str]:
        """(locale, title, body) of a campaign's offer at a store for a device locale, filled in
        once per combination (the catalog does not change under an engine)."""
        key = (c.id, store.id, device_locale)
        found = self.texts.get(key)
        if found is not None:
            return found
        locale = pick_locale(device_locale, list(c.offer.text), self.catalog.defaults.locale)
        text = c.offer.text[locale]
        fields = SimpleNamespace(
            store=SimpleNamespace(name=store.local_name(locale), id=store.id, address=store.address or ""),
            campaign=SimpleNamespace(id=c.id, name=c.name or c.id),
        )
        found = (locale, text.title.format(**vars(fields)), text.body.format(**vars(fields)))
        if len(self.texts) >= TEXTS_KEPT:
            self.texts.clear()  # a huge catalog's long tail: start over rather than grow
        self.texts[key] = found
        return found


def _ids(pings: Sequence[Ping | PresenceCheck]) -> list[str]:
    """The pings' device ids (the columns' own list, where they are columns)."""
    return pings.ids if isinstance(pings, PingColumns) else [p.device_id for p in pings]


def _status_of(devices: DeviceBook) -> Callable[[str], int]:
    """What the presence book asks of a partition's device records: a device's status."""
    return lambda device_id: device_status(devices.get(device_id))


def device_status(device: Device | None) -> int:
    """A device record as the presence book's campaign checks see it."""
    if device is None:
        return NO_DEVICE
    if not device.opt_in:
        return OPTED_OUT
    return REACHABLE if device.token else NO_TOKEN


def apply_budget(decision: DecisionRow, budget: int | None, used: int) -> tuple[DecisionRow, bool]:
    """The campaign-keyed step: a notify decision of a campaign with ``budget`` (None: no
    limit) of which ``used`` is spent -> (final decision, whether it spends one unit)."""
    if budget is not None and used >= budget:
        return decision.suppressed("budget"), False
    return decision, True
