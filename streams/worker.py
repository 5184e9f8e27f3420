"""Run a Faust app as a worker process in the foreground (used by ``geopush worker`` and tests)."""

from __future__ import annotations

import logging

import faust

from streams.heap import settle_heap
from streams.settings import Settings

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def build_worker(app: faust.App, settings: Settings) -> faust.Worker:
    """A Faust worker logging at the configured level and no lower.

    Faust's start-up spinner is switched off: at WARN and above it sets the root logger to DEBUG
    (so it can spin on every record), which costs ~10 % CPU and would have aiokafka log every
    record's key and value at DEBUG."""
    worker = faust.Worker(app, loglevel=LEVELS[settings.log_level], quiet=True)
    worker.spinner = None
    return worker


def run_worker(app: faust.App, settings: Settings) -> None:
    """Start ``app`` and block until SIGTERM/SIGINT; Faust commits and closes on the way out.

    What was built so far (catalog, fence index) is frozen out of garbage collection first."""
    worker = build_worker(app, settings)
    settle_heap()
    worker.execute_from_commandline()
