"""The worker's web endpoints: ``/metrics``, ``/healthz``, ``/readyz``, ``/dashboard`` (+ its data).

Consumer lag is read here, on an interval, with aiokafka's admin client on the event loop (end
offset minus committed offset, per group, topic and partition), and a short history of
snapshots is kept for the dashboard. The server binds 127.0.0.1 by default; bound anywhere
else, the dashboard requires ``GEOPUSH_WEB_TOKEN`` as a bearer token (header, or ``?token=``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.groups import decide_group, worker_groups
from streams.lag import PartitionLag, group_lag_async
from streams.metrics import Metrics, metrics_of
from streams.settings import Settings

log = logging.getLogger("geopush.web")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HISTORY = 720  # dashboard samples kept (an hour at 5 s)


@dataclass
class LagWatch:
    """The last lag reading, when the broker last answered, and the dashboard's history."""

    settings: Settings
    metrics: Metrics
    groups: dict[str, set[str]]
    rows: list[PartitionLag] = field(default_factory=list)
    ok_at: float | None = None
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _admin: Any = None
    _consumer: Any = None
    started_at: float = field(default_factory=time.time)  # counters count from here

    async def read(self) -> list[PartitionLag]:
        """One admin round trip per group, on the event loop (aiokafka)."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        if self._admin is None:
            admin = AIOKafkaAdminClient(**self.settings.aiokafka_kwargs(), request_timeout_ms=10_000)
            consumer = AIOKafkaConsumer(enable_auto_commit=False, **self.settings.aiokafka_kwargs())
            await admin.start()
            await consumer.start()
            self._admin, self._consumer = admin, consumer
        try:
            return [
                row for group, topics in self.groups.items()
                for row in await group_lag_async(self._admin, self._consumer, group, topics)
            ]  # fmt: skip
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        if admin is not None:
            await admin.close()
        if consumer is not None:
            await consumer.stop()

    async def refresh(self) -> None:
        try:
            rows = await asyncio.wait_for(self.read(), timeout=30.0)
        except Exception as exc:
            self.metrics.lag_errors.inc()
            log.warning("consumer lag refresh failed: %s", exc)
            await self.close()
            return
        self.rows, self.ok_at = rows, time.monotonic()
        for r in rows:
            labels = {"group": r.group, "topic": r.topic, "partition": str(r.partition)}
            self.metrics.lag.labels(**labels).set(r.lag)
            self.metrics.committed.labels(**labels).set(r.committed if r.committed is not None else -1)
            self.metrics.end.labels(topic=r.topic, partition=str(r.partition)).set(r.end)

    def broker_ok(self) -> bool:
        return self.ok_at is not None and time.monotonic() - self.ok_at < max(30.0, 3 * self.settings.lag_refresh_s)

    def sample(self) -> dict[str, Any]:
        """One dashboard point: lag per partition, counter totals, the catalog."""
        m = _collect(self.metrics)  # one pass over the registry for the whole point
        point = {
            "t": time.time(),
            "lag": {f"{r.group}|{r.topic}|{r.partition}": r.lag for r in self.rows},
            "pings": _total(m, "geopush_pings"),
            "decisions": _by_labels(m, "geopush_decisions", "reason"),
            "deliveries": _by_labels(m, "geopush_deliveries", "result"),
            "catalog": next(iter(_by_labels(m, "geopush_catalog_info", "version")), None),
            "fences": _total(m, "geopush_catalog_fences"),
        }
        self.history.append(point)
        return point


def _collect(m: Metrics) -> dict[str, list[Any]]:
    """Samples per metric family (``_created`` timestamps left out), read once."""
    return {f.name: [x for x in f.samples if not x.name.endswith("_created")] for f in m.registry.collect()}


def _total(samples: dict[str, list[Any]], family: str) -> float:
    return sum(x.value for x in samples.get(family, []))


def _by_labels(samples: dict[str, list[Any]], family: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for x in samples.get(family, []):
        out[x.labels[label]] = out.get(x.labels[label], 0.0) + x.value
    return out


def authorized(settings: Settings, request: Request) -> bool:
    """Loopback needs nothing; elsewhere the bearer token (header or ``token`` query) must match."""
    if settings.web_host in LOOPBACK:
        return True
    if settings.web_token is None:
        return False
    header = request.headers.get("Authorization", "")
    given = header.removeprefix("Bearer ") if header.startswith("Bearer ") else request.query.get("token", "")
    return hmac.compare_digest(given.encode(), settings.web_token.get_secret_value().encode())


def register_web(app: faust.App, settings: Settings) -> None:
    """Pages and the lag/history timers of one worker."""
    metrics = metrics_of(app)
    watch = LagWatch(settings, metrics, worker_groups(settings))
    page_html = resources.files("streams").joinpath("dashboard.html").read_text(encoding="utf-8")

    @app.timer(settings.lag_refresh_s)
    async def refresh_lag() -> None:
        await watch.refresh()

    @app.timer(settings.dashboard_sample_s)
    async def sample_dashboard() -> None:
        watch.sample()

    @app.page("/metrics")
    async def metrics_page(self: View, request: Request) -> Response:
        return self.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: View, request: Request) -> Response:
        checks = {
            "catalog_loaded": bool(_by_labels(_collect(metrics), "geopush_catalog_info", "version")),
            "partitions_assigned": metrics.owned.get((decide_group(settings), settings.topic_pings), 0) > 0,
            "broker_reachable": watch.broker_ok(),
            "steps_started": metrics.started(worker_groups(settings)),
        }
        ready = all(checks.values())
        return self.json({"ready": ready, "checks": checks}, status=200 if ready else 503)

    @app.page("/dashboard")
    async def dashboard(self: View, request: Request) -> Response:
        if not authorized(settings, request):
            return self.text(_DENIED, status=401)
        return self.html(page_html)

    @app.page("/dashboard/data")
    async def dashboard_data(self: View, request: Request) -> Response:
        if not authorized(settings, request):
            return self.json({"error": _DENIED}, status=401)
        if not watch.history:
            watch.sample()
        return self.json({"app_id": settings.app_id, "started_at": watch.started_at, "samples": list(watch.history)})


_DENIED = "the dashboard needs the bearer token in GEOPUSH_WEB_TOKEN when the worker is not bound to loopback"
