"""Gates and presence: is this ping trustworthy, and which fences did the device enter or leave?

Pure functions of (ping, device state, what the index says, rules). A ping that fails a
gate either changes nothing (``stale``, ``out_of_order``, ``duplicate``, ``impossible_jump``)
or may keep and end visits but not start one (``low_accuracy``, ``drive_by``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from decisions.pings import Ping
from decisions.state import DeviceState, Visit
from geofences.geodesy import distance_m_one


@dataclass(frozen=True)
class Rules:
    """Presence rules; the catalog gives accuracy and exit buffer, the settings the rest."""

    min_accuracy_m: float = 100.0
    exit_buffer_m: float = 30.0
    max_age_s: float = 600.0  # older than stream time by more than this: stale
    drive_by_mps: float = 7.0  # faster than ~25 km/h: passing by, not visiting
    impossible_mps: float = 70.0  # faster than ~250 km/h between pings: a GPS glitch
    min_speed_interval_s: float = 10.0  # derive speed only over at least this long
    presence_timeout_s: float = 1800.0  # silent this long inside: the visit ends
    state_ttl_s: float = 35 * 86400.0  # idle this long: the device's state is forgotten


Inside = Mapping[str, bool]
"""What the index says about one ping: store id -> whether the accuracy circle lies wholly
inside its fence (``False``: it straddles the boundary, uncertain), in the index's order."""


@dataclass
class Step:
    """The outcome of one ping for one device."""

    gate: str | None = None  # why the ping could not start a visit (or was dropped)
    dropped: bool = False  # the ping changed nothing
    entered: list[str] = field(default_factory=list)
    exited: list[tuple[str, int]] = field(default_factory=list)  # (store, visit entered_ms)
    blocked_enter: list[str] = field(default_factory=list)  # inside, but a gate said no (once)


def gate(ping: Ping, state: DeviceState | None, stream_ms: int, rules: Rules) -> tuple[str | None, bool]:
    """(reason, dropped): the first gate the ping fails, and whether it is dropped entirely."""
    if state is not None and state.ts_ms:
        if ping.ts_ms == state.ts_ms:
            return "duplicate", True
        if ping.ts_ms < state.ts_ms:
            return "out_of_order", True
    if stream_ms - ping.ts_ms > rules.max_age_s * 1000:
        return "stale", True
    speed = ping.speed_mps
    if state is not None and state.lat is not None and state.lng is not None and state.ts_ms:
        dt = (ping.ts_ms - state.ts_ms) / 1000.0
        moved = distance_m_one(state.lat, state.lng, ping.lat, ping.lng)
        if dt > 0 and moved / dt > rules.impossible_mps and moved > 1000:
            return "impossible_jump", True
        if speed is None and dt >= rules.min_speed_interval_s:
            speed = moved / dt
    if ping.accuracy_m is not None and ping.accuracy_m > rules.min_accuracy_m:
        return "low_accuracy", False
    if speed is not None and speed > rules.drive_by_mps:
        return "drive_by", False
    return None, False


def step(
    ping: Ping,
    state: DeviceState,
    inside: Inside,
    outside_m: dict[str, float],
    stream_ms: int,
    rules: Rules,
) -> Step:
    """Advance ``state`` (in place) by one ping. ``outside_m`` gives, for each store the device
    is visiting but the ping is not inside, the signed distance to its boundary (NaN: the store
    is gone from the catalog)."""
    reason, dropped = gate(ping, state, stream_ms, rules)
    out = Step(gate=reason, dropped=dropped)
    if dropped:
        return out
    acc = ping.accuracy_m or 0.0
    for store_id, visit in list(state.visits.items()):
        if store_id in inside:
            visit.last_in_ms = ping.ts_ms
            continue
        d = outside_m.get(store_id, float("nan"))
        timed_out = ping.ts_ms - visit.last_in_ms > rules.presence_timeout_s * 1000
        if d != d or timed_out or d - acc > rules.exit_buffer_m:
            out.exited.append((store_id, visit.entered_ms))
            del state.visits[store_id]
    for store_id, certain in inside.items():
        if store_id in state.visits:
            continue
        if reason is not None or not certain:
            if store_id not in state.held:  # say it once per approach, not once per ping
                state.held.append(store_id)
                out.blocked_enter.append(store_id)
            continue
        state.visits[store_id] = Visit(ping.ts_ms, ping.ts_ms)
        out.entered.append(store_id)
    if state.held:
        state.held = [h for h in state.held if h in inside and h not in state.visits]
    _settle(ping, state, reason)
    return out


def quiet_step(ping: Ping, state: DeviceState, stream_ms: int, rules: Rules) -> tuple[str | None, bool]:
    """:func:`step` for the usual ping — in no fence, by a device visiting and holding none —
    without building a Step: only the gates and the last position can change. (gate, dropped)."""
    reason, dropped = gate(ping, state, stream_ms, rules)
    if not dropped:
        _settle(ping, state, reason)
    return reason, dropped


def _settle(ping: Ping, state: DeviceState, reason: str | None) -> None:
    """Record the accepted ping: its time, and its position unless too inaccurate to trust."""
    state.ts_ms = ping.ts_ms
    if reason != "low_accuracy":
        state.lat, state.lng = ping.lat, ping.lng
