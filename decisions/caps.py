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


def blocked_by_caps(
    caps: Caps, sent: list[tuple[int, str, str]], campaign_id: str, store_id: str, now_ms: int
) -> str | None:
    """None if a notification is within the caps, else ``cooldown``/``campaign_cap``/``device_cap``."""
    if caps.store_cooldown is not None:
        since = now_ms - int(caps.store_cooldown.total_seconds() * 1000)
        if any(ts > since and s == store_id for ts, _, s in sent):
            return "cooldown"
    if caps.per_campaign is not None:
        since = now_ms - int(caps.per_campaign.window.total_seconds() * 1000)
        if sum(1 for ts, c, _ in sent if ts > since and c == campaign_id) >= caps.per_campaign.max:
            return "campaign_cap"
    if caps.per_device is not None:
        since = now_ms - int(caps.per_device.window.total_seconds() * 1000)
        if sum(1 for ts, _, _ in sent if ts > since) >= caps.per_device.max:
            return "device_cap"
    return None
