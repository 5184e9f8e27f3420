"""A global send rate shared by the workers: a token bucket sized by each worker's fair share."""

from __future__ import annotations

from collections.abc import Callable


def fair_share(rate_per_s: float, owned_partitions: int, total_partitions: int) -> float:
    """This worker's part of the project-wide rate: in proportion to the partitions it owns.

    The consumer group splits partitions evenly, so shares follow the membership without any
    coordination, and always sum to the global rate."""
    if total_partitions <= 0 or owned_partitions <= 0:
        return 0.0
    return rate_per_s * min(owned_partitions, total_partitions) / total_partitions


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; time from an injected clock (seconds)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = clock()

    def set_rate(self, rate: float) -> None:
        self._refill()
        self.rate = rate

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, n: int) -> float:
        """Take ``n`` tokens (going into debt if needed); return the seconds to wait before sending."""
        self._refill()
        self.tokens -= n
        if self.tokens >= 0:
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return -self.tokens / self.rate
