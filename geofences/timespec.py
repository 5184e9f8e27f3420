"""Times of day, daily windows and durations as marketers write them in YAML.

``"10:00-20:00"`` is a window; ``"21:00-09:00"`` crosses midnight; ``"00:00-24:00"`` is all day.
Durations are ``90s``, ``30m``, ``24h``, ``7d`` (or a bare number of seconds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time, timedelta

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_minute_of_day(text: str) -> int:
    """``"09:30"`` -> 570; ``"24:00"`` -> 1440 (only as a window end)."""
    m = _TIME.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a time of day (expected HH:MM)")
    hh, mm = int(m.group(1)), int(m.group(2))
    if hh > 24 or mm > 59 or (hh == 24 and mm != 0):
        raise ValueError(f"{text!r} is not a time of day (expected 00:00 to 24:00)")
    return hh * 60 + mm


@dataclass(frozen=True)
class Window:
    """A daily window [start, end) in minutes of the local day; end < start crosses midnight."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> Window:
        if not isinstance(text, str) or text.count("-") != 1:
            raise ValueError(f"{text!r} is not a time window (expected HH:MM-HH:MM)")
        a, b = text.split("-")
        start, end = parse_minute_of_day(a), parse_minute_of_day(b)
        if start == 1440:
            raise ValueError(f"{text!r}: a window cannot start at 24:00")
        if start == end:
            raise ValueError(f"{text!r} is empty (start equals end); use 00:00-24:00 for all day")
        return cls(start, end)

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def contains(self, t: time) -> bool:
        """Whether local time-of-day ``t`` lies in the window."""
        minute = t.hour * 60 + t.minute + t.second / 60.0
        if self.crosses_midnight:
            return minute >= self.start or minute < self.end
        return self.start <= minute < self.end

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


def parse_duration(value: object) -> timedelta:
    """``"24h"`` -> 1 day; a bare number means seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (expected e.g. 90s, 30m, 24h, 7d)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (expected e.g. 90s, 30m, 24h, 7d)")
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be positive")
    return timedelta(seconds=seconds)


def expand_days(key: str) -> list[str]:
    """``"mon-fri"`` -> [mon..fri]; ``"sat"`` -> [sat]; ``"daily"`` -> all seven."""
    k = key.strip().lower()
    if k in ("daily", "every day", "mon-sun"):
        return list(WEEKDAYS)
    if k in WEEKDAYS:
        return [k]
    if k.count("-") == 1:
        a, b = k.split("-")
        if a in WEEKDAYS and b in WEEKDAYS:
            i, j = WEEKDAYS.index(a), WEEKDAYS.index(b)
            return [WEEKDAYS[(i + n) % 7] for n in range(((j - i) % 7) + 1)]
    raise ValueError(f"{key!r} is not a day or day range (expected mon..sun, e.g. mon-fri, daily)")
