"""Simulated phones: realistic ping traces around a catalog's stores (for the demo and tests).

Kinds of trace: ``visit`` (walk in, dwell minutes, walk out), ``pass`` (walk by outside),
``drive`` (50 km/h straight through a store), ``jitter`` (stand at a boundary, GPS noise),
``poor`` (accuracy 150–600 m), ``far`` (nowhere near a store). Some pings are duplicated or
arrive late. Deterministic for a seed; the clock is the pings' own timestamps.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from decisions.records import Device
from geofences.geodesy import destination
from geofences.load import Catalog
from geofences.shapes import Fence
from streams.settings import Settings

KINDS = ("visit", "pass", "drive", "jitter", "poor", "far")
WEIGHTS = (0.25, 0.15, 0.1, 0.05, 0.05, 0.4)


@dataclass(frozen=True)
class SimPing:
    ts_ms: int
    body: dict[str, object]

    @property
    def device_id(self) -> str:
        return str(self.body["device_id"])


def _point(f: Fence, east: float, north: float) -> tuple[float, float]:
    lat, lng = destination(f.lat, f.lng, east, north)
    return float(lat), float(lng)


def _ping(device: str, ts: int, lat: float, lng: float, acc: float, speed: float | None, rng: random.Random) -> SimPing:
    body: dict[str, object] = {
        "device_id": device, "ts": ts, "lat": round(lat, 7), "lng": round(lng, 7), "accuracy_m": round(acc, 1),
    }  # fmt: skip
    if speed is not None and rng.random() < 0.7:
        body["speed_mps"] = round(speed, 2)
    if rng.random() < 0.3:
        body["ts"] = datetime.fromtimestamp(ts / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return SimPing(ts, body)


def trace(kind: str, device: str, f: Fence, start_ms: int, rng: random.Random) -> list[SimPing]:
    """One device's pings for one trace kind around fence ``f``."""
    out: list[SimPing] = []
    t = start_ms
    noise = lambda s: rng.gauss(0.0, s)  # noqa: E731
    heading = rng.uniform(0, 2 * math.pi)
    ux, uy = math.sin(heading), math.cos(heading)
    if kind in ("visit", "pass", "drive"):
        speed = 1.3 if kind != "drive" else 14.0
        offset = 0.0 if kind != "pass" else f.radius_m + rng.uniform(60, 200)
        px, py = -uy * offset, ux * offset
        along = -(f.radius_m + 400.0)
        dwell_left = rng.uniform(150, 600) if kind == "visit" else 0.0
        interval = 15.0 if kind != "drive" else 5.0
        while along < f.radius_m + 400.0:
            acc = rng.uniform(5, 20)
            e, n = px + ux * along + noise(5), py + uy * along + noise(5)
            moving = speed
            if kind == "visit" and abs(along) < 1.0 and dwell_left > 0:
                dwell_left -= interval
                moving = 0.3
                e, n = px + noise(8), py + noise(8)
            else:
                along += speed * interval
            out.append(_ping(device, t, *_point(f, e, n), acc, moving, rng))
            t += int(interval * 1000 * rng.uniform(0.9, 1.1))
    elif kind == "jitter":
        for _ in range(30):
            r = f.radius_m + noise(6)
            out.append(_ping(device, t, *_point(f, ux * r, uy * r), rng.uniform(8, 25), 0.2, rng))
            t += 20_000
    elif kind == "poor":
        for _ in range(20):
            out.append(_ping(device, t, *_point(f, noise(30), noise(30)), rng.uniform(150, 600), None, rng))
            t += 30_000
    else:  # far
        d = rng.uniform(2_000, 8_000)
        for i in range(10):
            out.append(_ping(device, t, *_point(f, ux * d + i * 15, uy * d), rng.uniform(5, 30), 1.0, rng))
            t += 30_000
    return out


def simulate(
    catalog: Catalog, devices: int, start_ms: int, seed: int = 1, spread_s: float = 600.0,
    messy: bool = True,
) -> tuple[list[Device], list[SimPing]]:  # fmt: skip
    """Device records (most opted in) and all pings, in arrival order (mostly by ts)."""
    rng = random.Random(seed)
    records: list[Device] = []
    pings: list[SimPing] = []
    for i in range(devices):
        device = f"sim-{seed}-{i:06d}"
        roll = rng.random()
        if roll < 0.95:
            records.append(Device(
                device_id=device, token=f"tok-{device}", locale=rng.choice(["ja", "ja-JP", "en", "en-US", "fr"]),
                opt_in=roll < 0.9, updated_at=datetime.fromtimestamp(start_ms / 1000, tz=UTC),
            ))  # fmt: skip
        kind = rng.choices(KINDS, WEIGHTS)[0]
        fence = rng.choice(catalog.fences)
        pings.extend(trace(kind, device, fence, start_ms + int(rng.uniform(0, spread_s) * 1000), rng))
    pings.sort(key=lambda p: p.ts_ms)
    if messy:
        pings = _mess_up(pings, rng)
    return records, pings


def _mess_up(pings: list[SimPing], rng: random.Random) -> list[SimPing]:
    """Duplicate ~1 % of pings and deliver ~1 % up to a minute late."""
    out: list[SimPing] = []
    late: list[tuple[int, SimPing]] = []
    for p in pings:
        while late and late[0][0] <= p.ts_ms:
            out.append(late.pop(0)[1])
        r = rng.random()
        if r < 0.01:
            late.append((p.ts_ms + rng.randint(20_000, 60_000), p))
            late.sort(key=lambda x: x[0])
            continue
        out.append(p)
        if r < 0.02:
            out.append(p)
    out.extend(p for _, p in late)
    return out


def iter_lines(pings: list[SimPing]) -> Iterator[bytes]:
    import orjson

    for p in pings:
        yield orjson.dumps(p.body)


def produce_waves(
    settings: Settings, catalog: Catalog, devices: int, seed: int, rate: float, waves: int,
    start_ms: int, echo: Callable[[str], None] = print,
) -> None:  # fmt: skip
    """Produce waves of simulated phones to Kafka, each wave starting where the last ended."""
    import orjson
    from kafka import KafkaProducer

    producer = KafkaProducer(**settings.kafka_client_kwargs(), linger_ms=20, acks="all")
    t0, sent, wave = time.monotonic(), 0, 0
    try:
        while waves == 0 or wave < waves:
            records, pings = simulate(catalog, devices, start_ms, seed + wave)
            for r in records:
                producer.send(settings.topic_devices, key=r.device_id.encode(), value=r.dumps())
            producer.flush()
            for p in pings:
                producer.send(settings.topic_pings, key=p.device_id.encode(), value=orjson.dumps(p.body))
                sent += 1
                if rate > 0 and sent % 50 == 0:
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            producer.flush()
            echo(f"wave {wave}: {len(records)} devices, {len(pings)} pings produced")
            start_ms = max(p.ts_ms for p in pings) + 1000
            wave += 1
    finally:
        producer.close()
