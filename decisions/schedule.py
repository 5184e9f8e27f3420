"""When a campaign may fire at a store: active dates, weekly hours, opening hours, quiet hours.

All in the store's own timezone (DST included: local wall-clock time is what counts).
Returns None when allowed, or the reason it is not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from geofences.catalog import Campaign, Defaults, Store
from geofences.timespec import WEEKDAYS


def local_time(ts_ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).astimezone(ZoneInfo(tz))


def store_tz(store: Store, defaults: Defaults) -> str:
    return store.timezone or defaults.timezone


def is_open(store: Store, local: datetime) -> bool:
    """Whether the store is open at local time; a window past midnight belongs to its start day."""
    days = store.hours_by_day()
    if days is None:
        return True
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    t = local.time()
    if any(w.contains(t) and (not w.crosses_midnight or t.hour * 60 + t.minute >= w.start) for w in days[today]):
        return True
    return any(w.crosses_midnight and t.hour * 60 + t.minute < w.end for w in days[yesterday])


def closes_at(store: Store, local: datetime) -> datetime | None:
    """When the store's current opening window ends (None if always open or closed now)."""
    days = store.hours_by_day()
    if days is None:
        return None
    minute = local.hour * 60 + local.minute
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    for w in days[WEEKDAYS[local.weekday()]]:
        if w.contains(local.time()) and minute >= w.start:
            end = w.end if not w.crosses_midnight else w.end + 1440
            return midnight + timedelta(minutes=end)
    for w in days[WEEKDAYS[(local.weekday() - 1) % 7]]:
        if w.crosses_midnight and minute < w.end:
            return midnight + timedelta(minutes=w.end)
    return None


def blocked_by_schedule(campaign: Campaign, store: Store, defaults: Defaults, ts_ms: int) -> str | None:
    """None if the campaign may fire at this store now, else the reason."""
    return blocked_at(campaign, store, defaults, local_time(ts_ms, store_tz(store, defaults)))


def blocked_at(campaign: Campaign, store: Store, defaults: Defaults, local: datetime) -> str | None:
    """:func:`blocked_by_schedule` at the store's local time ``local`` (worked out once by the
    caller, who also needs it for the offer's expiry)."""
    active = campaign.active
    if not active.from_ <= local.date() <= active.until:
        return "not_active"
    if active.days is not None and WEEKDAYS[local.weekday()] not in active.days:
        return "outside_hours"
    if active.hours is not None and not any(w.contains(local.time()) for w in active.hours):
        return "outside_hours"
    if campaign.respect_store_hours and not is_open(store, local):
        return "store_closed"
    if defaults.quiet_hours is not None and defaults.quiet_hours.contains(local.time()):
        return "quiet_hours"
    return None
