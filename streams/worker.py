"""Run a Faust app as a worker process in the foreground (used by ``geopush worker`` and tests)."""

from __future__ import annotations

import faust

from streams.settings import Settings


def run_worker(app: faust.App, settings: Settings) -> None:
    """Start ``app`` and block until SIGTERM/SIGINT; Faust commits and closes on the way out."""
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
