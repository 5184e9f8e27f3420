"""Delivery rules with a fake clock and a scripted sender: retries, pauses, expiry, rate."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from decisions.records import Notification
from delivery.dispatch import Dispatcher, SendResult
from delivery.outgoing import MAX_TTL_S, Outgoing, outgoing_for
from delivery.policy import Backoff, verdict
from delivery.rate import TokenBucket, fair_share

T0 = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        return self.t

    def seconds(self) -> float:
        return self.t.timestamp()

    async def sleep(self, s: float) -> None:
        assert s >= 0
        self.t += timedelta(seconds=s)


class Scripted:
    """Answers per target from a script (a list consumed per attempt); 'ok' when the script runs out."""

    def __init__(self, clock: FakeClock, script: dict[str, list[SendResult]]) -> None:
        self.clock = clock
        self.script = script
        self.calls: list[tuple[datetime, str, int]] = []

    async def send(self, batch: Sequence[tuple[Outgoing, int]]) -> list[SendResult]:
        out = []
        for o, ttl in batch:
            self.calls.append((self.clock.now(), o.target, ttl))
            todo = self.script.get(o.target, [])
            out.append(todo.pop(0) if todo else SendResult(message_name=f"projects/p/messages/{o.notification_id}"))
        return out

    async def close(self) -> None:
        return None


def item(i: int, ttl_s: float = 3600) -> Outgoing:
    return Outgoing(
        notification_id=f"n{i}", target=f"tok{i}", target_kind="fcm_token", title="t", body="b",
        data={"notification_id": f"n{i}"}, collapse_key=f"n{i}", expires_at=T0 + timedelta(seconds=ttl_s),
    )  # fmt: skip


def dispatcher(clock: FakeClock, sender: Scripted, rate: float = 1e9) -> Dispatcher:
    bucket = TokenBucket(rate, burst=max(1.0, rate), clock=clock.seconds)
    return Dispatcher(sender, clock.now, clock.sleep, bucket, Backoff(0.5, 60.0), random.Random(1))


def run(d: Dispatcher, items: list[Outgoing]) -> dict[str, tuple[str, int, str | None]]:
    finals = asyncio.run(d.deliver(items))
    assert len(finals) == len(items)
    return {f.outgoing.notification_id: (f.result, f.attempts, f.error_code) for f in finals}


def err(code: str, retry_after: float | None = None) -> SendResult:
    return SendResult(code=code, retry_after_s=retry_after)


def test_all_accepted_first_try() -> None:
    clock = FakeClock()
    got = run(dispatcher(clock, Scripted(clock, {})), [item(i) for i in range(3)])
    assert got == {f"n{i}": ("sent", 1, None) for i in range(3)}


@pytest.mark.parametrize("code", ["UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"])
def test_transient_errors_are_retried_with_growing_delays(code: str) -> None:
    clock = FakeClock()
    sender = Scripted(clock, {"tok0": [err(code), err(code), err(code)]})
    assert run(dispatcher(clock, sender), [item(0)]) == {"n0": ("sent", 4, None)}
    times = [c[0] for c in sender.calls]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.5 and gaps[2] >= 1.0  # ceilings 0.5, 1, 2; jitter in [c/2, c]


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR"])
def test_permanent_errors_are_never_retried(code: str) -> None:
    clock = FakeClock()
    sender = Scripted(clock, {"tok0": [err(code)]})
    assert run(dispatcher(clock, sender), [item(0), item(1)]) == {
        "n0": ("failed", 1, code),
        "n1": ("sent", 1, None),
    }
    assert len(sender.calls) == 2


def test_unregistered_kills_the_token() -> None:
    clock = FakeClock()
    sender = Scripted(clock, {"tok0": [err("UNREGISTERED")]})
    assert run(dispatcher(clock, sender), [item(0)]) == {"n0": ("invalid_token", 1, "UNREGISTERED")}


def test_429_pauses_every_send_for_retry_after() -> None:
    clock = FakeClock()
    sender = Scripted(clock, {"tok0": [err("QUOTA_EXCEEDED", retry_after=7)], "tok1": [err("UNAVAILABLE")]})
    d = dispatcher(clock, sender)
    got = run(d, [item(0), item(1)])
    assert got == {"n0": ("sent", 2, None), "n1": ("sent", 2, None)}
    second_round = [c for c in sender.calls[2:]]
    # tok1 alone would be retried after <= 0.5 s; the 429 holds it until 7 s have passed
    assert all((at - T0).total_seconds() >= 7 for at, _, _ in second_round)
    assert d.stats["pauses"] == 1


def test_an_outage_ends_in_expiry_at_the_ttl_and_nothing_after() -> None:
    clock = FakeClock()
    sender = Scripted(clock, {"tok0": [err("UNAVAILABLE")] * 1000})
    got = run(dispatcher(clock, sender), [item(0, ttl_s=120)])
    result, attempts, code = got["n0"]
    assert (result, code) == ("expired", "UNAVAILABLE")
    assert attempts == len(sender.calls) > 3
    assert all(at < T0 + timedelta(seconds=120) for at, _, _ in sender.calls)
    assert clock.now() - T0 < timedelta(seconds=121)  # reported at the deadline, not after a long nap


def test_ttl_sent_is_the_remaining_validity() -> None:
    clock = FakeClock()
    sender = Scripted(clock, {"tok0": [err("UNAVAILABLE")]})
    run(dispatcher(clock, sender), [item(0, ttl_s=600)])
    (t1, _, ttl1), (t2, _, ttl2) = sender.calls
    assert ttl1 == 600 and ttl2 == 600 - int((t2 - t1).total_seconds() + 0.999)


def test_global_rate_is_honoured() -> None:
    clock = FakeClock()
    sender = Scripted(clock, {})
    d = dispatcher(clock, sender, rate=100.0)
    d.batch_max = 50
    run(d, [item(i) for i in range(1000)])
    elapsed = (sender.calls[-1][0] - T0).total_seconds()
    assert 8.5 <= elapsed <= 10.5  # 1000 sends at 100/s with a 100-token burst


def test_fair_share_follows_owned_partitions() -> None:
    assert fair_share(10_000, 6, 12) == 5_000
    assert fair_share(10_000, 4, 12) + fair_share(10_000, 8, 12) == pytest.approx(10_000)
    assert fair_share(10_000, 0, 12) == 0


def test_backoff_bounds() -> None:
    b, rng = Backoff(0.5, 8.0), random.Random(3)
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        assert ceiling / 2 <= b.delay(attempt, None, rng) <= ceiling
    assert b.delay(1, 30.0, rng) == 30.0


def test_verdicts() -> None:
    assert verdict("UNREGISTERED") == "invalid_token"
    assert verdict("UNAVAILABLE") == "retry"
    assert verdict("SOMETHING_NEW") == "failed"


def test_outgoing_from_a_notification() -> None:
    n = Notification(
        notification_id="a" * 64, device_id="d1", campaign_id="c", store_id="s", ts=T0, locale="ja",
        title="ようこそ", body="10%オフ", deeplink="app://offer/c", token="tok", expires_at=T0 + timedelta(days=60),
    )  # fmt: skip
    o = outgoing_for(n)
    assert o is not None and o.collapse_key == "a" * 64 and o.data["deeplink"] == "app://offer/c"
    assert o.ttl_s(T0) == MAX_TTL_S
    assert outgoing_for(n.model_copy(update={"token": None})) is None
