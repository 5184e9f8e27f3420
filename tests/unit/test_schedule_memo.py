"""The engine's remembered schedule answers are the rule's own, minute after minute: across
zones with DST, half-hour and 45-minute offsets, a zone whose old offset had seconds, store
hours past midnight and campaign hours and days."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decisions.engine import Engine
from decisions.schedule import blocked_at, local_time
from geofences.load import load_catalog

ZONES = ["Asia/Tokyo", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "Africa/Monrovia"]
STORES = "stores:\n" + "".join(
    f"""  - id: s{i}
    name: S{i}
    timezone: {tz}
{hours}    geofence: {{circle: {{lat: 35.{i}, lng: 139.{i}, radius_m: 100}}}}
"""
    for i, (tz, hours) in enumerate(
        (tz, hours)
        for tz in ZONES
        for hours in ("", '    hours: {mon-fri: "07:00-22:30", sat: "18:00-02:00", sun: closed}\n')
    )
)
CAMPAIGNS = """campaigns:
  - id: all-day
    stores: {tags: []}
    trigger: enter
    active: {from: 1960-01-01, until: 2040-12-31}
    offer: {text: {en: {title: t, body: b}}}
  - id: weekday-lunch
    stores: {tags: []}
    trigger: enter
    respect_store_hours: false
    active: {from: 1965-03-01, until: 2031-02-28, hours: "11:30-13:45", days: [mon, tue, wed, thu, fri]}
    offer: {text: {en: {title: t, body: b}}}
"""
DEFAULTS = 'defaults:\n  timezone: Asia/Tokyo\n  quiet_hours: "21:15-08:45"\n'


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    d: Path = tmp_path_factory.mktemp("catalog")
    ids = ", ".join(f"s{i}" for i in range(2 * len(ZONES)))
    (d / "stores.yaml").write_text(STORES)
    (d / "campaigns.yaml").write_text(CAMPAIGNS.replace("{tags: []}", f"{{ids: [{ids}]}}"))
    (d / "defaults.yaml").write_text(DEFAULTS)
    return Engine.for_catalog(load_catalog([d]))


MS_1960, MS_2040 = -315_619_200_000, 2_209_075_200_000
EDGES = [7 * 60, 8 * 60 + 45, 11 * 60 + 30, 13 * 60 + 45, 18 * 60, 21 * 60 + 15, 22 * 60 + 30, 2 * 60, 0]


def near_edge(tz: str, day: date, edge: int, jitter_ms: int) -> int:
    """A time ``jitter_ms`` from one of the rules' minute edges on a local day in ``tz``."""
    local = datetime.combine(day, time(edge // 60, edge % 60), tzinfo=ZoneInfo(tz))
    return int(local.timestamp() * 1000) + jitter_ms


@settings(max_examples=500, deadline=None)
@given(
    store=st.integers(0, 2 * len(ZONES) - 1),
    campaign=st.sampled_from(["all-day", "weekday-lunch"]),
    uniform=st.integers(MS_1960, MS_2040),
    day=st.dates(date(1960, 1, 2), date(2040, 12, 30)),
    edge=st.sampled_from(EDGES),
    jitter=st.integers(-150_000, 150_000),
    at_edge=st.booleans(),
    steps=st.lists(st.integers(-150_000, 150_000), min_size=1, max_size=12),
)
def test_remembered_answers_are_the_rules_answers(
    engine: Engine, store: int, campaign: str, uniform: int, day: date, edge: int, jitter: int, at_edge: bool,
    steps: list[int],
) -> None:  # fmt: skip
    c, s = engine.campaign_of[campaign], engine.stores[f"s{store}"]
    tz = engine.tz_of[s.id]
    ts = near_edge(tz, day, edge, jitter) if at_edge else uniform
    for step in steps:  # nearby times: the same minute, the next, the one before
        ts += step
        want = blocked_at(c, s, engine.catalog.defaults, local_time(ts, tz))
        assert engine._blocked_at(c, s, ts) == want, (campaign, s.id, tz, ts)


def test_a_minute_boundary_changes_the_answer(engine: Engine) -> None:
    """11:29:59.999 and 11:30:00.000 on a weekday in Tokyo, asked in that order and back."""
    c, s = engine.campaign_of["weekday-lunch"], engine.stores["s0"]
    before, at = 1_796_351_399_999, 1_796_351_400_000  # 2026-12-04 (fri) 11:29:59.999 / 11:30 JST
    assert engine._blocked_at(c, s, before) == "outside_hours"
    assert engine._blocked_at(c, s, at) is None
    assert engine._blocked_at(c, s, before) == "outside_hours"
    assert engine._blocked_at(c, s, at + 59_999) is None


def test_an_offset_with_seconds_is_not_remembered(engine: Engine) -> None:
    """Monrovia was UTC-0:44:30 until 1972: its local minutes do not start on UTC minutes."""
    c, s = engine.campaign_of["all-day"], engine.stores["s8"]
    assert engine.tz_of[s.id] == "Africa/Monrovia"
    engine.schedules.clear()
    engine._blocked_at(c, s, 0)  # 1970
    assert not engine.schedules
    engine._blocked_at(c, s, 1_796_351_400_000)  # 2026: UTC+0
    assert len(engine.schedules) == 1
