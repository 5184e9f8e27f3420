"""Frequency caps over a device's recent notifications, each a rolling window.

Order of checks (the first that says no is the reason): store cooldown, per device+campaign
maximum, per device maximum across all campaigns. The campaign's own caps override the
catalog defaults field by field. The total budget is not here: it is campaign-keyed
(``decisions.budget``).
"""

from __future__ import annotations

from datetime import timedelta

from geofences.catalog import Caps, Defaults


def effective_caps(campaign_caps: Caps, defaults: Defaults) -> Caps:
    """The campaign's caps, with the catalog defaults for what it leaves out."""
    d = defaults.caps
    return Caps(
        store_cooldown=campaign_caps.store_cooldown or d.store_cooldown,
        per_campaign=campaign_caps.per_campaign or d.per_campaign,
        per_device=campaign_caps.per_device or d.per_device,
        budget=campaign_caps.budget,
    )


def longest_window(caps: list[Caps]) -> timedelta:
    """How much notification history a device must keep for these caps."""
    spans = [timedelta(0)]
    for c in caps:
        if c.store_cooldown:
            spans.append(c.store_cooldown)
        if c.per_campaign:
            spans.append(c.per_campaign.window)
        if c.per_device:
            spans.append(c.per_device.window)
    return max(spans)


class CapsMs:
    """A campaign's effective caps as millisecond windows, worked out once per engine (the
    checks run for every decision, most of them suppressed)."""

    def __init__(self, caps: Caps) -> None:
        self.cooldown_ms = _ms(caps.store_cooldown) if caps.store_cooldown is not None else -1
        pc, pd = caps.per_campaign, caps.per_device
        self.campaign_ms, self.campaign_max = (_ms(pc.window), pc.max) if pc is not None else (-1, 0)
        self.device_ms, self.device_max = (_ms(pd.window), pd.max) if pd is not None else (-1, 0)


def _ms(window: timedelta) -> int:
    return int(window.total_seconds() * 1000)


def blocked_by_caps(
    caps: Caps, sent: list[tuple[int, str, str]], campaign_id: str, store_id: str, now_ms: int
) -> str | None:
    """None if a notification is within the caps, else ``cooldown``/``campaign_cap``/``device_cap``."""
    return blocked_by_caps_ms(CapsMs(caps), sent, campaign_id, store_id, now_ms)


def blocked_by_caps_ms(
    caps: CapsMs, sent: list[tuple[int, str, str]], campaign_id: str, store_id: str, now_ms: int
) -> str | None:
    """:func:`blocked_by_caps` with the windows in milliseconds, in one pass over ``sent``."""
    if not sent:
        return None
    cooldown_since = now_ms - caps.cooldown_ms
    campaign_since = now_ms - caps.campaign_ms
    device_since = now_ms - caps.device_ms
    by_campaign = by_device = 0
    cooled = False
    for ts, c, s in sent:
        if caps.cooldown_ms >= 0 and ts > cooldown_since and s == store_id:
            cooled = True
        if caps.campaign_ms >= 0 and ts > campaign_since and c == campaign_id:
            by_campaign += 1
        if caps.device_ms >= 0 and ts > device_since:
            by_device += 1
    if cooled:
        return "cooldown"
    if caps.campaign_ms >= 0 and by_campaign >= caps.campaign_max:
        return "campaign_cap"
    if caps.device_ms >= 0 and by_device >= caps.device_max:
        return "device_cap"
    return None
