"""Bulk histogram observations: the same exposition as observing one amount at a time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.metrics import LATENCY_BUCKETS, observe_many


def exposition(amounts: list[float], bulk: bool) -> list[str]:
    r = CollectorRegistry()
    h = Histogram("t_latency_seconds", "test", buckets=LATENCY_BUCKETS, registry=r)
    if bulk:
        observe_many(h, amounts)
    else:
        for a in amounts:
            h.observe(a)
    return [line for line in generate_latest(r).decode().splitlines() if "_created" not in line]


def test_observe_many_fills_the_buckets_and_sum_as_observe_does() -> None:
    # on every bound (le is inclusive), between bounds, zero, past the last bound (+Inf)
    amounts = [0.0, *LATENCY_BUCKETS, 0.004, 0.0051, 0.3, 7.5, 3600.0, 3600.5, 1e6, 0.07, 0.07]
    bulk = exposition(amounts, bulk=True)
    assert bulk == exposition(amounts, bulk=False)
    assert 't_latency_seconds_bucket{le="0.005"} 3.0' in bulk  # 0.0, 0.004 and 0.005 itself
    assert f't_latency_seconds_bucket{{le="+Inf"}} {len(amounts)}.0' in bulk
    assert exposition([], bulk=True) == exposition([], bulk=False)
