"""The worker logs at the configured level: never DEBUG (raw keys and values) unless asked."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.app import create_app
from streams.settings import load_settings
from streams.worker import build_worker


@pytest.fixture
def saved_root() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.parametrize(("name", "level"), [("warn", logging.WARNING), ("error", logging.ERROR),
                                             ("info", logging.INFO), ("debug", logging.DEBUG)])  # fmt: skip
def test_root_logger_gets_the_configured_level(saved_root: None, tmp_path: Path, name: str, level: int) -> None:
    s = load_settings({}, log_level=name, data_dir=tmp_path, app_id=f"log-{name}")
    worker = build_worker(create_app(s), s)
    worker._setup_logging()  # what the worker does first when it starts
    assert logging.getLogger().level == level
    assert logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG) == (level == logging.DEBUG)
