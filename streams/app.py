"""The Faust application factory: ``create_app(settings)`` builds a configured app, no singletons."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import faust

from streams.settings import Settings

Registrar = Callable[[faust.App, Settings], object]


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for SASL/SSL clusters, or None for PLAINTEXT."""
    proto = settings.kafka_security_protocol
    context = None
    if proto in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
    if proto.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=password.get_secret_value() if password else "",
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(
    settings: Settings, registrars: list[Registrar] | None = None, processing_guarantee: str = "at_least_once"
) -> faust.App:
    """Build the geopush Faust app from ``settings`` and let each registrar add its steps.

    The app hosts the worker's steps (each its own aiokafka consumer with manual commits), web
    pages and timers; ``processing_guarantee`` only concerns Faust agents (tests use one)."""
    (settings.data_dir / "tables").mkdir(parents=True, exist_ok=True)
    brokers = ";".join(f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(","))
    app = faust.App(
        settings.app_id,
        broker=brokers,
        broker_credentials=broker_credentials(settings),
        store="memory://",  # Faust keeps no tables: the steps own their state (streams/device_store.py)
        datadir=str(settings.data_dir / "tables"),
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replicas,
        topic_allow_declare=True,
        processing_guarantee=processing_guarantee,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.consumer_session_timeout_s,
        broker_heartbeat_interval=settings.consumer_heartbeat_s,
        broker_commit_every=1000,
        broker_commit_interval=timedelta(seconds=1),
        producer_acks=-1,
        table_cleanup_interval=60.0,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        # Faust's own pages would show table contents and internals: geopush serves its own
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
    )
    for register in registrars or []:
        register(app, settings)
    return app
