"""The engine decides a batch exactly as it decides the same pings one at a time.

Batching is only a speed-up (one vectorised match, one read of each device's state, exit
distances computed for the whole batch), so any batch size must give the same decisions,
candidates, gates and final states as batches of one ping."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from decisions.engine import Engine
from decisions.pings import Ping, parse_ping
from decisions.presence import Rules, quiet_step, step
from decisions.replay import DictStates
from decisions.state import DeviceState
from geofences.load import load_catalog
from streams.phones import simulate
from tests.conftest import REPO

START_MS = 1795489200000  # 2026-11-24T12:00:00+09:00


def run(
    engine: Engine, pings: list[Ping], devices: dict[str, object], size: int
) -> tuple[list[list[bytes]], DictStates]:
    """(decisions, candidates' notifications, gated pings) in order, and the final states."""
    engine.stream_ms.clear()
    states = DictStates()
    out: list[list[bytes]] = [[], [], []]
    for i in range(0, len(pings), size):
        decisions, candidates, gated = engine.decide(pings[i : i + size], states, devices)  # type: ignore[arg-type]
        out[0] += [d.dumps() for d in decisions]
        out[1] += [c.notification.dumps() for c in candidates]
        out[2] += [orjson.dumps([p.device_id, p.ts_ms, why]) for p, why in gated]
    return out, states


def simulated(seed: int) -> tuple[Engine, list[Ping], dict[str, object]]:
    """The example catalog's engine, and 300 simulated phones' pings and device records."""
    catalog = load_catalog([REPO / "config" / "catalog"])
    records, sim = simulate(catalog, 300, START_MS, seed=seed, spread_s=120.0)
    pings = [parse_ping(orjson.dumps(p.body)) for p in sim]
    return Engine.for_catalog(catalog), pings, {d.device_id: d for d in records}


def test_batches_decide_like_single_pings() -> None:
    engine, pings, devices = simulated(11)
    one, one_states = run(engine, pings, devices, 1)
    assert len(one[0]) > 50 and one[1] and len(one[2]) > 50  # the mix enters, dwells, exits and is gated
    for size in (7, 500, len(pings)):
        many, many_states = run(engine, pings, devices, size)
        assert many == one, size
        assert {k: v.dumps() for k, v in many_states.items()} == {k: v.dumps() for k, v in one_states.items()}


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-5_000, 700_000), st.floats(34.9, 35.1), st.floats(138.9, 139.1),
    st.one_of(st.none(), st.floats(0, 300)), st.one_of(st.none(), st.floats(0, 40)),
    st.one_of(st.none(), st.tuples(st.floats(34.9, 35.1), st.floats(138.9, 139.1))),
)  # fmt: skip
def test_quiet_step_is_step_for_a_ping_in_no_fence(
    dt: int, lat: float, lng: float, acc: float | None, speed: float | None, last: tuple[float, float] | None
) -> None:
    rules = Rules()
    t0 = START_MS
    ping = Ping("d", t0 + dt, lat, lng, acc, speed)
    a = DeviceState(ts_ms=t0, lat=last[0] if last else None, lng=last[1] if last else None)
    b = DeviceState.loads(a.dumps())
    full = step(ping, a, {}, {}, t0 + 300_000, rules)
    assert quiet_step(ping, b, t0 + 300_000, rules) == (full.gate, full.dropped)
    assert a.dumps() == b.dumps()


def test_a_poll_matched_at_once_decides_like_its_partitions_one_by_one() -> None:
    """The worker matches a whole poll (every partition) in one call, then decides each partition."""
    engine, pings, devices = simulated(5)
    parts = 3

    def by_partition(chunk: list[Ping]) -> dict[int, list[Ping]]:
        out: dict[int, list[Ping]] = {p: [] for p in range(parts)}
        for ping in chunk:
            out[sum(ping.device_id.encode()) % parts].append(ping)
        return out

    results = []
    for at_once in (False, True):
        engine.stream_ms.clear()
        states = {p: DictStates() for p in range(parts)}
        out: list[bytes] = []
        for i in range(0, len(pings), 400):
            batches = by_partition(pings[i : i + 400])
            if at_once:
                decided = engine.decide_poll(batches, states, dict.fromkeys(batches, devices))  # type: ignore[arg-type]
            else:
                decided = {p: engine.decide(b, states[p], devices, p) for p, b in batches.items()}  # type: ignore[arg-type]
            for p, (decisions, candidates, gated) in sorted(decided.items()):
                out += [x for k, v in decisions.records() for x in (v, b"key " + k)]
                out += [c.notification.dumps() for c in candidates]
                out += [orjson.dumps([p, q.device_id, q.ts_ms, why]) for q, why in gated]
        results.append((out, {p: {k: v.dumps() for k, v in s.items()} for p, s in states.items()}))
    assert len(results[0][0]) > 100 and results[0] == results[1]
