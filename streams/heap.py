"""Keeping the garbage collector's pauses off the hot path of a long-lived worker.

A worker holds a large, long-lived heap (the catalog, the fence index, decoded device states)
and makes millions of short-lived objects per minute. CPython's full collections walk the whole
heap: with the 10k-fence catalog they took up to ~0.9 s each, every few seconds under load — the
worst of the ping-to-decision p99. Objects built at start-up (or by a catalog swap) are moved to
the permanent generation, which collections skip; refcounting still frees them when unused.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

GEN0_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)


def settle_heap() -> float:
    """Collect once, then freeze what is left (start-up objects) out of future collections;
    raise the young-generation threshold so fewer objects are promoted. Seconds it took."""
    began = time.perf_counter()
    gc.unfreeze()  # what an earlier settle froze is judged again (a swapped-out catalog)
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return time.perf_counter() - began


class _PausedBuilds:
    """How many builds run under :func:`collections_paused` (a start-up and a reload may
    overlap), and whether collections ran before the first began."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.was_enabled = True


_BUILDS = _PausedBuilds()


@contextmanager
def collections_paused() -> Iterator[None]:
    """No automatic collections while a catalog is read and indexed: its millions of objects all
    live on, and each full collection would walk them again (100k stores: reading 10.5 -> 7.2 s,
    ``bench.catalog_bench``). Reference counting still frees what dies; the settle that follows
    a build collects once. Collections resume when the last overlapping build ends, if they ran
    before the first began."""
    b = _BUILDS
    with b.lock:
        if b.count == 0:
            b.was_enabled = gc.isenabled()
            gc.disable()
        b.count += 1
    try:
        yield
    finally:
        with b.lock:
            b.count -= 1
            if b.count == 0 and b.was_enabled:
                gc.enable()


@dataclass
class Pauses:
    """Garbage-collector pauses while installed: seconds per generation (2 is a full collection).

    The callback only appends to lists (it runs inside whatever allocation triggered the
    collection, so it must take no lock); ``drain`` hands the pauses to a metric from a timer."""

    seconds: dict[int, list[float]] = field(default_factory=lambda: {0: [], 1: [], 2: []})
    _began: float = 0.0

    def install(self) -> Pauses:
        gc.callbacks.append(self._observe)
        return self

    def uninstall(self) -> None:
        gc.callbacks.remove(self._observe)

    def __enter__(self) -> Pauses:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds[info["generation"]].append(time.perf_counter() - self._began)

    def drain(self) -> dict[int, list[float]]:
        """The pauses since the last drain (and forget them)."""
        taken, self.seconds = self.seconds, {0: [], 1: [], 2: []}
        return taken

    def summary(self) -> str:
        parts = []
        for gen, spent in self.seconds.items():
            if spent:
                parts.append(f"gen{gen} {len(spent)}× {sum(spent) * 1000:.0f} ms (max {max(spent) * 1000:.1f})")
        return ", ".join(parts) or "none"
