"""A worker built by ``create_app`` with one relay agent: input topic -> output topic.

Run as ``python -m tests.integration.relay_worker``; settings come from GEOPUSH_* and the
topics from RELAY_IN / RELAY_OUT. Used to prove the broker, the factory and Faust work end to end.
"""

from __future__ import annotations

import os

import faust

from streams.app import create_app
from streams.settings import Settings, load_settings
from streams.worker import run_worker


def register_relay(app: faust.App, settings: Settings) -> None:
    source = app.topic(os.environ["RELAY_IN"], value_serializer="raw", key_serializer="raw")
    sink = app.topic(os.environ["RELAY_OUT"], value_serializer="raw", key_serializer="raw")

    @app.agent(source)
    async def relay(stream: faust.StreamT) -> None:
        async for key, value in stream.items():
            await sink.send(key=key, value=value)

    @app.task
    async def announce() -> None:
        print("relay ready", flush=True)


if __name__ == "__main__":
    s = load_settings()
    run_worker(create_app(s, [register_relay], os.environ.get("RELAY_GUARANTEE", "at_least_once")), s)
