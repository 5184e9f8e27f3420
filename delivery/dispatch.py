"""Deliver a batch to the end: send, retry with backoff, pause on rate limits, expire at the TTL.

Pure over its inputs: the sender, the clock and the sleep are injected, so every rule here is
unit-tested without FCM or Kafka. The caller gets exactly one final result per notification.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from decisions.records import DeliveryResult
from delivery.outgoing import Outgoing
from delivery.policy import RATE_LIMITED, Backoff, verdict
from delivery.rate import TokenBucket

MAX_NAP_S = 5.0  # longest single sleep, so expiries are reported on time


@dataclass(frozen=True)
class SendResult:
    """FCM's answer to one message: its name when accepted, else an error code (+ Retry-After)."""

    message_name: str | None = None
    code: str | None = None
    retry_after_s: float | None = None


class Sender(Protocol):
    """The outbound interface: one call sends up to 500 messages, one answer each, in order."""

    async def send(self, batch: Sequence[tuple[Outgoing, int]]) -> list[SendResult]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Final:
    """The one final result of a notification."""

    outgoing: Outgoing
    result: DeliveryResult
    attempts: int
    message_name: str | None = None
    error_code: str | None = None


OnFinal = Callable[[list["Final"]], Awaitable[None]]


@dataclass
class _Try:
    out: Outgoing
    next_at: datetime
    attempts: int = 0
    last_code: str | None = None


@dataclass
class Dispatcher:
    """Sends batches through ``sender`` under a shared token bucket and a shared pause."""

    sender: Sender
    now: Callable[[], datetime]
    sleep: Callable[[float], Awaitable[None]]
    bucket: TokenBucket
    backoff: Backoff = field(default_factory=Backoff)
    rng: random.Random = field(default_factory=random.Random)
    batch_max: int = 500
    paused_until: datetime | None = None
    stats: Counter[str] = field(default_factory=Counter)

    async def deliver(self, items: Sequence[Outgoing], on_final: OnFinal | None = None) -> list[Final]:
        """Every item's final result (order not kept); returns when none is left to try.

        ``on_final`` hears each round's results as soon as they are known, so the caller can
        record a success before the next round goes out."""
        pending = [_Try(o, self.now()) for o in items]
        finals: list[Final] = []
        reported = 0
        while pending:
            pending = await self._round(pending, finals)
            if on_final is not None and len(finals) > reported:
                await on_final(finals[reported:])
                reported = len(finals)
        return finals

    async def _round(self, pending: list[_Try], finals: list[Final]) -> list[_Try]:
        """Expire, wait, or send what is due once; return what is still pending."""
        now = self.now()
        pending = self._expire(pending, now, finals)
        if not pending:
            return pending
        nap = self._nap(pending, now)
        if nap > 0:
            await self.sleep(nap)
            return pending
        due = [t for t in pending if t.next_at <= now][: self.batch_max]
        wait = self.bucket.take(len(due))
        if wait > 0:
            self.stats["rate_waits"] += 1
            await self.sleep(wait)
            now = self.now()
        sendable = [t for t in due if t.out.ttl_s(now) > 0]
        if not sendable:
            return pending  # the wait expired them; the next round reports it
        answers = await self.sender.send([(t.out, t.out.ttl_s(now)) for t in sendable])
        settled = {id(t) for t, answer in zip(sendable, answers, strict=True) if self._settle(t, answer, now, finals)}
        return [t for t in pending if id(t) not in settled]

    def _nap(self, pending: list[_Try], now: datetime) -> float:
        """Seconds until something is due (0 = now): the earliest retry, after any global pause."""
        wake = min(t.next_at for t in pending)
        if self.paused_until is not None and self.paused_until > wake:
            wake = self.paused_until
        if wake <= now:
            return 0.0
        soonest_expiry = min(t.out.expires_at for t in pending)
        until_expiry = max(0.0, (soonest_expiry - now).total_seconds()) + 0.001
        return min((wake - now).total_seconds(), until_expiry, MAX_NAP_S)

    def _settle(self, t: _Try, answer: SendResult, now: datetime, finals: list[Final]) -> bool:
        """Record a final result, or schedule the retry; True when the try is settled."""
        t.attempts += 1
        if answer.message_name is not None:
            finals.append(Final(t.out, "sent", t.attempts, message_name=answer.message_name))
            return True
        code = answer.code or "UNKNOWN"
        v = verdict(code)
        if v != "retry":
            finals.append(Final(t.out, v, t.attempts, error_code=code))
            return True
        self.stats[f"retry:{code}"] += 1
        t.last_code = code
        delay = self.backoff.delay(t.attempts, answer.retry_after_s, self.rng)
        t.next_at = now + timedelta(seconds=delay)
        if code in RATE_LIMITED:  # a 429 slows every send of this worker, not just this message
            until = now + timedelta(seconds=answer.retry_after_s or delay)
            if self.paused_until is None or until > self.paused_until:
                self.paused_until = until
                self.stats["pauses"] += 1
        return False

    def _expire(self, tries: list[_Try], now: datetime, finals: list[Final]) -> list[_Try]:
        alive = []
        for t in tries:
            if t.out.ttl_s(now) <= 0:
                finals.append(Final(t.out, "expired", t.attempts, error_code=t.last_code))
            else:
                alive.append(t)
        return alive
