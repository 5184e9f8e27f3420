"""A decision as the engine makes it: plain fields, written as its record's bytes directly.

The engine makes ~0.4 decisions a ping where fences overlap densely (most of them a dwell
suppressed by a cap). A validated pydantic ``Decision`` per decision and its serializer cost
~3 µs; this plain class (compiled by mypyc) and one ``orjson.dumps`` write the same bytes for
a fraction of that. ``decisions.records.Decision`` stays the schema: what is read from a
topic is validated by it, and :meth:`DecisionRow.record` builds it where one is wanted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    from decisions.records import Decision, Outcome, Transition


_TWO: Final = [f"{i:02d}" for i in range(100)]
_FRACTION: Final = [""] + [f".{i:03d}000" for i in range(1, 1000)]  # milliseconds as the records write them
_DAYS_KEPT: Final = 4096
_dates: Final[dict[int, str]] = {}  # days since the epoch -> "YYYY-MM-DDT" (pings come from a few days)


def iso_utc(ts_ms: int) -> str:
    """Epoch milliseconds as the records write a UTC time: ``2026-11-15T10:00:00.250000Z``
    (no fraction on a whole second). The date is worked out once per day (Hinnant's
    days-to-civil, integers only), the time of day from tables: no formatting per call."""
    secs = ts_ms // 1000
    days = secs // 86400
    date = _dates.get(days)
    if date is None:
        date = _date(days)
        if len(_dates) >= _DAYS_KEPT:
            _dates.clear()
        _dates[days] = date
    rem = secs - days * 86400
    hh, mm, ss, frac = _TWO[rem // 3600], _TWO[rem // 60 % 60], _TWO[rem % 60], _FRACTION[ts_ms - secs * 1000]
    return f"{date}{hh}:{mm}:{ss}{frac}Z"


def _date(days: int) -> str:
    """``YYYY-MM-DDT`` of a day counted from 1970-01-01."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return f"{year:04d}-{month:02d}-{day:02d}T"


class DecisionRow:
    """The fields of a :class:`decisions.records.Decision`, its time as epoch milliseconds."""

    def __init__(
        self, device_id: str, ts_ms: int, store_id: str, campaign_id: str | None, transition: Transition,
        outcome: Outcome, reason: str, notification_id: str | None, catalog_version: str,
    ) -> None:  # fmt: skip
        self.device_id = device_id
        self.ts_ms = ts_ms
        self.store_id = store_id
        self.campaign_id = campaign_id
        self.transition = transition
        self.outcome = outcome
        self.reason = reason
        self.notification_id = notification_id
        self.catalog_version = catalog_version

    @property
    def ts(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ms / 1000, tz=UTC)

    def dumps(self) -> bytes:
        """The record's bytes: what ``self.record().dumps()`` writes (tested to the byte)."""
        out: dict[str, Any] = {
            "v": 1,
            "device_id": self.device_id,
            "ts": iso_utc(self.ts_ms),
            "store_id": self.store_id,
        }
        if self.campaign_id is not None:
            out["campaign_id"] = self.campaign_id
        out["transition"] = self.transition
        out["outcome"] = self.outcome
        out["reason"] = self.reason
        if self.notification_id is not None:
            out["notification_id"] = self.notification_id
        out["catalog_version"] = self.catalog_version
        raw: bytes = orjson.dumps(out)
        return raw

    def record(self) -> Decision:
        """The validated record (raises ``pydantic.ValidationError`` on a field out of schema)."""
        from decisions.records import Decision

        return Decision(
            device_id=self.device_id, ts=self.ts, store_id=self.store_id, campaign_id=self.campaign_id,
            transition=self.transition, outcome=self.outcome, reason=self.reason,
            notification_id=self.notification_id, catalog_version=self.catalog_version,
        )  # fmt: skip

    @staticmethod
    def of(d: Decision) -> DecisionRow:
        """The row of a record read from a topic (its time is whole milliseconds: the engine's)."""
        ts_ms = (d.ts - _EPOCH) // _MS
        return DecisionRow(
            d.device_id, ts_ms, d.store_id, d.campaign_id, d.transition, d.outcome, d.reason, d.notification_id,
            d.catalog_version,
        )  # fmt: skip

    def suppressed(self, reason: str) -> DecisionRow:
        """This decision, turned into a suppression for ``reason`` (no notification)."""
        return DecisionRow(
            self.device_id, self.ts_ms, self.store_id, self.campaign_id, self.transition, "suppressed", reason, None,
            self.catalog_version,
        )  # fmt: skip

    def fields(self) -> tuple[str, int, str, str | None, Transition, Outcome, str, str | None, str]:
        return (
            self.device_id, self.ts_ms, self.store_id, self.campaign_id, self.transition, self.outcome, self.reason,
            self.notification_id, self.catalog_version,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DecisionRow) and self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash(self.fields())

    def __repr__(self) -> str:
        return "DecisionRow(" + ", ".join(repr(x) for x in self.fields()) + ")"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
