"""Worker subprocesses for integration tests: start, wait for a log line, stop or kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.local_kafka import _die_with_parent
from streams.settings import Settings
from tests.conftest import REPO, settings_env


class WorkerProcess:
    """A geopush (or test) worker in its own process, logging to a file the test can read."""

    def __init__(self, settings: Settings, argv: list[str], log_path: Path, **env: str) -> None:
        self.settings = settings
        self.argv = argv
        self.log_path = log_path
        self.env = {**settings_env(settings), **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # dies with the test run, even a killed one
            [sys.executable, *self.argv],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, needle: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not in worker log after {timeout_s}s:\n{self.log()[-4000:]}")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
