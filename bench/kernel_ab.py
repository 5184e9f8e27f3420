"""(b) of the end-to-end bench side by side for two or more builds of the kernel, on one warm
broker: the same pings read by one worker after another, the kernel swapped between runs
(ABBA...), since a results file's runs an hour apart swing ±20-30 % with the shared machine.

    python -m bench.kernel_ab --kernel new=geofences/_kernel.abi3.so --kernel old=/tmp/old.so

Build the other kernel in a worktree (``CARGO_TARGET_DIR=<wt>/build/kernel bash
scripts/kernel.sh``) and copy its ``geofences/_kernel.abi3.so`` out. The repo's kernel file is
replaced (atomically) for each run and put back at the end. Only the kernel may differ: the
workers run this tree's Python.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from bench.e2e_bench import PINGS_PER_DEVICE, REPO, START, produce, run_settings, run_workers, scaled_catalog
from geofences.load import load_catalog
from streams.local_kafka import LocalKafka
from streams.phones import simulate
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics

KERNEL = REPO / "geofences" / "_kernel.abi3.so"


def install(so: Path) -> None:
    """Make ``so`` the repo's kernel for the next worker (a process already running keeps its own)."""
    tmp = KERNEL.with_suffix(".swap")
    shutil.copy(so, tmp)
    os.replace(tmp, KERNEL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", action="append", required=True, help="NAME=PATH of a built _kernel.abi3.so")
    ap.add_argument("--pings", type=int, default=1_000_000)
    ap.add_argument("--fences", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each kernel, in alternating order")
    ap.add_argument("--warmup", type=int, default=3, help="worker passes on the fresh broker first")
    args = ap.parse_args()
    kernels = [(name, Path(path)) for name, _, path in (k.partition("=") for k in args.kernel)]
    if len(kernels) < 2 or any(not path.is_file() for _, path in kernels):
        raise SystemExit("--kernel NAME=PATH at least twice, each an existing file")
    work = Path(tempfile.mkdtemp(prefix="geopush-e2e-ab-"))
    (work / "logs").mkdir()
    original = work / "original.so"
    shutil.copy(KERNEL, original)
    base = load_settings({})
    broker = LocalKafka(data_dir=work / "kafka", kafka_home=base.kafka_home, version=base.kafka_version, heap_mb=1024)
    broker.start()
    assert broker.process is not None
    try:
        catalog_dir = scaled_catalog(args.fences, work / "catalog", layout="spread")
        devices, pings = simulate(
            load_catalog([catalog_dir]), max(1, args.pings // PINGS_PER_DEVICE), int(START.timestamp() * 1000), seed=4
        )
        pings = pings[: args.pings]

        def settings(app: str) -> Settings:
            return run_settings(broker, work, catalog_dir, app, "ab")

        first = settings("produce")
        ensure_topics(first)
        asyncio.run(produce(first, devices, pings))

        def one(app: str) -> str:
            s = settings(app)
            ensure_topics(s)
            r = run_workers(s, 1, len(pings), work / "logs", broker.process.pid, "warn")  # type: ignore[union-attr]
            return f"{r.rate:,.0f} pings/s, worker {r.cpu_us:.2f} µs a ping, broker {r.broker_us:.2f}"

        for k in range(args.warmup):
            print(f"warm-up {k + 1}: {one(f'warm{k}')}", flush=True)
        for r in range(args.rounds):
            for name, path in kernels if r % 2 == 0 else kernels[::-1]:
                install(path)
                print(f"round {r + 1}, {name}: {one(f'{name}{r}')}", flush=True)
    finally:
        install(original)
        broker.stop()


if __name__ == "__main__":
    main()
