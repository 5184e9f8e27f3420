"""Per-device state: where the device was last seen, which fences it is in, what it was sent.

Small on purpose (a few dozen bytes for a device outside every fence) and serialised as a
compact orjson array, because millions of devices live in a changelog-backed table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


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
        return orjson.dumps(
            [
                self.ts_ms,
                self.lat,
                self.lng,
                {k: [v.entered_ms, v.last_in_ms, v.fired] for k, v in self.visits.items()},
                self.sent,
                self.held,
            ]
        )

    @classmethod
    def loads(cls, raw: bytes) -> DeviceState:
        ts, lat, lng, visits, sent, held = orjson.loads(raw)
        return cls(
            ts,
            lat,
            lng,
            {k: Visit(v[0], v[1], list(v[2])) for k, v in visits.items()},
            [(int(a), str(b), str(c)) for a, b, c in sent],
            list(held),
        )

    def prune_sent(self, now_ms: int, keep_ms: int) -> None:
        """Forget notifications older than the longest cap window."""
        if self.sent and self.sent[0][0] < now_ms - keep_ms:
            self.sent = [s for s in self.sent if s[0] >= now_ms - keep_ms]
