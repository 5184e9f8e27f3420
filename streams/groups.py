"""The consumer groups of a worker and the topics each consumes (for lag and readiness).

The Faust app itself joins the group named ``app_id`` (it hosts the web pages and timers but
consumes no data topic); each step consumes in a group of its own, with manual commits.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener

from streams.settings import Settings
from streams.topics import outbox_topic


def decide_group(settings: Settings) -> str:
    """pings -> decisions (+ outbox candidates, dead letters, presence state)."""
    return f"{settings.app_id}-decide"


def budget_group(settings: Settings) -> str:
    """outbox -> notifications (+ budget decisions)."""
    return f"{settings.app_id}-budget"


def delivery_group(settings: Settings) -> str:
    """notifications -> FCM -> deliveries."""
    return f"{settings.app_id}-delivery"


def worker_groups(settings: Settings) -> dict[str, set[str]]:
    """Group -> the topics it consumes, for every step this worker runs."""
    groups = {
        decide_group(settings): {settings.topic_pings},
        budget_group(settings): {outbox_topic(settings)},
    }
    if settings.deliver:
        groups[delivery_group(settings)] = {settings.topic_notifications}
    return groups


class PartitionOwner(Protocol):
    """A step that keeps per-partition state: it loads it on assignment and drops it on revocation."""

    async def assign(self, parts: set[int]) -> None: ...
    async def revoke(self, parts: set[int]) -> None: ...


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc,unused-ignore]
    """Hands a step's group rebalances to the step, as partition numbers."""

    def __init__(self, owner: PartitionOwner) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner.revoke({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner.assign({tp.partition for tp in assigned})
