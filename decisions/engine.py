"""The decision engine: pings in, decisions and notification candidates out — no Kafka inside.

The stream (``streams.agents.decide``) and ``geopush replay`` run this same code; only where
device state and device records are kept differs (a Faust table or a dict), and the clock is
always the pings' own timestamps.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, SimpleNamespace
from typing import Protocol

import numpy as np

from decisions.caps import blocked_by_caps, effective_caps, longest_window
from decisions.pings import Ping, PresenceCheck
from decisions.presence import Inside, Rules, Step, quiet_step, step
from decisions.records import Decision, Device, Notification, Outcome, Transition
from decisions.schedule import blocked_at, closes_at, local_time, store_tz
from decisions.state import DeviceState
from geofences.catalog import Campaign, Caps, Store
from geofences.index import FenceIndex
from geofences.load import Catalog

DEFAULT_VALIDITY = timedelta(hours=2)
NAN = float("nan")
TEXTS_KEPT = 100_000  # rendered offer texts kept per engine (campaign x store x device locale)
NOWHERE: Inside = MappingProxyType({})  # what the index says about a ping in no fence (shared, read-only)


class StateStore(Protocol):
    def get(self, device_id: str) -> DeviceState | None: ...
    def put(self, device_id: str, state: DeviceState) -> None: ...


class DeviceBook(Protocol):
    def get(self, device_id: str) -> Device | None: ...


@dataclass(frozen=True)
class Candidate:
    """A notify decision waiting for the campaign's budget (the campaign-keyed step)."""

    decision: Decision
    notification: Notification
    budget: int | None


Decided = tuple[list[Decision], list[Candidate], list[tuple[Ping, str]]]  # one partition's batch


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
        self.texts: dict[tuple[str, str, str], tuple[str, str, str]] = {}  # see _text
        self.keep_ms = int(longest_window(list(self.caps.values())).total_seconds() * 1000)
        self.ttl_ms = max(int(rules.state_ttl_s * 1000), self.keep_ms)

    @classmethod
    def for_catalog(cls, catalog: Catalog, **rules: float) -> Engine:
        """The engine with the catalog's presence rules (accuracy, exit buffer); ``rules``
        overrides the others (``state_ttl_s``, ``presence_timeout_s``, ...)."""
        base = {"min_accuracy_m": catalog.defaults.min_accuracy_m, "exit_buffer_m": catalog.defaults.exit_buffer_m}
        return cls(catalog, Rules(**{**base, **rules}))

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
        everything = [p for batch in batches.values() for p in batch]
        seen = self.see(everything)
        out: dict[int, Decided] = {}
        start = 0
        for p, batch in batches.items():
            out[p] = self.decide(batch, states[p], devices[p], p, seen[start : start + len(batch)])
            start += len(batch)
        return out

    def see(self, pings: Sequence[Ping | PresenceCheck]) -> list[Inside]:
        """What the index says about each ping (presence checks: nowhere), in one call."""
        real = [p for p in pings if isinstance(p, Ping)]
        seen = self._match(real) if real else []
        if len(real) < len(pings):  # presence checks in the batch: align what was seen with pings
            matched = iter(seen)
            seen = [next(matched) if isinstance(p, Ping) else NOWHERE for p in pings]
        self.matched_pings += sum(1 for s in seen if s)
        return seen

    def decide(
        self, pings: Sequence[Ping | PresenceCheck], states: StateStore, devices: DeviceBook, partition: int = 0,
        seen: Sequence[Inside] | None = None,
    ) -> Decided:  # fmt: skip
        """(decisions, candidates, gated) for a batch of one partition, in ping order.

        Stream time (for the staleness gate) is the newest ping seen in that partition, since
        partitions are consumed at their own pace. ``gated`` lists pings a gate dropped or
        stopped from entering, with the reason (for metrics). ``seen``: what :meth:`see` said
        of these pings, if already asked."""
        decisions: list[Decision] = []
        candidates: list[Candidate] = []
        gated: list[tuple[Ping, str]] = []
        if not pings:
            return decisions, candidates, gated
        if seen is None:
            seen = self.see(pings)
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
                gated.append((ping, reason))
            if dropped:
                continue
            if result is not None and (
                result.entered or result.exited or result.blocked_enter or self._dwell_due(ping.ts_ms, state, seen[k])
            ):
                self._transitions(ping, state, result, seen[k], devices, decisions, candidates)
            state.prune_sent(ping.ts_ms, self.keep_ms)
            states.put(ping.device_id, state)
        self.stream_ms[partition] = stream_ms
        return decisions, candidates, gated

    def _check_presence(
        self, check: PresenceCheck, states: StateStore, devices: DeviceBook,
        decisions: list[Decision], candidates: list[Candidate],
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
    def _match(self, pings: Sequence[Ping]) -> list[Inside]:
        lat = np.fromiter((p.lat for p in pings), np.float64, len(pings))
        lng = np.fromiter((p.lng for p in pings), np.float64, len(pings))
        acc = np.fromiter((p.accuracy_m or 0.0 for p in pings), np.float64, len(pings))
        m = self.index.match_accuracy(lat, lng, acc)
        seen: list[Inside] = [NOWHERE] * len(pings)  # most pings are near no store
        assert m.certain is not None
        ids = self.index.store_ids
        for p, f, c in zip(m.ping.tolist(), m.fence.tolist(), m.certain.tolist(), strict=True):
            found = seen[p]
            if found is NOWHERE:
                seen[p] = found = {}
            assert isinstance(found, dict)
            found[ids[f]] = c
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
        decisions: list[Decision],
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
            for c in self.by_trigger.get((store_id, "enter"), []):
                why = result.gate or "uncertain_position"
                decisions.append(self._decision(ping, store_id, c.id, "enter", "suppressed", why, None))
        for store_id, visit_ms in result.exited:
            for c in self.by_trigger.get((store_id, "exit"), []):
                self._campaign(ping, state, store_id, visit_ms, c, "exit", dev(), decisions, candidates)
        for store_id in result.entered:
            visit_ms = state.visits[store_id].entered_ms
            for c in self.by_trigger.get((store_id, "enter"), []):
                self._campaign(ping, state, store_id, visit_ms, c, "enter", dev(), decisions, candidates)
        for store_id, visit in state.visits.items():
            if store_id not in inside:
                continue
            for c in self.by_trigger.get((store_id, "dwell"), []):
                if c.id in visit.fired or c.dwell_seconds is None:
                    continue
                if ping.ts_ms - visit.entered_ms >= c.dwell_seconds * 1000:
                    visit.fired.append(c.id)
                    self._campaign(ping, state, store_id, visit.entered_ms, c, "dwell", dev(), decisions, candidates)

    def _decision(
        self, ping: Ping, store_id: str, campaign_id: str | None, transition: Transition,
        outcome: Outcome, reason: str, nid: str | None,
    ) -> Decision:  # fmt: skip
        return Decision(
            device_id=ping.device_id, ts=utc(ping.ts_ms), store_id=store_id, campaign_id=campaign_id,
            transition=transition, outcome=outcome, reason=reason, notification_id=nid,
            catalog_version=self.catalog.version,
        )  # fmt: skip

    def _campaign(
        self, ping: Ping, state: DeviceState, store_id: str, visit_ms: int, c: Campaign,
        transition: Transition, device: Device | None,
        decisions: list[Decision], candidates: list[Candidate],
    ) -> None:  # fmt: skip
        store = self.stores[store_id]
        reason = None
        local = None
        if device is None:
            reason = "no_device"
        elif not device.opt_in:
            reason = "opted_out"
        else:
            local = local_time(ping.ts_ms, store_tz(store, self.catalog.defaults))
            reason = blocked_at(c, store, self.catalog.defaults, local)
            if reason is None:
                reason = blocked_by_caps(self.caps[c.id], state.sent, c.id, store_id, ping.ts_ms)
            if reason is None and not device.token:
                reason = "no_token"
        if reason is not None:
            decisions.append(self._decision(ping, store_id, c.id, transition, "suppressed", reason, None))
            return
        assert device is not None and local is not None
        nid = notification_id(ping.device_id, c.id, store_id, visit_ms)
        state.sent.append((ping.ts_ms, c.id, store_id))
        decision = self._decision(ping, store_id, c.id, transition, "notify", "ok", nid)
        notification = self._render(ping, store, c, device, nid, local)
        candidates.append(Candidate(decision, notification, self.caps[c.id].budget))

    def _render(
        self, ping: Ping, store: Store, c: Campaign, device: Device, nid: str, local: datetime
    ) -> Notification:  # fmt: skip
        """The push for this device: the offer's text in its locale, valid until the offer's
        validity or the store's closing, whichever is first (``local``: the store's time now)."""
        locale, title, body = self._text(store, c, device.locale)
        expires = local + (c.offer.valid_for or DEFAULT_VALIDITY)
        closing = closes_at(store, local)
        if closing is not None and closing < expires:
            expires = closing
        return Notification(
            notification_id=nid, device_id=ping.device_id, campaign_id=c.id, store_id=store.id,
            ts=utc(ping.ts_ms), locale=locale, title=title, body=body, deeplink=c.offer.deeplink,
            token=device.token, token_kind=device.token_kind, expires_at=expires.astimezone(UTC),
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


def apply_budget(candidate: Candidate, used: int) -> tuple[Decision, bool]:
    """The campaign-keyed step: (final decision, whether it spends one unit of budget)."""
    if candidate.budget is not None and used >= candidate.budget:
        d = candidate.decision.model_copy(update={"outcome": "suppressed", "reason": "budget", "notification_id": None})
        return d, False
    return candidate.decision, True
