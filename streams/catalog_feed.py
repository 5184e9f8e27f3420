"""Hot apply: catalogs published to a compacted topic, picked up by every running worker.

``publish`` validates first and never publishes a bad catalog. Each worker reads the topic on
its own (no consumer group: every worker must see every version), builds the new engine in a
thread off the hot path and swaps it in between two batches. A version it cannot build is
reported and the running catalog stays.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from geofences.load import Catalog, catalog_files, load_catalog
from streams.heap import collections_paused
from streams.settings import Settings

log = logging.getLogger("geopush.catalog")
KEY = b"catalog"


def payload(catalog: Catalog) -> bytes:
    """The published form: the exact YAML files, their version hash and when."""
    files = {Path(f).name: Path(f).read_text(encoding="utf-8") for f in catalog.sources}
    return orjson.dumps({"v": 1, "version": catalog.version, "files": files, "published_at": datetime.now(UTC)})


def publish(settings: Settings, paths: Sequence[Path]) -> Catalog:
    """Validate (raises CatalogInvalid) then publish to the catalog topic; return the catalog."""
    from kafka import KafkaProducer

    catalog = load_catalog(list(paths))
    producer = KafkaProducer(**settings.kafka_client_kwargs(), acks="all")
    try:
        producer.send(settings.topic_catalog, key=KEY, value=payload(catalog)).get(timeout=30)
    finally:
        producer.close()
    return catalog


def catalog_from_payload(raw: bytes) -> Catalog:
    """Rebuild a catalog from a published record (validated again, as any input is)."""
    obj = orjson.loads(raw)
    with tempfile.TemporaryDirectory(prefix="geopush-catalog-") as tmp:
        for name, text in obj["files"].items():
            safe = Path(name).name
            (Path(tmp) / safe).write_text(text, encoding="utf-8")
        with collections_paused():
            catalog = load_catalog(catalog_files([Path(tmp)]))
    if catalog.version != obj.get("version"):
        log.warning("published catalog says version %s, content hashes to %s", obj.get("version"), catalog.version)
    return catalog


class CatalogFeed:
    """Follows the catalog topic and hands each new, buildable version to ``on_catalog``."""

    def __init__(
        self,
        settings: Settings,
        current_version: Callable[[], str],
        on_catalog: Callable[[Catalog], None],
        on_failure: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.current_version = current_version
        self.on_catalog = on_catalog
        self.on_failure = on_failure

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tp = TopicPartition(self.settings.topic_catalog, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            latest: bytes | None = None
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for msg in batch.get(tp, []):
                    if msg.key == KEY and msg.value is not None:
                        latest = msg.value
                if latest is not None and not batch.get(tp):
                    await self._apply(latest)
                    latest = None
        finally:
            await consumer.stop()

    async def _apply(self, raw: bytes) -> None:
        try:
            version = str(orjson.loads(raw).get("version"))
        except (orjson.JSONDecodeError, AttributeError):
            version = "?"
        if version == self.current_version():
            return
        loop = asyncio.get_running_loop()
        try:
            catalog = await loop.run_in_executor(None, catalog_from_payload, raw)
            await loop.run_in_executor(None, self.on_catalog, catalog)
        except Exception as exc:
            log.error("catalog %s could not be applied; keeping %s: %s", version, self.current_version(), exc)
            self.on_failure(version)
