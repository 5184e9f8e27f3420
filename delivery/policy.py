"""Which FCM answers are retried, which kill a token, and how long to wait before trying again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["retry", "invalid_token", "failed"]

#: transient: the same message may succeed later
RETRYABLE = frozenset(
    {"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNKNOWN"}
)
#: the token no longer reaches an app instance: tombstone it
DEAD_TOKEN = frozenset({"UNREGISTERED", "NOT_FOUND"})
#: rate limits: they slow the whole sender, not just this message
RATE_LIMITED = frozenset({"QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED"})


def verdict(code: str) -> Verdict:
    """What to do with an error code. INVALID_ARGUMENT, SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR,
    PERMISSION_DENIED and anything unknown are final ``failed``: a retry cannot fix them."""
    if code in DEAD_TOKEN:
        return "invalid_token"
    if code in RETRYABLE:
        return "retry"
    return "failed"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, never shorter than the server's Retry-After."""

    base_s: float = 0.5
    max_s: float = 60.0

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed so far)."""
        ceiling = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        wait = rng.uniform(ceiling / 2, ceiling)
        return max(wait, retry_after_s or 0.0)
