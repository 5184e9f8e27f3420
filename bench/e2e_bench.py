"""End-to-end benchmark on the real broker: raw consumer ceiling vs one and two geopush workers.

    python -m bench.e2e_bench [--pings 1000000] [--fences 10000,100000] [--out bench/results/e2e.md]

For each catalog size (the example catalog scaled with synthetic Tokyo stores), the simulator's
mix of pings goes to a 12-partition topic once; then, side by side on the same messages:
(a) a raw aiokafka consumer that reads and decodes (orjson) — the ceiling for a Python consumer,
run before and after (b), the better of the two taken (its rate swings between runs here),
(b) one geopush worker doing the whole pipeline to decision records,
(c) two workers in one consumer group (partition split, decisions compared with (b)).
Then, for the first catalog, pings at half of (b)'s rate with ``ts`` = send time, to measure
ping-to-decision latency (decision record time minus ping time). Also: peak RSS and CPU per
worker, and bytes of presence state per active device (from the changelog).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.broker_jit import jit_now, thread_cpu_s
from decisions.records import Decision
from geofences.load import load_catalog
from streams.groups import budget_group, decide_group
from streams.local_kafka import LocalKafka, _die_with_parent, free_port
from streams.phones import simulate
from streams.produce import KeyPartitions, send_records
from streams.settings import Settings, environ_for, load_settings
from streams.topics import ensure_topics, outbox_topic, presence_changelog

REPO = Path(__file__).resolve().parents[1]
START = datetime.fromisoformat("2026-11-24T12:00:00+09:00")
PINGS_PER_DEVICE = 31  # the simulator's average
STALL_S = 120.0
BUDGET_DRAIN_S = 120.0  # at most this long for the budget step to catch up once the pings are committed
# one ping in this many is a probe (a dead letter, timed): at 1 in 50 the probes' 2k dead letters a second
# cost the worker ~0.1 of a core at 100k pings/s (0.87-0.93 against 0.77-0.82 at 1 in 200, 2026-12-07)
PROBE_EVERY = 200
TICK_S = 0.005  # Kafka's producers linger 5 ms by default since 4.0 (KIP-1030); was 2 ms here


TOKYO_BOX = (35.55, 35.82, 139.55, 139.92)  # lat, lat, lng, lng: greater Tokyo, ~1,000 km²
DENSE_AT = 10_000  # synthetic stores a TOKYO_BOX holds in the "spread" layout (~10 a km²)
LAYOUTS = ("spread", "dense")


def store_box(fences: int, layout: str) -> tuple[float, float, float, float]:
    """Where the synthetic stores go: "dense" packs any number into greater Tokyo (at 100k ~10
    fences over every point, so nearly every ping is inside ~10 of them); "spread" keeps the
    density of 10k there by growing the box about its centre with the count (100k: a
    Kanto-sized box), as a real catalog of 100k stores is a country's, not a city's."""
    lat0, lat1, lng0, lng1 = TOKYO_BOX
    if layout == "dense" or fences <= DENSE_AT:
        return TOKYO_BOX
    k = (fences / DENSE_AT) ** 0.5
    clat, clng, hlat, hlng = (lat0 + lat1) / 2, (lng0 + lng1) / 2, (lat1 - lat0) / 2 * k, (lng1 - lng0) / 2 * k
    return clat - hlat, clat + hlat, clng - hlng, clng + hlng


def synthetic_stores(
    n: int, seed: int, tags: Sequence[str], box: tuple[float, float, float, float]
) -> list[dict[str, Any]]:
    """Cafés (circles 50–300 m, some octagons) spread evenly over ``box`` (see :func:`store_box`);
    ``tags``: theirs (without "cafe" the example's café campaigns skip them)."""
    rng = random.Random(seed)
    lat0, lat1, lng0, lng1 = box
    stores = []
    for i in range(n):
        lat, lng = rng.uniform(lat0, lat1), rng.uniform(lng0, lng1)
        if rng.random() < 0.7:
            fence: dict[str, Any] = {"circle": {"lat": round(lat, 6), "lng": round(lng, 6),
                                                "radius_m": rng.randint(50, 300)}}  # fmt: skip
        else:
            r = rng.uniform(0.0006, 0.002)
            ring = [[round(lat + r * math.sin(k * 0.785), 6),
                     round(lng + 1.2 * r * math.cos(k * 0.785), 6)] for k in range(8)]  # fmt: skip
            fence = {"polygon": ring}
        stores.append({"id": f"syn-{i:06d}", "name": f"Cafe {i}", "tags": list(tags), "geofence": fence})
    return stores


def scaled_catalog(
    fences: int, out: Path, seed: int = 7, tags: Sequence[str] = ("cafe", "tokyo"), layout: str = "dense"
) -> Path:
    """The example catalog plus :func:`synthetic_stores` up to ``fences`` stores, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("defaults.yaml", "campaigns.yaml"):
        shutil.copy(REPO / "config" / "catalog" / name, out / name)
    base = yaml.safe_load((REPO / "config" / "catalog" / "stores.yaml").read_text())["stores"]
    stores = list(base) + synthetic_stores(fences - len(base), seed, tags, store_box(fences, layout))
    (out / "stores.yaml").write_text(yaml.safe_dump({"stores": stores}, allow_unicode=True, sort_keys=False))
    return out


async def produce(s: Settings, devices: list[Any], pings: list[Any]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1)
    await producer.start()
    try:
        futures = [await producer.send(s.topic_devices, d.dumps(), key=d.device_id.encode()) for d in devices]
        for i, p in enumerate(pings):
            futures.append(await producer.send(s.topic_pings, orjson.dumps(p.body), key=p.device_id.encode()))
            if i % 50_000 == 0:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass
class RawRun:
    """(a): pings per second, and CPU µs per ping of the reader and of the broker meanwhile."""

    rate: float
    cpu_us: float
    broker_us: float


async def raw_consumer(s: Settings, n: int, broker_pid: int) -> RawRun:
    """(a) Read and decode every ping with a bare aiokafka consumer, this process's heap (the
    simulated pings and catalog, millions of objects) frozen out of the collector meanwhile, as
    a worker's catalog is: at 100k fences a full collection of it takes ~2.7 s (2.4M objects),
    and (a) read 114–122k pings/s in one run, 184–187k in the next (2026-12-06)."""
    gc.collect()
    gc.freeze()
    try:
        return await _raw_consumer(s, n, broker_pid)
    finally:
        gc.unfreeze()


async def _raw_consumer(s: Settings, n: int, broker_pid: int) -> RawRun:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(s.topic_pings, p) for p in range(s.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, started = 0, time.perf_counter()
        cpu0, broker0 = time.process_time(), proc_stats(broker_pid)[1]
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for msgs in batch.values():
                for m in msgs:
                    orjson.loads(m.value)
                seen += len(msgs)
        wall = time.perf_counter() - started
        cpu, broker = time.process_time() - cpu0, proc_stats(broker_pid)[1] - broker0
        return RawRun(seen / wall, cpu / seen * 1e6, broker / seen * 1e6)
    finally:
        await consumer.stop()


@dataclass
class WorkerRun:
    rate: float
    rss_mb: list[float]
    cpu_s: list[float]
    wall_s: float
    split: list[int]
    stalled_at: int | None = None
    cpu_us: float = float("nan")  # the workers' CPU µs per ping from 10 % to 90 % committed
    broker_us: float = float("nan")  # the broker's, over the same stretch
    budget_drain_s: float = 0.0  # from the last ping committed to the last candidate's decision
    budget_left: int = 0  # candidates the budget step had not committed when the wait ended


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS MiB, CPU seconds) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm / 1024, (int(fields[11]) + int(fields[12])) / ticks


def committed(admin: Any, s: Settings) -> int:
    from kafka.errors import KafkaError

    from streams.lag import group_lag

    try:
        return sum(r.committed or 0 for r in group_lag(admin, decide_group(s), {s.topic_pings}))
    except KafkaError:  # the group's coordinator is not there yet
        return 0


def budget_backlog(admin: Any, s: Settings) -> int:
    """Candidates on the outbox the budget step has not committed yet (its notify decisions)."""
    from kafka.errors import KafkaError

    from streams.lag import group_lag

    try:
        return sum(r.lag for r in group_lag(admin, budget_group(s), {outbox_topic(s)}))
    except KafkaError:
        return -1


def run_workers(
    s: Settings, n_workers: int, total: int, logs: Path, broker_pid: int, log_level: str = "warn"
) -> WorkerRun:
    """(b)/(c): start workers, time the committed offsets from 10 % to 90 % of the pings."""
    from kafka import KafkaAdminClient

    env = {**environ_for(s), "GEOPUSH_LOG_LEVEL": log_level}
    procs, ports = [], [free_port() for _ in range(n_workers)]
    for i in range(n_workers):
        port_env = {**env, "GEOPUSH_WEB_PORT": str(ports[i]), "GEOPUSH_DATA_DIR": str(s.data_dir / f"w{i}")}
        log = (logs / f"{s.app_id}-w{i}.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=port_env, cwd=REPO,
                                      stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent))  # fmt: skip
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    marks: dict[float, float] = {}
    cpu_at: dict[float, tuple[float, float]] = {}  # (workers', broker's) CPU s at each mark
    peak: list[tuple[float, float]] = [(0.0, 0.0)] * n_workers
    started = progress_at = time.monotonic()
    last = -1
    stalled = False
    try:
        while time.monotonic() - started < 1800:
            done = committed(admin, s)
            now = time.monotonic()
            if done != last:
                last, progress_at = done, now
            elif done > 0 and now - progress_at > STALL_S:
                stalled = True  # no committed progress: report it instead of waiting forever
                break
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    raise SystemExit(f"worker {i} exited; see {logs}")
                peak[i] = proc_stats(p.pid)
            for frac in (0.1, 0.9):
                if frac not in marks and done >= frac * total:
                    marks[frac] = now
                    cpu_at[frac] = (sum(c for _, c in peak), proc_stats(broker_pid)[1])
            if done >= total:
                break
            time.sleep(0.25)
        # the notify decisions come from the budget step, a step behind: stop once it is done
        drained_from = time.monotonic()
        left = budget_backlog(admin, s)
        while left != 0 and time.monotonic() - drained_from < BUDGET_DRAIN_S:
            time.sleep(0.25)
            left = budget_backlog(admin, s)
        drain_s = time.monotonic() - drained_from
        try:
            split = assignment_split(ports, s)
        except Exception:
            split = []
    finally:
        admin.close()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
    if stalled or 0.9 not in marks:
        print(f"{s.app_id}: STALLED at {last:,} of {total:,} committed (no progress for {STALL_S:.0f} s)")
        return WorkerRun(float("nan"), [r for r, _ in peak], [c for _, c in peak], time.monotonic() - started,
                         split, stalled_at=last)  # fmt: skip
    rate = 0.8 * total / (marks[0.9] - marks[0.1])
    (w0, b0), (w1, b1) = cpu_at[0.1], cpu_at[0.9]
    per_ping = 1e6 / (0.8 * total)
    return WorkerRun(rate, [r for r, _ in peak], [c for _, c in peak], time.monotonic() - started, split,
                     cpu_us=(w1 - w0) * per_ping, broker_us=(b1 - b0) * per_ping, budget_drain_s=drain_s,
                     budget_left=left)  # fmt: skip


def assignment_split(ports: list[int], s: Settings) -> list[int]:
    """Pings partitions owned by each worker, from its /metrics."""
    import httpx

    out = []
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        line = [ln for ln in text.splitlines() if ln.startswith("geopush_assigned_partitions{") and
                f'topic="{s.topic_pings}"' in ln]  # fmt: skip
        out.append(int(float(line[0].split()[-1])) if line else 0)
    return sorted(out)


def decisions_of(s: Settings) -> Counter[tuple[Any, ...]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(s.topic_decisions, bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3000)  # fmt: skip
    got: Counter[tuple[Any, ...]] = Counter()
    for m in consumer:
        d = orjson.loads(m.value)
        got[
            (d["device_id"], d["ts"], d["store_id"], d.get("campaign_id"), d["transition"], d["outcome"], d["reason"])
        ] += 1
    consumer.close()
    return got


def state_bytes(s: Settings) -> tuple[list[int], int]:
    """Size of each device's latest presence state, from the table's changelog, and how many
    records the changelog holds (states written: once a device per checkpoint it changed in)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(presence_changelog(s), bootstrap_servers=s.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=3000)  # fmt: skip
    latest: dict[bytes, int] = {}
    written = 0
    for m in consumer:
        written += 1
        if m.value is not None:
            latest[m.key] = len(m.value)
    consumer.close()
    return list(latest.values()), written


@dataclass(frozen=True)
class LoadCpu:
    """Cores each process used while the latency run's load was sent (of the machine's)."""

    generator: float
    worker: float
    broker: float
    waited: float  # share of the time some runnable task waited for a core (CPU pressure)
    broker_threads: tuple[tuple[str, float], ...] = ()  # the broker's busiest threads (name, cores)
    worker_threads: tuple[tuple[str, float], ...] = ()  # and the worker's (RocksDB's, the event loop)

    def line(self) -> str:
        def busiest(threads: tuple[tuple[str, float], ...]) -> str:
            return ", ".join(f"{name} {cores:.2f}" for name, cores in threads) or "not read"

        return (
            f"cores used during the load: load generator {self.generator:.2f}, worker {self.worker:.2f} "
            f"(its busiest threads: {busiest(self.worker_threads)}), broker {self.broker:.2f} "
            f"(of {os.cpu_count()}; its busiest threads: {busiest(self.broker_threads)}); "
            f"some task waited for a core {self.waited:.0%} of the time"
        )


def busiest_threads(
    before: dict[str, float], after: dict[str, float], wall: float, top: int = 4
) -> tuple[tuple[str, float], ...]:
    """The ``top`` threads (by name, as :func:`bench.broker_jit.thread_cpu_s` sums them) that
    used the most of a core between two readings ``wall`` seconds apart."""
    used = sorted(((name, (cpu - before.get(name, 0.0)) / wall) for name, cpu in after.items()), key=lambda t: -t[1])
    return tuple(used[:top])


def cpu_waited_s() -> float:
    """Seconds so far in which some runnable task waited for a core (Linux's CPU pressure, PSI;
    NaN where the kernel does not report it): how crowded the cores were, beyond their use."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return float("nan")
    return int(some.rsplit("total=", 1)[1]) / 1e6


def cpu_seconds(pids: tuple[int, int]) -> tuple[float, ...]:
    """CPU seconds so far of this process and of ``pids`` (0: none), for :class:`LoadCpu`."""
    return time.process_time(), *(proc_stats(pid)[1] if pid else 0.0 for pid in pids)


async def latency_run(
    s: Settings, pings: list[Any], rate: float, seconds: float, warmup: float = 0.0, pids: tuple[int, int] = (0, 0),
    ramp: bool = False, tick_s: float = TICK_S, probe_every: int = PROBE_EVERY, on_load: Callable[[], Any] | None = None,
) -> tuple[list[float], list[float], str, list[float], float, LoadCpu]:  # fmt: skip
    """Pings at ``rate``/s, sent every ``tick_s`` (those due since the last tick, one batch
    per partition, as a gateway's producer lingers), with ts = when each tick's first ping fell
    due, for ``warmup`` + ``seconds`` (``ramp``: the warm-up's rate rises evenly from 0 to
    ``rate``). Milliseconds (a) from ping time to each
    decision record, (b) from sending a probe (an unusable ping, one in ``probe_every``) to its dead
    letter — both over the measured ``seconds`` only — and (c) the probes of the warm-up (a
    fresh worker's first seconds: cold topics, caches, device records); the seconds measured
    (fewer than asked when ``pings`` run out); and the cores the load generator, the worker and
    the broker (``pids``) used while it was sent. ``on_load``: called as the load starts."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=2, acks=1)
    await producer.start()
    warm_s = warmup / 2 if ramp else warmup  # seconds of pings at the full rate the warm-up sends
    n = min(len(pings), int(rate * (seconds + warm_s)))
    bodies = encoded(pings[:n])
    partitions = len(await producer.partitions_for(s.topic_pings))
    where = KeyPartitions()
    to = [where.partition(key, partitions) for key, _ in bodies]  # before the load, not during it
    probes = {i: where.partition(probe_key(i), partitions) for i in range(0, n, probe_every)}
    # the load generator's own heap (the simulated pings, earlier runs' records) out of the
    # collector: a full collection mid-load stalled sending for ~0.75 s, then sent a burst,
    # and that showed up as the worker's first-seconds latency (measured with per-process CPU)
    gc.collect()
    gc.freeze()
    cpu_before = (*cpu_seconds(pids), cpu_waited_s())
    threads_before = thread_cpu_s(pids[1]) if pids[1] else {}
    worker_threads_before = thread_cpu_s(pids[0]) if pids[0] else {}
    started = time.perf_counter()
    if on_load is not None:
        on_load()
    measured_ms = time.time() * 1000 + warmup * 1000  # pings due from then on are measured
    ramp_s = warmup if ramp else 0.0
    epoch_ms = time.time() * 1000 - (time.perf_counter() - started) * 1000  # wall time of `started`
    try:
        sent_to = 0
        while sent_to < n:
            due = min(n, int(sent_by(time.perf_counter() - started, rate, ramp_s)) + 1)
            if due > sent_to:
                # stamped when the first of them fell due: the wait for the tick is the ping's too
                stamp = epoch_ms + due_at(sent_to, rate, ramp_s) * 1000
                await send_due(producer, s.topic_pings, (to, probes), bodies, sent_to, due, stamp)
                sent_to = due
            await asyncio.sleep(tick_s)
        await producer.flush()
        wall = time.perf_counter() - started
        cpu_after = (*cpu_seconds(pids), cpu_waited_s())
        threads = busiest_threads(threads_before, thread_cpu_s(pids[1]), wall) if pids[1] else ()
        worker_threads = busiest_threads(worker_threads_before, thread_cpu_s(pids[0]), wall) if pids[0] else ()
    finally:
        gc.unfreeze()
        await producer.stop()
    generator, worker, broker, waited = ((b - a) / wall for a, b in zip(cpu_before, cpu_after, strict=True))
    used = LoadCpu(generator, worker, broker, waited, threads, worker_threads)
    await asyncio.sleep(5)
    decided = [(Decision.loads(m.value).ts.timestamp() * 1000, m.timestamp)
               for m in await read_all(s, s.topic_decisions)]  # fmt: skip
    decisions = [b - a for a, b in decided if a >= measured_ms]
    probed = [(orjson.loads(orjson.loads(m.value)["payload"])["sent_ms"], m.timestamp)
              for m in await read_all(s, s.topic_pings_dlq)]  # fmt: skip
    sent = [(a, b) for a, b in probed if a >= measured_ms]
    cold = [b - a for a, b in probed if a < measured_ms]
    start_ms = min((a for a, _ in sent), default=0.0)
    windows: dict[int, list[float]] = {}
    for a, b in sent:
        windows.setdefault(int((a - start_ms) // 5000), []).append(b - a)
    by_window = ", ".join(
        f"{k * 5}–{k * 5 + 5} s {pct(v, 50):.0f}/{pct(v, 99):.0f}" for k, v in sorted(windows.items())
    )
    return decisions, [b - a for a, b in sent], by_window, cold, n / rate - warm_s, used


def sent_by(t: float, rate: float, ramp_s: float) -> float:
    """Pings due ``t`` seconds into a load at ``rate``/s whose rate rises evenly from 0 over
    its first ``ramp_s`` seconds (0: at the full rate from the start)."""
    if t >= ramp_s:
        return rate * (t - ramp_s / 2)
    return rate * t * t / (2 * ramp_s)


def due_at(n: float, rate: float, ramp_s: float) -> float:
    """When (seconds into the load) the ``n``-th ping falls due: :func:`sent_by`'s inverse."""
    if n >= rate * ramp_s / 2:
        return n / rate + ramp_s / 2
    return math.sqrt(2 * ramp_s * n / rate)


TS_SLOT = b'"ts":1000000000000'  # a 13-digit ts in each encoded ping, replaced at send time


def probe_key(i: int) -> bytes:
    """The key (and device id) of the probe sent after ping ``i``."""
    return b"probe-%d" % i


def encoded(pings: list[Any]) -> list[tuple[bytes, bytes]]:
    """(key, body) of each ping for the latency run, its ts a slot :func:`send_due` fills in
    (encoding each ping as it is sent cost the load generator ~2 µs of the same two cores)."""
    out = []
    for p in pings:
        body = {**p.body, "ts": 1_000_000_000_000}
        body.pop("speed_mps", None)
        out.append((p.device_id.encode(), orjson.dumps(body)))
    return out


async def send_due(
    producer: Any, topic: str, where: tuple[list[int], dict[int, int]], bodies: list[tuple[bytes, bytes]], start: int,
    end: int, stamp_ms: float,
) -> None:  # fmt: skip
    """Pings ``start`` to ``end`` with ts = ``stamp_ms``, and a probe (an unusable ping whose dead letter
    times the whole path) after each ping of ``where``'s probes, as one record batch per partition:
    a ``send`` per record cost the load generator ~20 µs each, a core at 44k pings/s on a 2-core
    machine shared with the broker and the worker under test. ``where``: each ping's partition and
    each probe's (by the ping it follows), worked out before the load."""
    to, probes = where
    by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    now = b'"ts":%d' % int(stamp_ms)
    for i in range(start, end):
        key, body = bodies[i]
        by_partition.setdefault(to[i], []).append((key, body.replace(TS_SLOT, now, 1)))
        if i in probes:
            probe = orjson.dumps({"device_id": f"probe-{i}", "sent_ms": stamp_ms})
            by_partition.setdefault(probes[i], []).append((probe_key(i), probe))
    for p, rows in by_partition.items():
        await send_records(producer, topic, p, rows)


async def read_all(s: Settings, topic: str) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    out: list[Any] = []
    try:
        while batch := await consumer.getmany(timeout_ms=3000, max_records=10_000):
            for msgs in batch.values():
                out.extend(msgs)
    finally:
        await consumer.stop()
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pings", type=int, default=1_000_000)
    ap.add_argument("--fences", default="10000,100000")
    ap.add_argument("--layout", choices=(*LAYOUTS, "both"), default="both",
                    help="of the synthetic stores past 10k (see store_box); both: each catalog size in both")  # fmt: skip
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--latency-rate", type=lambda v: [float(x) for x in v.split(",")], default=[],
                    help="only the latency runs, at these rates (comma-separated pings/s)")  # fmt: skip
    ap.add_argument("--worker-log-level", default="warn", help="of the workers (debug: a line per poll)")
    ap.add_argument("--latency-warmup", type=float, default=0.0,
                    help="seconds of load at the same rate before the measured ones (reported apart)")  # fmt: skip
    ap.add_argument("--latency-pings", type=int, default=0,
                    help="pings simulated for the latency runs if more than --pings (a load of rate × seconds)")  # fmt: skip
    ap.add_argument("--latency-ramp", action="store_true",
                    help="the warm-up's rate rises evenly from 0 to the latency rate (a step to the full rate left a "
                         "fresh worker ~1 s behind at the start, drained at its few spare percent of a core)")  # fmt: skip
    ap.add_argument("--latency-tick-ms", type=lambda v: [float(x) for x in v.split(",")], default=[TICK_S * 1000],
                    help="the latency load sends the pings due every this many ms, a batch per partition "
                    "(comma-separated: a run each, side by side)")  # fmt: skip
    ap.add_argument("--latency-probe-every", type=int, default=PROBE_EVERY,
                    help="one ping in this many is a probe (an unusable ping timed to its dead letter)")  # fmt: skip
    ap.add_argument("--latency-env", action="append", default=[],
                    help="settings of the latency runs' worker, GEOPUSH_NAME=value comma-separated; given more than "
                    "once, a run with each, side by side ('' for the defaults)")  # fmt: skip
    ap.add_argument("--latency-repeat", type=int, default=2,
                    help="latency runs in a row, each with a fresh worker and fresh topics on the same broker: the "
                         "first runs on a broker still compiling its request paths (up to ~40 %% of its CPU in "
                         "the JIT compilers during the load), the later ones on a warm broker, as in production")  # fmt: skip
    ap.add_argument("--broker-warmup", type=int, default=4,
                    help="at most this many warm-up passes on a fresh broker before timing (0: none), until its JIT "
                         "compilers use under 15 %% of its CPU in a pass: a production broker runs warm")  # fmt: skip
    ap.add_argument("--latency-profile", type=Path,
                    help="py-spy the worker and the load generator over each latency run's measured seconds: raw "
                         "stacks in this directory, one file each (worker and generator, by run)")  # fmt: skip
    ap.add_argument("--only-one-worker", action="store_true", help="only (a) and (b): for before/after comparisons")
    ap.add_argument("--out", type=Path, default=Path("bench/results/e2e.md"), help="results go on top of this file")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geopush-e2e-"))
    logs = work / "logs"
    logs.mkdir()
    base = load_settings({})
    broker = LocalKafka(data_dir=work / "kafka", kafka_home=base.kafka_home, version=base.kafka_version, heap_mb=1024)
    broker.start()
    lines: list[str] = []
    try:
        for i, (fences, layout) in enumerate(catalogs(args.fences, args.layout)):
            lines += bench_catalog(broker, fences, layout, args, work, logs, latency=i == 0)
    finally:
        broker.stop()
    header = [
        f"# End-to-end benchmark — {datetime.now(UTC):%Y-%m-%d}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with the broker and the load generator), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}.",
        f"Command: `python -m bench.e2e_bench --pings {args.pings} --fences {args.fences}"
        + (f" --layout {args.layout}" if args.layout != "both" else "")
        + (f" --latency-repeat {args.latency_repeat}" if args.latency_repeat != 2 else "")
        + (f" --latency-warmup {args.latency_warmup:g}" if args.latency_warmup else "")
        + (" --latency-ramp" if args.latency_ramp else "")
        + (f" --latency-pings {args.latency_pings}" if args.latency_pings else "")
        + "".join(f" --latency-env '{e}'" for e in args.latency_env)
        + (f" --latency-probe-every {args.latency_probe_every}" if args.latency_probe_every != PROBE_EVERY else "")
        + (
            f" --latency-tick-ms {','.join(f'{t:g}' for t in args.latency_tick_ms)}"
            if args.latency_tick_ms != [TICK_S * 1000]
            else ""
        )
        + (f" --broker-warmup {args.broker_warmup}" if args.broker_warmup != 4 else "")
        + (f" --latency-rate {','.join(f'{r:g}' for r in args.latency_rate)}" if args.latency_rate else "")
        + (f" --latency-seconds {args.latency_seconds:g}" if args.latency_seconds != 30 else "")
        + "`.",
        "Apache Kafka 4.1.1 (local KRaft, 1 GiB heap), 12 partitions, at-least-once, RocksDB tables, delivery off.",
        "",
    ]
    earlier = args.out.read_text() if args.out.exists() else ""  # the results history: newest first
    args.out.write_text("\n".join(header + lines) + "\n" + ("\n" + earlier if earlier else ""))
    print("\n".join(header + lines))


def catalogs(fences: str, layout: str) -> list[tuple[int, str]]:
    """(fences, layout) of each catalog to run; at 10k or fewer the layouts are the same stores."""
    layouts = LAYOUTS if layout == "both" else (layout,)
    out = []
    for n in (int(f) for f in fences.split(",")):
        out += [(n, lay) for lay in layouts] if n > DENSE_AT else [(n, layouts[0])]
    return out


def inside_fences(catalog: Any, pings: list[Any]) -> tuple[float, float]:
    """(share of the pings inside at least one fence, fences around a ping on average)."""
    import numpy as np

    from geofences.index import FenceIndex

    lat = np.array([p.body["lat"] for p in pings], dtype=np.float64)
    lng = np.array([p.body["lng"] for p in pings], dtype=np.float64)
    per_ping = np.bincount(FenceIndex(catalog.fences).match(lat, lng).ping, minlength=len(pings))
    return float((per_ping > 0).mean()), float(per_ping.mean())


def run_settings(broker: LocalKafka, work: Path, catalog_dir: Path, app: str, tag: str) -> Settings:
    """One run's settings: its own group, outputs and local state, reading the pings (and
    device records) of ``tag``. The silent-device sweep is off: it decides exits at wall-clock
    moments, which would make (b) and (c) differ for reasons other than the rebalance."""
    return load_settings(
        None,  # GEOPUSH_* from the environment apply (tuning experiments); the rest is fixed here
        kafka_bootstrap=broker.bootstrap, kafka_home=broker.kafka_home, app_id=f"{app}-{tag}",
        topic_pings=f"pings-{tag}", topic_devices=f"devices-{tag}", topic_decisions=f"decisions-{app}-{tag}",
        topic_notifications=f"notifications-{app}-{tag}", topic_pings_dlq=f"dlq-{app}-{tag}",
        topic_deliveries=f"deliveries-{app}-{tag}", topic_catalog=f"catalog-{app}-{tag}", topic_partitions=12,
        data_dir=work / f"var-{app}-{tag}", catalog_path=catalog_dir, deliver=False,
        consumer_session_timeout_s=10.0, consumer_heartbeat_s=2.0, presence_sweep_s=86_400.0,
    )  # fmt: skip


def bench_catalog(
    broker: LocalKafka, fences: int, layout: str, args: Any, work: Path, logs: Path, latency: bool
) -> list[str]:
    dense = layout == "dense" and fences > DENSE_AT
    tag = f"f{fences}" + ("d" if dense else "")
    name = f"{fences:,} fences" + (" (dense)" if dense else "")
    catalog_dir = scaled_catalog(fences, work / f"catalog-{tag}", layout=layout)
    catalog = load_catalog([catalog_dir])
    devices, pings = simulate(catalog, max(1, args.pings // PINGS_PER_DEVICE), int(START.timestamp() * 1000), seed=4)
    pings = pings[: args.pings]
    total = len(pings)
    inside, around = inside_fences(catalog, pings)
    lat0, lat1, lng0, lng1 = store_box(fences, layout)
    box = layout if fences > DENSE_AT else "greater Tokyo"
    where = (
        f"synthetic stores in {lat0:.2f}–{lat1:.2f} N, {lng0:.2f}–{lng1:.2f} E ({box}); "
        f"{inside:.0%} of the pings inside a fence, {around:.1f} fences around a ping on average"
    )
    print(f"[{tag}] {where}")

    def settings(app: str) -> Settings:
        return run_settings(broker, work, catalog_dir, app, tag)

    one, two = settings("one"), settings("two")
    ensure_topics(one)
    ensure_topics(two)
    t = time.perf_counter()
    asyncio.run(produce(one, devices, pings))
    print(f"[{tag}] produced {total:,} pings from {len(devices):,} devices in {time.perf_counter() - t:.1f}s")
    assert broker.process is not None
    warmed = warm_broker(settings, total, logs, broker.process.pid, args, devices, pings, tag) if latency else []
    lat_devices, lat_pings = devices, pings
    if latency and args.latency_pings > total:  # a longer load than the throughput runs' pings last
        lat_devices, lat_pings = simulate(
            catalog, args.latency_pings // PINGS_PER_DEVICE, int(START.timestamp() * 1000), seed=5
        )
    if args.latency_rate:
        return latency_sections(
            args, settings, lat_devices, lat_pings, args.latency_rate, logs, tag, broker.process.pid
        ) + warmed  # fmt: skip
    # (a) before and after (b): the reader's own rate swings ±20 % between runs on a shared
    # machine, so the ceiling is the better of the two, taken on either side of (b)
    first = asyncio.run(raw_consumer(one, total, broker.process.pid))
    print(f"[{tag}] (a) raw consumer {first.rate:,.0f}/s, CPU µs/ping {first.cpu_us:.1f} "
          f"(broker {first.broker_us:.1f})")  # fmt: skip
    b = run_workers(one, 1, total, logs, broker.process.pid, args.worker_log_level)
    print(f"[{tag}] (b) one worker {b.rate:,.0f}/s, RSS {b.rss_mb}, CPU {b.cpu_s}, "
          f"CPU µs/ping {b.cpu_us:.1f} (broker {b.broker_us:.1f}), budget caught up in {b.budget_drain_s:.1f} s "
          f"({b.budget_left} left)")  # fmt: skip
    second = asyncio.run(raw_consumer(one, total, broker.process.pid))
    print(f"[{tag}] (a) again {second.rate:,.0f}/s, CPU µs/ping {second.cpu_us:.1f} "
          f"(broker {second.broker_us:.1f})")  # fmt: skip
    a = max(first, second, key=lambda run: run.rate)
    raw = a.rate
    both = f"best of {first.rate:,.0f} before (b) and {second.rate:,.0f} after"
    if args.only_one_worker:
        shares = f"{inside:.0%} inside a fence, {around:.1f} around a ping"
        return [*warmed, f"- {name}, {total:,} pings ({shares}): (a) {raw:,.0f}/s ({both}), (b) one worker **{b.rate:,.0f}/s** "
                f"({b.rate / raw:.3f} × a), {b.cpu_s[0]:.0f} CPU s, {b.rss_mb[0]:.0f} MiB; CPU µs per ping "
                f"(a) {a.cpu_us:.1f} + broker {a.broker_us:.1f}, (b) {b.cpu_us:.1f} + broker {b.broker_us:.1f}", ""]  # fmt: skip
    c = run_workers(two, 2, total, logs, broker.process.pid, args.worker_log_level)
    print(f"[{tag}] (c) two workers {c.rate:,.0f}/s, split {c.split}")
    db, dc = decisions_of(one), decisions_of(two)
    lost = sum((db - dc).values())
    dup = sum((dc - db).values())
    sizes, written = state_bytes(one)
    rows = [
        f"## {name}, {total:,} pings ({len(devices):,} devices)",
        "",
        f"{where[0].upper()}{where[1:]}.",
        "",
        *warmed,
        "| run | pings/s | ratio | peak RSS per worker | CPU s per worker (wall s) |",
        "|---|---:|---:|---|---|",
        f"| (a) raw aiokafka consumer + orjson | {raw:,.0f} ({both}) | — | — | — |",
        f"| (b) one geopush worker | {b.rate:,.0f} | (b)/(a) = {b.rate / raw:.3f} | "
        f"{', '.join(f'{r:.0f} MiB' for r in b.rss_mb)} | {', '.join(f'{x:.0f}' for x in b.cpu_s)} ({b.wall_s:.0f}) |",
        f"| (c) two workers, one group | {c.rate:,.0f} | (c)/(b) = {c.rate / b.rate:.2f} | "
        f"{', '.join(f'{r:.0f} MiB' for r in c.rss_mb)} | {', '.join(f'{x:.0f}' for x in c.cpu_s)} ({c.wall_s:.0f}) |",
        "",
        f"- Decisions: (b) {sum(db.values()):,}, (c) {sum(dc.values()):,}; in (b) not (c): {lost}, extra in (c): {dup}."
        + (f" **(c) stalled** at {c.stalled_at:,} of {total:,} pings committed." if c.stalled_at is not None else ""),
        f"- Pings partitions per worker in (c): {c.split}.",
        f"- The budget step (notify decisions) caught up {b.budget_drain_s:.1f} s (b) and {c.budget_drain_s:.1f} s "
        f"(c) after the last ping was committed"
        + (
            f"; **{b.budget_left:,} (b) / {c.budget_left:,} (c) candidates still waiting**"
            if b.budget_left or c.budget_left
            else ""
        )
        + ".",
        f"- CPU µs per ping (reader or workers + broker, over the timed stretch): (a) {a.cpu_us:.1f} + "
        f"{a.broker_us:.1f}, (b) {b.cpu_us:.1f} + {b.broker_us:.1f}, (c) {c.cpu_us:.1f} + {c.broker_us:.1f}.",
        f"- Presence state: {len(sizes):,} devices, median {statistics.median(sizes):.0f} B, "
        f"mean {statistics.mean(sizes):.0f} B, max {max(sizes)} B per device; (b) wrote {written:,} states "
        f"({written / total:.2f} a ping: a device once per checkpoint it changed in, every "
        f"{one.commit_interval_s:g} s)."
        if sizes
        else "- Presence state: none",
        "",
    ]
    if latency:
        rows += latency_sections(args, settings, lat_devices, lat_pings, [b.rate / 2], logs, tag, broker.process.pid)
    print("\n".join(rows))
    return rows


def warm_broker(
    settings: Any, total: int, logs: Path, broker_pid: int, args: Any, devices: list[Any], pings: list[Any], tag: str
) -> list[str]:  # fmt: skip
    """Warm the fresh broker as a long-running one is: passes of the whole pipeline (a worker, as
    in (b), on fresh topics, then a raw reader) until its JIT compilers use under JIT_QUIET of its
    CPU during a pass, or ``--broker-warmup`` passes; then a live load (a worker, pings sent at
    LIVE_WARMUP_RATE). Returns the lines that report it."""
    if not args.broker_warmup:
        return []
    passes = []
    for k in range(args.broker_warmup):
        s = settings(f"warm{k}")
        ensure_topics(s)
        before, t = jit_now(broker_pid), time.perf_counter()
        run_workers(s, 1, total, logs, broker_pid, args.worker_log_level)
        asyncio.run(raw_consumer(s, total, broker_pid))
        spent = jit_now(broker_pid) - before
        passes.append(f"{time.perf_counter() - t:.0f} s, broker {spent.broker_s:.1f} CPU s of which JIT compilers "
                      f"{spent.compilers_s:.1f} ({spent.share:.0%})")  # fmt: skip
        print(f"[warm-up pass {k + 1}] {passes[-1]}")
        if spent.share < JIT_QUIET:
            break
    # the passes read pings already on the topic; a live load's fetches wait at the broker for
    # data to arrive, its code the JIT had not compiled: the first latency run had paid for it
    # (its C2 compiler at 0.29-0.39 of a core, p99 0.8-1.8 s; the next run 0.04-0.07)
    before = jit_now(broker_pid)
    live = latency_on_fresh_worker(
        args, settings, devices, pings, LIVE_WARMUP_RATE, LIVE_WARMUP_S, 0.0, logs, tag, broker_pid, "warmlive"
    )
    spent = jit_now(broker_pid) - before
    return [f"- Broker warm-up before timing (passes of a worker and a raw reader over the same pings, until its JIT "
            f"compilers use under {JIT_QUIET:.0%} of its CPU, at most {args.broker_warmup}): "
            + "; ".join(f"pass {i + 1}: {line}" for i, line in enumerate(passes))
            + f"; then a live load at {LIVE_WARMUP_RATE:,} pings/s for {live.measured:.0f} s, broker "
            f"{spent.broker_s:.1f} CPU s of which JIT compilers {spent.compilers_s:.1f} ({spent.share:.0%}); "
            f"its latency, not counted: {live.figures()}.", ""]  # fmt: skip


JIT_QUIET = 0.15  # measured: 30 %, 16 %, 12 %, 11 % in four passes at 10k (a fresh JVM keeps compiling for minutes)
LIVE_WARMUP_RATE = 100_000  # pings/s of the warm-up's live load, near the latency runs' rates
LIVE_WARMUP_S = 10.0


def latency_sections(
    args: Any, settings: Any, devices: list[Any], pings: list[Any], rates: list[float], logs: Path, tag: str,
    broker_pid: int,
) -> list[str]:  # fmt: skip
    """:func:`latency_section` at each rate, ``--latency-repeat`` times: each run a fresh worker
    and fresh topics on the same broker."""
    return [
        line for k, rate in enumerate(rates) for i in range(args.latency_repeat)
        for j, tick in enumerate(args.latency_tick_ms) for v, env in enumerate(args.latency_env or [""])
        for line in latency_section(
            args, settings, devices, pings, rate, logs, tag, broker_pid,
            f"lat{k or ''}-{i}{f't{j}' if j else ''}{f'v{v}' if v else ''}", first_run=k == i == j == v == 0,
            tick_s=tick / 1000, env=worker_env(env),
        )
    ]  # fmt: skip


def worker_env(spec: str) -> dict[str, str]:
    """``--latency-env``'s ``GEOPUSH_X=1,GEOPUSH_Y=2`` as a dict (empty: none)."""
    pairs = [item.split("=", 1) for item in spec.split(",") if item.strip()]
    if any(len(kv) != 2 or not kv[0].strip().startswith("GEOPUSH_") for kv in pairs):
        raise SystemExit(f"--latency-env {spec!r}: expected GEOPUSH_NAME=value, comma-separated")
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass(frozen=True)
class Latency:
    """One latency run's milliseconds (see :func:`latency_run`) and the cores used meanwhile."""

    decisions: list[float]  # ping time to decision record
    probes: list[float]  # probe sent to its dead letter, over the measured seconds
    by_window: str  # the probes' p50/p99 per 5 s
    cold: list[float]  # the probes of the warm-up
    measured: float  # seconds
    cpu: LoadCpu
    gc: str = ""  # the worker's garbage-collector pauses (its metrics), from its start
    probe_every: int = PROBE_EVERY

    def figures(self) -> str:
        return (
            f"ping to dead letter ({len(self.probes):,} probes, one ping in {self.probe_every}) "
            f"p50 **{pct(self.probes, 50):.0f} ms**, p99 **{pct(self.probes, 99):.0f} ms**; ping to decision "
            f"({len(self.decisions):,} decisions) p50 {pct(self.decisions, 50):.0f} ms, "
            f"p99 {pct(self.decisions, 99):.0f} ms"
        )


def latency_section(
    args: Any, settings: Any, devices: list[Any], pings: list[Any], rate: float, logs: Path, tag: str,
    broker_pid: int, app: str, first_run: bool, tick_s: float = TICK_S, env: dict[str, str] | None = None,
) -> list[str]:  # fmt: skip
    """Ping-to-output latency at a fixed rate, on a fresh worker that is ready before the load
    (``env``: settings of its own)."""
    warmup = args.latency_warmup
    r = latency_on_fresh_worker(
        args, settings, devices, pings, rate, args.latency_seconds, warmup, logs, tag, broker_pid, app,
        args.latency_ramp, tick_s, env or {},
    )  # fmt: skip
    own = f" (worker with {', '.join(f'{k}={v}' for k, v in env.items())})" if env else ""
    how = "rising evenly from 0 to that rate" if args.latency_ramp else "at the same rate"
    first = (
        f" after a {warmup:.0f}-s warm-up {how} (its {len(r.cold):,} probes: p50 {pct(r.cold, 50):.0f}, "
        f"p99 {pct(r.cold, 99):.0f} ms)"
        if warmup
        else ""
    )
    return [
        f"- [{app}: {'the first latency run' if first_run else 'fresh worker and topics'}{own}] "
        f"Latency at {rate:,.0f} pings/s ({'--latency-rate' if args.latency_rate else 'half of (b)'}) "
        f"for {r.measured:.0f} s{first}, sent every {tick_s * 1000:g} ms with ts = when the first ping of "
        f"the batch fell due, worker ready before the load: {r.figures()}.",
        f"  Dead-letter p50/p99 ms per 5 s of load: {r.by_window}; {r.cpu.line()}; {r.gc}.",
        "",
    ]


def gc_pauses(metrics: str, before: str | None = None) -> str:
    """The worker's garbage-collector pauses by generation, from its metrics' text: since its
    start, or since ``before`` (the same metrics read earlier, e.g. when the load began)."""

    def read(text: str) -> dict[str, dict[str, float]]:
        seen: dict[str, dict[str, float]] = {}
        for line in text.splitlines():
            if line.startswith("geopush_gc_pause_seconds_") and "generation=" in line:
                name, _, value = line.rpartition(" ")
                what = name[len("geopush_gc_pause_seconds_") : name.index("{")]
                generation = name.split('generation="', 1)[1].split('"', 1)[0]
                if what in ("count", "sum"):
                    seen.setdefault(generation, {})[what] = float(value)
        return seen

    now, then = read(metrics), read(before or "")
    pauses = []
    for g, v in sorted(now.items()):
        count, spent = (v.get(k, 0.0) - then.get(g, {}).get(k, 0.0) for k in ("count", "sum"))
        if count:
            pauses.append(f"gen{g} {count:.0f}× {spent * 1000:.0f} ms")
    since = "since its start" if before is None else "during the load"
    return f"worker GC pauses {since}: " + (", ".join(pauses) or "none")


def latency_on_fresh_worker(
    args: Any, settings: Any, devices: list[Any], pings: list[Any], rate: float, seconds: float, warmup: float,
    logs: Path, tag: str, broker_pid: int, app: str, ramp: bool = False, tick_s: float = TICK_S,
    worker_env: dict[str, str] | None = None,
) -> Latency:  # fmt: skip
    """:func:`latency_run` on a fresh worker (app ``app``, topics of its own) ready before the load."""
    import httpx

    lat_s = settings(app).model_copy(update={"topic_pings": f"pings-{app}-{tag}"})
    ensure_topics(lat_s)
    port = free_port()
    env = {**environ_for(lat_s), "GEOPUSH_LOG_LEVEL": args.worker_log_level, "GEOPUSH_WEB_PORT": str(port),
           **(worker_env or {})}  # fmt: skip
    log = (logs / f"{app}-worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # fmt: skip
    try:
        asyncio.run(produce(lat_s, devices, []))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        time.sleep(3)
        pids = (proc.pid, broker_pid)
        every = args.latency_probe_every
        metrics = f"http://127.0.0.1:{port}/metrics"
        before = httpx.get(metrics, timeout=5).text
        spies: list[subprocess.Popen[bytes]] = []
        profile = (
            (lambda: spies.extend(profiled(args.latency_profile, app, proc.pid, warmup, seconds)))
            if args.latency_profile
            else None
        )
        run = asyncio.run(latency_run(lat_s, pings, rate, seconds, warmup, pids, ramp, tick_s, every, profile))
        for spy in spies:
            spy.wait(60)
        after = httpx.get(metrics, timeout=5).text  # the run waits 5 s after the load: all reported
        return Latency(*run, probe_every=every, gc=f"{gc_pauses(after)}; {gc_pauses(after, before)}")
    finally:
        proc.terminate()
        proc.wait(60)


def profiled(out: Path, app: str, worker: int, warmup: float, seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy recording the worker and this process (the load generator) over the measured
    seconds of a latency load (started after ``warmup``), as raw stacks in ``out``: where a
    live worker's time goes at a rate, which no in-process bench shows (a poll's size, the
    broker's answers, the generator beside it)."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit(f"--latency-profile needs py-spy beside {sys.executable} (pip install py-spy)")
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(spy), "record", "-r", "200", "-f", "raw", "--nonblocking", "-d", f"{max(1, int(seconds))}"]
    later = f"sleep {warmup:g}; exec " if warmup else "exec "
    return [
        subprocess.Popen(["sh", "-c", later + " ".join([*cmd, "-p", str(pid), "-o", str(out / f"{app}-{who}.txt")])],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for who, pid in (("worker", worker), ("generator", os.getpid()))
    ]  # fmt: skip


if __name__ == "__main__":
    main()
