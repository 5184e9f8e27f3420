"""Per-device state: where the device was last seen, which fences it is in, what it was sent.

Small on purpose (a few dozen bytes for a device outside every fence) and serialised as a
compact orjson array, because millions of devices live in a changelog-backed table.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

STATE_FORMAT = 2  # first element of a serialised state; format 1 began with the time (ms, never 2)
PACKED = b"Z"  # a state longer than PACK_OVER bytes is stored as PACKED + zlib of its JSON
PACK_OVER = 768  # rare (a device inside dozens of overlapping fences); the usual state stays plain JSON


@dataclass(slots=True)
class Visit:
    """The device is inside a store's fence since ``entered_ms``; ``fired`` dwell campaigns."""

    entered_ms: int
    last_in_ms: int
    fired: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DeviceState:
    ts_ms: int = 0  # last accepted ping
    lat: float | None = None  # last trusted position
    lng: float | None = None
    visits: dict[str, Visit] = field(default_factory=dict)
    sent: list[tuple[int, str, str]] = field(default_factory=list)  # (ts_ms, campaign, store)
    held: list[str] = field(default_factory=list)  # inside, kept from entering (said once)

    def dumps(self) -> bytes:
        """Format 2: ``[2, ts, lat, lng, {store: [ts - entered, ts - last_in, fired?]},
        [[ts - sent, campaign, store]], held]`` — times relative to the last ping (short
        numbers), an empty ``fired`` left out. Longer than PACK_OVER: zlib-compressed, so no
        state is much over 1 KiB (store ids repeat a lot)."""
        t = self.ts_ms
        raw = orjson.dumps(
            [
                STATE_FORMAT,
                t,
                self.lat,
                self.lng,
                {
                    k: [t - v.entered_ms, t - v.last_in_ms, v.fired]
                    if v.fired
                    else [t - v.entered_ms, t - v.last_in_ms]
                    for k, v in self.visits.items()
                },
                [[t - a, b, c] for a, b, c in self.sent],
                self.held,
            ]
        )
        return PACKED + zlib.compress(raw, 6) if len(raw) > PACK_OVER else raw

    @classmethod
    def loads(cls, raw: bytes) -> DeviceState:
        """Format 2 (plain or packed), or format 1 (absolute times, no marker) as written before."""
        obj = _json(raw)
        if obj[0] != STATE_FORMAT:
            ts, lat, lng, visits, sent, held = obj
            return cls(
                ts,
                lat,
                lng,
                {k: Visit(v[0], v[1], list(v[2])) for k, v in visits.items()},
                [(int(a), str(b), str(c)) for a, b, c in sent],
                list(held),
            )
        _, t, lat, lng, visits, sent, held = obj
        return cls(
            t,
            lat,
            lng,
            {k: Visit(t - v[0], t - v[1], v[2] if len(v) > 2 else []) for k, v in visits.items()},
            [(t - a, b, c) for a, b, c in sent],
            held,
        )

    def material(self) -> int:
        """A fingerprint of what a restart must not lose: each visit's store, start and dwells
        fired, the notifications and the holds — all but the last position, the ping time and
        the visits' last-seen times (the presence book's ``State::material``, the same rule;
        comparable within a process only)."""
        visits = tuple((k, v.entered_ms, tuple(v.fired)) for k, v in self.visits.items())
        return hash((visits, tuple(self.sent), tuple(self.held)))

    @staticmethod
    def ts_of(raw: bytes) -> int:
        """The last accepted ping's time, from the serialised state (for expiry scans)."""
        obj = _json(raw)
        return int(obj[1] if obj[0] == STATE_FORMAT else obj[0])

    def prune_sent(self, now_ms: int, keep_ms: int) -> None:
        """Forget notifications older than the longest cap window (any of them: one decided by
        a presence check can precede, in the list, an older ping's)."""
        since = now_ms - keep_ms
        if self.sent and any(s[0] < since for s in self.sent):
            self.sent = [s for s in self.sent if s[0] >= since]


def _json(raw: bytes) -> list[Any]:
    """The JSON array of a serialised state, unpacked if it was compressed."""
    obj: list[Any] = orjson.loads(zlib.decompress(raw[1:]) if raw[:1] == PACKED else raw)
    return obj
