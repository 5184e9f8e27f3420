"""Every decision rule as a pure function, with an injected clock (the pings' timestamps)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decisions.caps import CapsMs, blocked_by_caps, blocked_by_caps_ms, effective_caps
from decisions.pings import Ping
from decisions.presence import Rules, gate, step
from decisions.schedule import blocked_by_schedule, closes_at, is_open, local_time
from decisions.state import DeviceState, Visit
from geofences.catalog import Campaign, Caps, CountCap, Defaults, Store


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def store(**kw: object) -> Store:
    base: dict[str, object] = {"id": "s", "name": "S", "timezone": "Asia/Tokyo",
                               "geofence": {"circle": {"lat": 35, "lng": 139, "radius_m": 100}}}  # fmt: skip
    base.update(kw)
    return Store.model_validate(base)


def campaign(**kw: object) -> Campaign:
    base: dict[str, object] = {
        "id": "c", "stores": {"ids": ["s"]}, "trigger": "enter",
        "active": {"from": "2026-01-01", "until": "2027-12-31"},
        "offer": {"text": {"en": {"title": "t", "body": "b"}}},
    }  # fmt: skip
    base.update(kw)
    return Campaign.model_validate(base)


DEFAULTS = Defaults(timezone="Asia/Tokyo")


# ---------------------------------------------------------------- schedule
def test_quiet_hours_are_store_local_and_cross_midnight() -> None:
    c, s = campaign(), store()
    assert blocked_by_schedule(c, s, DEFAULTS, ms("2026-11-24T12:00:00+09:00")) is None
    assert blocked_by_schedule(c, s, DEFAULTS, ms("2026-11-24T22:30:00+09:00")) == "quiet_hours"
    assert blocked_by_schedule(c, s, DEFAULTS, ms("2026-11-25T08:59:00+09:00")) == "quiet_hours"
    assert blocked_by_schedule(c, s, DEFAULTS, ms("2026-11-25T09:00:00+09:00")) is None
    # the same instant is noon in Tokyo but 4 a.m. in Paris
    paris = store(timezone="Europe/Paris")
    assert blocked_by_schedule(c, paris, DEFAULTS, ms("2026-11-24T12:00:00+09:00")) == "quiet_hours"


def test_dst_change_uses_wall_clock_time() -> None:
    c = campaign(active={"from": "2026-01-01", "until": "2027-12-31", "hours": "10:00-11:00"})
    ny = store(timezone="America/New_York")
    # 2026-11-01: New York falls back at 02:00 EDT -> 01:00 EST; 10:30 local is 15:30 UTC after
    assert blocked_by_schedule(c, ny, DEFAULTS, ms("2026-11-01T15:30:00+00:00")) is None
    assert blocked_by_schedule(c, ny, DEFAULTS, ms("2026-11-01T14:30:00+00:00")) == "outside_hours"
    # the day before (still EDT) 10:30 local is 14:30 UTC
    assert blocked_by_schedule(c, ny, DEFAULTS, ms("2026-10-31T14:30:00+00:00")) is None


def test_active_dates_days_and_store_hours() -> None:
    c = campaign(active={"from": "2026-11-01", "until": "2026-11-30", "days": ["sat", "sun"]})
    s = store(hours={"mon-fri": "10:00-20:00", "sat": "22:00-02:00", "sun": "closed"})
    assert blocked_by_schedule(c, s, DEFAULTS, ms("2026-12-05T12:00:00+09:00")) == "not_active"
    assert blocked_by_schedule(c, s, DEFAULTS, ms("2026-11-24T12:00:00+09:00")) == "outside_hours"  # tue
    assert blocked_by_schedule(c, s, DEFAULTS, ms("2026-11-29T12:00:00+09:00")) == "store_closed"  # sun
    # saturday 23:00 is open (window past midnight) but quiet hours win
    assert blocked_by_schedule(c, s, DEFAULTS, ms("2026-11-28T23:00:00+09:00")) == "quiet_hours"
    night = Defaults(timezone="Asia/Tokyo", quiet_hours=None)
    assert blocked_by_schedule(c, s, night, ms("2026-11-28T23:00:00+09:00")) is None
    # sunday 01:30 belongs to saturday's window even though sunday is closed
    assert is_open(s, local_time(ms("2026-11-29T01:30:00+09:00"), "Asia/Tokyo"))
    assert closes_at(s, local_time(ms("2026-11-28T23:00:00+09:00"), "Asia/Tokyo")) == datetime.fromisoformat(
        "2026-11-29T02:00:00+09:00"
    )


# ---------------------------------------------------------------- caps
def test_caps_in_order_cooldown_campaign_device() -> None:
    caps = Caps(store_cooldown=timedelta(hours=24), per_campaign=CountCap(max=2, window=timedelta(days=7)),
                per_device=CountCap(max=3, window=timedelta(days=1)))  # fmt: skip
    now = ms("2026-11-24T12:00:00+09:00")
    hour = 3_600_000
    assert blocked_by_caps(caps, [], "c", "s", now) is None
    assert blocked_by_caps(caps, [(now - 23 * hour, "x", "s")], "c", "s", now) == "cooldown"
    assert blocked_by_caps(caps, [(now - 25 * hour, "x", "s")], "c", "s", now) is None
    two = [(now - 48 * hour, "c", "a"), (now - 72 * hour, "c", "b")]
    assert blocked_by_caps(caps, two, "c", "s", now) == "campaign_cap"
    busy = [(now - hour, "x", "a"), (now - 2 * hour, "y", "b"), (now - 3 * hour, "z", "d")]
    assert blocked_by_caps(caps, busy, "c", "s", now) == "device_cap"


def _caps_by_definition(caps: Caps, sent: list[tuple[int, str, str]], cid: str, sid: str, now: int) -> str | None:
    """The caps as the README defines them, check by check (the engine's one-pass version must agree)."""

    def within(window: timedelta, ts: int) -> bool:
        return ts > now - window.total_seconds() * 1000

    if caps.store_cooldown and any(within(caps.store_cooldown, t) and s == sid for t, _, s in sent):
        return "cooldown"
    pc, pd = caps.per_campaign, caps.per_device
    if pc and sum(1 for t, c, _ in sent if within(pc.window, t) and c == cid) >= pc.max:
        return "campaign_cap"
    if pd and sum(1 for t, _, _ in sent if within(pd.window, t)) >= pd.max:
        return "device_cap"
    return None


@given(
    cooldown_h=st.none() | st.integers(1, 48),
    per_campaign=st.none() | st.tuples(st.integers(1, 3), st.integers(1, 200)),
    per_device=st.none() | st.tuples(st.integers(1, 4), st.integers(1, 48)),
    sent=st.lists(st.tuples(st.integers(0, 300), st.sampled_from("cxy"), st.sampled_from("sab")), max_size=8),
)
def test_one_pass_caps_agree_with_the_definition(
    cooldown_h: int | None, per_campaign: tuple[int, int] | None, per_device: tuple[int, int] | None,
    sent: list[tuple[int, str, str]],
) -> None:  # fmt: skip
    hour = 3_600_000
    now = 400 * hour
    caps = Caps(
        store_cooldown=timedelta(hours=cooldown_h) if cooldown_h else None,
        per_campaign=CountCap(max=per_campaign[0], window=timedelta(hours=per_campaign[1])) if per_campaign else None,
        per_device=CountCap(max=per_device[0], window=timedelta(hours=per_device[1])) if per_device else None,
    )
    history = [(now - h * hour, c, s) for h, c, s in sent]
    expected = _caps_by_definition(caps, history, "c", "s", now)
    assert blocked_by_caps_ms(CapsMs(caps), history, "c", "s", now) == expected
    assert blocked_by_caps(caps, history, "c", "s", now) == expected


def test_campaign_caps_override_defaults_field_by_field() -> None:
    eff = effective_caps(Caps(budget=10, store_cooldown=timedelta(hours=1)), DEFAULTS)
    assert eff.store_cooldown == timedelta(hours=1)
    assert eff.per_device == DEFAULTS.caps.per_device and eff.budget == 10


# ---------------------------------------------------------------- gates and presence
RULES = Rules(min_accuracy_m=50, exit_buffer_m=30, max_age_s=600, drive_by_mps=7, presence_timeout_s=1800)
T0 = ms("2026-11-24T12:00:00+09:00")


def ping(t: int, lat: float = 35.0, lng: float = 139.0, acc: float | None = 10, speed: float | None = None) -> Ping:
    return Ping("d", t, lat, lng, acc, speed)


@pytest.mark.parametrize(
    ("p", "state", "stream", "want"),
    [
        (ping(T0), DeviceState(ts_ms=T0), T0, ("duplicate", True)),
        (ping(T0 - 1), DeviceState(ts_ms=T0), T0, ("out_of_order", True)),
        (ping(T0 - 700_000), None, T0, ("stale", True)),
        (ping(T0 + 10_000, lat=36.0), DeviceState(ts_ms=T0, lat=35.0, lng=139.0), T0, ("impossible_jump", True)),
        (ping(T0, acc=80), None, T0, ("low_accuracy", False)),
        (ping(T0, speed=14), None, T0, ("drive_by", False)),
        (ping(T0 + 20_000, lat=35.002), DeviceState(ts_ms=T0, lat=35.0, lng=139.0), T0, ("drive_by", False)),
        (ping(T0 + 20_000, lat=35.0005), DeviceState(ts_ms=T0, lat=35.0, lng=139.0), T0, (None, False)),
    ],
)  # fmt: skip
def test_gates(p: Ping, state: DeviceState | None, stream: int, want: tuple[str | None, bool]) -> None:
    assert gate(p, state, stream, RULES) == want


def test_enter_needs_a_certain_trusted_ping_and_exit_needs_the_buffer() -> None:
    st = DeviceState()
    r = step(ping(T0, acc=80), st, {"s": True}, {}, T0, RULES)
    assert r.blocked_enter == ["s"] and not st.visits
    r = step(ping(T0 + 1000), st, {"s": False}, {}, T0, RULES)
    assert r.blocked_enter == [] and r.gate is None and st.held == ["s"]  # said once already
    step(ping(T0 + 1500), st, {}, {}, T0, RULES)  # walked out of the area: may be said again
    r = step(ping(T0 + 1700), st, {"s": False}, {}, T0, RULES)
    assert r.blocked_enter == ["s"]
    r = step(ping(T0 + 2000), st, {"s": True}, {}, T0, RULES)
    assert r.entered == ["s"] and st.visits["s"].entered_ms == T0 + 2000
    # jitter just outside: still inside (hysteresis)
    r = step(ping(T0 + 3000), st, {}, {"s": 20.0}, T0, RULES)
    assert not r.exited and "s" in st.visits
    # inaccurate ping 40 m out with 30 m accuracy: not certainly beyond the buffer
    r = step(ping(T0 + 4000, acc=30), st, {}, {"s": 40.0}, T0, RULES)
    assert not r.exited
    r = step(ping(T0 + 5000), st, {}, {"s": 45.0}, T0, RULES)
    assert r.exited == [("s", T0 + 2000)] and not st.visits
    # must exit before entering again: now it may re-enter
    r = step(ping(T0 + 6000), st, {"s": True}, {}, T0, RULES)
    assert r.entered == ["s"]


def test_silent_device_exits_after_the_presence_timeout() -> None:
    st = DeviceState(ts_ms=T0, lat=35.0, lng=139.0, visits={"s": Visit(T0, T0)})
    r = step(ping(T0 + 1_900_000), st, {}, {"s": 5.0}, T0 + 1_900_000, RULES)
    assert r.exited == [("s", T0)]


def test_state_round_trips_and_is_small() -> None:
    st = DeviceState(ts_ms=T0, lat=35.123456, lng=139.654321, visits={"tokyo-shibuya-001": Visit(T0, T0 + 5, ["a"])},
                     sent=[(T0, "autumn-latte", "tokyo-shibuya-001")])  # fmt: skip
    raw = st.dumps()
    assert DeviceState.loads(raw) == st and DeviceState.ts_of(raw) == T0
    assert len(DeviceState(ts_ms=T0, lat=35.123456, lng=139.654321).dumps()) < 64
    assert len(raw) < 120
    # format 1 (absolute times, written by earlier versions) still reads
    v1 = b'[%d,35.123456,139.654321,{"tokyo-shibuya-001":[%d,%d,["a"]]},[[%d,"autumn-latte","tokyo-shibuya-001"]],[]]'
    old = v1 % (T0, T0, T0 + 5, T0)
    assert DeviceState.loads(old) == st and DeviceState.ts_of(old) == T0


def test_a_device_inside_dozens_of_fences_still_has_a_state_under_1_kib() -> None:
    """The dense 100k-fence benchmark puts a device inside ~40 overlapping fences at once."""
    visits = {f"syn-{i:06d}": Visit(T0 - 60_000 - i, T0, ["dwell-coffee"] if i % 3 else []) for i in range(60)}
    st = DeviceState(ts_ms=T0, lat=35.123456, lng=139.654321, visits=visits, held=[f"syn-{i:06d}" for i in range(60, 70)],
                     sent=[(T0 - i, "autumn-latte", f"syn-{i:06d}") for i in range(5)])  # fmt: skip
    raw = st.dumps()
    assert raw[:1] == b"Z" and len(raw) < 1024
    assert DeviceState.loads(raw) == st and DeviceState.ts_of(raw) == T0
    small = DeviceState(ts_ms=T0, lat=35.0, lng=139.0, visits={"syn-000001": Visit(T0, T0)})
    assert small.dumps()[:1] == b"["  # the usual state stays plain JSON


def test_date_bounds_are_inclusive() -> None:
    c = campaign(active={"from": "2026-11-24", "until": "2026-11-24"})
    assert c.active.from_ == date(2026, 11, 24)
    assert blocked_by_schedule(c, store(), DEFAULTS, ms("2026-11-24T12:00:00+09:00")) is None
    assert blocked_by_schedule(c, store(), DEFAULTS, ms("2026-11-25T12:00:00+09:00")) == "not_active"


def test_idle_device_state_expires_but_not_before_the_longest_cap() -> None:
    from decisions.engine import Engine
    from decisions.replay import DictStates
    from geofences.load import load_catalog
    from tests.conftest import REPO

    catalog = load_catalog([REPO / "config" / "catalog"])
    engine = Engine(catalog, Rules(state_ttl_s=86400.0))
    assert engine.ttl_ms == 30 * 86400 * 1000  # welcome-flagship caps over 30 days
    states = DictStates()
    states.put("d", DeviceState(ts_ms=T0, lat=35.0, lng=139.0, sent=[(T0, "welcome-flagship", "x")]))
    far = Ping("d", T0 + 31 * 86400 * 1000, 10.0, 10.0, 5.0)
    engine.decide([far], states, {})
    assert states["d"].sent == [] and states["d"].ts_ms == far.ts_ms
    states.put("e", DeviceState(ts_ms=T0, lat=35.0, lng=139.0, sent=[(T0, "welcome-flagship", "x")]))
    engine.decide([Ping("e", T0 + 20 * 86400 * 1000, 10.0, 10.0, 5.0)], states, {})
    assert states["e"].sent == [(T0, "welcome-flagship", "x")]


def test_presence_check_ends_a_silent_visit_with_an_exit() -> None:
    from decisions.engine import Engine
    from decisions.pings import PresenceCheck
    from decisions.records import Device
    from decisions.replay import DictStates
    from geofences.load import load_catalog
    from tests.conftest import REPO

    engine = Engine.for_catalog(load_catalog([REPO / "config" / "catalog"]), presence_timeout_s=1800.0)
    devices = {"d": Device(device_id="d", token="t", locale="en", opt_in=True, updated_at=datetime.now(UTC))}
    states = DictStates()
    noon = ms("2026-11-24T12:00:00+09:00")  # a Tuesday; Kanda is open 10-20
    kanda = [Ping("d", noon + k * 20_000, 35.6959, 139.7577, 8.0) for k in range(3)]
    engine.decide(kanda, states, devices)
    assert "tokyo-kanda-018" in states["d"].visits
    # the device's last word was at noon+40 s; a check sent earlier than the timeout does nothing
    decisions, candidates, _ = engine.decide([PresenceCheck("d", noon + 600_000)], states, devices)
    assert not decisions and not candidates and "tokyo-kanda-018" in states["d"].visits
    decisions, candidates, _ = engine.decide([PresenceCheck("d", noon + 1_900_000)], states, devices)
    assert not states["d"].visits
    assert [(c.decision.campaign_id, c.decision.transition) for c in candidates] == [("book-thanks", "exit")]
    # a check older than the device's latest ping is ignored
    decisions, candidates, _ = engine.decide([PresenceCheck("d", noon)], states, devices)
    assert not decisions and not candidates


def test_offer_text_is_the_device_locale_and_the_store_s_own_name() -> None:
    """Rendered texts are kept per (campaign, store, device locale): the same campaign at two
    stores and in two locales must still name each store in each language."""
    from decisions.engine import Engine
    from decisions.records import Device
    from geofences.load import load_catalog
    from tests.conftest import REPO

    engine = Engine.for_catalog(load_catalog([REPO / "config" / "catalog"]))
    c = next(c for c in engine.catalog.campaigns if c.id == "autumn-latte")
    local = local_time(ms("2026-11-24T12:00:00+09:00"), "Asia/Tokyo")
    p = ping(ms("2026-11-24T12:00:00+09:00"))
    seen = []
    for _ in range(2):  # the second round comes from what the first kept
        for store_id in ("tokyo-shibuya-001", "tokyo-shinjuku-002"):
            for locale in ("ja-JP", "en", "fr"):
                device = Device(device_id="d", token="t", locale=locale, opt_in=True, updated_at=datetime.now(UTC))
                n = engine._render(p, engine.stores[store_id], c, device, "n1", local)
                seen.append((store_id, locale, n.locale, n.title))
    assert seen[:6] == seen[6:]
    assert seen[:6] == [
        ("tokyo-shibuya-001", "ja-JP", "ja", "渋谷スクランブル店：ラテ100円引き"),
        ("tokyo-shibuya-001", "en", "en", "Shibuya Scramble: latte ¥100 off"),
        ("tokyo-shibuya-001", "fr", "ja", "渋谷スクランブル店：ラテ100円引き"),  # the catalog's default locale
        ("tokyo-shinjuku-002", "ja-JP", "ja", "新宿東口店：ラテ100円引き"),
        ("tokyo-shinjuku-002", "en", "en", "Shinjuku East: latte ¥100 off"),
        ("tokyo-shinjuku-002", "fr", "ja", "新宿東口店：ラテ100円引き"),
    ]
