"""The local broker's JIT compilers' CPU, read per thread from /proc: a fresh JVM spends a large
share of its CPU compiling its request paths during the first minutes of load (measured: 1.63 of
3.7 CPU s during a first (b) at 10k fences), which a long-running production broker does not."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COMPILER_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # HotSpot's names, cut to 15 characters by Linux


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each of a process's threads, summed by thread name (threads that end
    between listing and reading are skipped)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


@dataclass(frozen=True)
class JitShare:
    """A stretch of a broker's life: its CPU seconds, and how many of them its JIT compilers used."""

    broker_s: float
    compilers_s: float

    @property
    def share(self) -> float:
        return self.compilers_s / self.broker_s if self.broker_s else 0.0

    def __sub__(self, before: JitShare) -> JitShare:
        return JitShare(self.broker_s - before.broker_s, self.compilers_s - before.compilers_s)


def jit_now(pid: int) -> JitShare:
    """The broker's CPU seconds so far, all threads and compiler threads."""
    threads = thread_cpu_s(pid)
    return JitShare(sum(threads.values()), sum(v for k, v in threads.items() if k.startswith(COMPILER_THREADS)))
