"""One push as the sender sees it: target, text, data, collapse key and time to live."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from decisions.records import Notification

MAX_TTL_S = 28 * 24 * 3600  # FCM's limit


@dataclass(frozen=True)
class Outgoing:
    """A notification ready to send; ``ttl_s`` is recomputed from ``expires_at`` at each attempt."""

    notification_id: str
    target: str
    target_kind: str  # "fcm_token" | "installation_id"
    title: str
    body: str
    data: dict[str, str]
    collapse_key: str
    expires_at: datetime

    def ttl_s(self, now: datetime) -> int:
        """Whole seconds of validity left (0 = expired), capped at FCM's 28 days."""
        return max(0, min(MAX_TTL_S, math.floor((self.expires_at - now).total_seconds())))


def outgoing_for(n: Notification) -> Outgoing | None:
    """The push for a notification, or None when the device has no token to send to."""
    if not n.token:
        return None
    data = {
        "notification_id": n.notification_id,
        "campaign_id": n.campaign_id,
        "store_id": n.store_id,
        "locale": n.locale,
    }
    if n.deeplink:
        data["deeplink"] = n.deeplink
    return Outgoing(
        notification_id=n.notification_id,
        target=n.token,
        target_kind=n.token_kind,
        title=n.title,
        body=n.body,
        data=data,
        collapse_key=n.notification_id[:64],  # APNs collapse ids are at most 64 bytes
        expires_at=n.expires_at,
    )
