"""Prometheus metrics of one worker, in their own registry (no globals), served at ``/metrics``.

Labels are bounded sets (reasons, outcomes, results, topics, partitions): never a device id,
a coordinate or a token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
FCM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Every metric geopush exports."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.pings = Counter("geopush_pings", "Ping records read from the pings topic.", registry=r)
        self.invalid = Counter("geopush_pings_invalid", "Pings sent to the dead-letter topic.", ["reason"], registry=r)
        self.matched = Counter("geopush_pings_matched", "Pings inside (or uncertain at) a geofence.", registry=r)
        self.gated = Counter("geopush_pings_gated", "Pings a gate kept from moving presence.", ["reason"], registry=r)
        self.transitions = Counter("geopush_transitions", "Presence transitions.", ["kind"], registry=r)
        self.decisions = Counter("geopush_decisions", "Decisions by outcome and reason.", ["outcome", "reason"],
                                 registry=r)  # fmt: skip
        self.deliveries = Counter("geopush_deliveries", "Final delivery results.", ["result"], registry=r)
        self.fcm_retries = Counter("geopush_fcm_retries", "FCM answers that were retried.", ["code"], registry=r)
        self.fcm_latency = Histogram("geopush_fcm_request_seconds", "Time for FCM to answer a slice of concurrent "
                                     "requests.", buckets=FCM_BUCKETS, registry=r)  # fmt: skip
        self.decision_latency = Histogram("geopush_ping_to_decision_seconds", "Ping event time to decision time.",
                                          buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.poll_phase = Histogram("geopush_decide_poll_phase_seconds", "Time of each phase of the decision step: "
                                    "decide (a poll's parse, match, rules), then of each checkpoint: outputs (acks "
                                    "of its polls' decisions, candidates, dead letters), queued (behind the previous "
                                    "checkpoint), changelog (state changes acknowledged), store (local RocksDB), "
                                    "commit.", ["phase"],
                                    buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.poll_age = Histogram("geopush_decide_ping_age_at_poll_seconds", "Age of each decision-step poll's "
                                  "oldest ping when the step received it (its broker timestamp to now): the "
                                  "wait before any work.", buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.gc_pause = Histogram("geopush_gc_pause_seconds", "Garbage-collector pauses of the worker process, "
                                  "by generation (2: a full collection).", ["generation"],
                                  buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.catalog_info = Gauge("geopush_catalog_info", "The running catalog (value 1).", ["version"], registry=r)
        self.catalog_fences = Gauge("geopush_catalog_fences", "Geofences in the running catalog.", registry=r)
        self.catalog_failures = Counter("geopush_catalog_failures", "Published catalogs this worker could not "
                                        "build (it kept the old one).", registry=r)  # fmt: skip
        self.table_keys = Gauge("geopush_table_keys", "Keys in this worker's table partitions.", ["table"], registry=r)
        self.lag = Gauge("geopush_consumer_lag", "End offset minus committed offset.",
                         ["group", "topic", "partition"], registry=r)  # fmt: skip
        self.committed = Gauge("geopush_consumer_committed_offset", "Committed offset.",
                               ["group", "topic", "partition"], registry=r)  # fmt: skip
        self.end = Gauge("geopush_topic_end_offset", "End offset.", ["topic", "partition"], registry=r)
        self.lag_errors = Counter("geopush_lag_refresh_errors", "Failed consumer-lag refreshes.", registry=r)
        self.assigned = Gauge("geopush_assigned_partitions", "Partitions this worker owns, per topic.",
                              ["group", "topic"], registry=r)  # fmt: skip

        self.owned: dict[tuple[str, str], int] = {}

    def set_assigned(self, group: str, topic: str, partitions: int) -> None:
        """How many partitions of ``topic`` this worker's ``group`` consumer owns (also for /readyz)."""
        self.owned[(group, topic)] = partitions
        self.assigned.labels(group=group, topic=topic).set(partitions)

    def started(self, groups: Iterable[str]) -> bool:
        """Whether each of these groups' steps has finished its first assignment (restored, read back)."""
        joined = {group for group, _ in self.owned}
        return all(g in joined for g in groups)

    def set_catalog(self, version: str, fences: int) -> None:
        self.catalog_info.clear()
        self.catalog_info.labels(version=version).set(1)
        self.catalog_fences.set(fences)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def names(self) -> set[str]:
        """Every sample name this registry can export (counters with ``_total``, histograms' parts)."""
        out = set()
        for family in self.registry.collect():
            base = family.name
            if family.type == "counter":
                out |= {base + "_total", base + "_created"}
            elif family.type == "histogram":
                out |= {base + "_bucket", base + "_count", base + "_sum", base + "_created"}
            else:
                out.add(base)
        return out


_by_app: dict[int, Metrics] = {}


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe`` of every amount, with one increment per bucket instead of one per
    amount (a poll at 100k fences decides ~2,000 times: 2 µs each, one by one). Falls back to
    one by one if the client's internals are not the ones this was written against (0.20+)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(buckets) != len(bounds):
        for amount in amounts:
            histogram.observe(amount)
        return
    if not len(amounts):
        return
    values = np.asarray(amounts, dtype=np.float64)
    # observe() puts an amount in the first bucket whose bound is >= it (the last is +Inf)
    counts = np.bincount(np.searchsorted(np.asarray(bounds), values, side="left"), minlength=len(bounds))
    for bucket, n in zip(buckets, counts.tolist(), strict=False):
        if n:
            bucket.inc(n)
    total.inc(float(values.sum()))


def metrics_of(app: Any) -> Metrics:
    """The metrics of one app (created on first use), shared by its registrars."""
    return _by_app.setdefault(id(app), Metrics())
