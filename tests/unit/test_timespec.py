"""Windows, durations and day ranges as marketers write them."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from geofences.timespec import Window, expand_days, parse_duration


def test_window_within_a_day() -> None:
    w = Window.parse("10:00-20:00")
    assert w.contains(time(10, 0)) and w.contains(time(19, 59, 59))
    assert not w.contains(time(20, 0)) and not w.contains(time(9, 59))


def test_window_across_midnight() -> None:
    w = Window.parse("21:00-09:00")
    assert w.crosses_midnight
    assert w.contains(time(23, 30)) and w.contains(time(0, 0)) and w.contains(time(8, 59))
    assert not w.contains(time(9, 0)) and not w.contains(time(12, 0))


def test_all_day_window() -> None:
    w = Window.parse("00:00-24:00")
    assert w.contains(time(0, 0)) and w.contains(time(23, 59, 59))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("25:00-26:00", "not a time of day"), ("10:00", "not a time window"), ("10:00-10:00", "empty"),
     ("9:75-10:00", "not a time of day"), ("24:00-01:00", "cannot start at 24:00")],
)  # fmt: skip
def test_bad_windows_say_why(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Window.parse(text)


def test_durations() -> None:
    assert parse_duration("24h") == timedelta(days=1)
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration(30) == timedelta(seconds=30)
    for bad in ("soon", "-3h", 0, True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_day_ranges() -> None:
    assert expand_days("mon-fri") == ["mon", "tue", "wed", "thu", "fri"]
    assert expand_days("sat-mon") == ["sat", "sun", "mon"]
    assert len(expand_days("daily")) == 7
    with pytest.raises(ValueError, match="funday"):
        expand_days("funday")
