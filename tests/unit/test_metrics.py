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


def test_decision_metrics_count_each_decision_once_and_each_transition_once() -> None:
    """The decision step counts what it decides but its notify candidates (the budget step
    counts those, once final); a transition with several campaigns counts once."""
    from datetime import UTC, datetime, timedelta

    from decisions.decided import Rows
    from decisions.decision_row import DecisionRow
    from streams.agents.decide import observe_decisions
    from streams.metrics import Metrics

    ts_ms = int((datetime.now(UTC) - timedelta(seconds=0.3)).timestamp() * 1000)

    def decision(campaign: str, outcome: str, reason: str, device: str = "d1") -> DecisionRow:
        return DecisionRow(device, ts_ms, "s1", campaign, "enter", outcome, reason, None, "v")  # type: ignore[arg-type]

    m = Metrics()
    found = [decision("c1", "notify", "ok"), decision("c2", "suppressed", "quiet_hours"),
             decision("c3", "suppressed", "quiet_hours"), decision("c1", "suppressed", "cooldown", "d2")]  # fmt: skip
    by_label = observe_decisions(m, Rows(found))
    assert by_label == {("notify", "ok"): 1, ("suppressed", "quiet_hours"): 2, ("suppressed", "cooldown"): 1}
    text = m.exposition().decode()
    assert 'geopush_decisions_total{outcome="suppressed",reason="quiet_hours"} 2.0' in text
    assert 'outcome="notify"' not in text  # a candidate, not final yet
    assert 'geopush_transitions_total{kind="enter"} 2.0' in text  # d1's enter once, d2's once
    assert "geopush_ping_to_decision_seconds_count 3.0" in text
    assert 'geopush_ping_to_decision_seconds_bucket{le="0.25"} 0.0' in text
    assert 'geopush_ping_to_decision_seconds_bucket{le="0.5"} 3.0' in text
    observe_decisions(m, Rows([decision("c1", "notify", "ok")]), transitions=False)  # the budget step's final one
    text = m.exposition().decode()
    assert 'geopush_decisions_total{outcome="notify",reason="ok"} 1.0' in text
    assert "geopush_ping_to_decision_seconds_count 4.0" in text
