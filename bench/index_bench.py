"""Fence index benchmark: geopush's H3 index vs shapely 2 STRtree, same fences, same pings.

    python -m bench.index_bench [--fences 100000] [--pings 1000000] [--out bench/results/index.md]

Two mixes: "city" (fences packed into greater Tokyo, 1.5° square) and "country" (spread over
Japan). Fences: circles 50–500 m and polygons of 8–200 vertices. Pings: 80 % uniform over the
region, 20 % within 600 m of a random fence. Reports build time, index memory, batch throughput,
per-ping latency, the cost a ping in batches of 50, 600 and 5,000 (a live worker's polls), and
asserts both methods return identical (ping, fence) pairs. The index runs in its compiled
kernel where built (`make kernel`); its numpy path is measured beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import platform
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import shapely

from geofences.geodesy import destination, distance_m, within_m
from geofences.index import FenceIndex
from geofences.shapes import Fence

REGIONS = {"city": (35.0, 36.5, 139.0, 140.5), "country": (31.0, 43.0, 130.0, 145.0)}


def make_fences(n: int, region: tuple[float, float, float, float], rng: np.random.Generator) -> list[Fence]:
    s, nth, w, e = region
    fences = []
    for i in range(n):
        lat, lng = rng.uniform(s, nth), rng.uniform(w, e)
        if rng.random() < 0.6:
            fences.append(Fence(f"c{i}", "circle", lat, lng, float(rng.uniform(50, 500)), None, False))
            continue
        k = int(rng.integers(8, 201))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = rng.uniform(50, 400) * rng.uniform(0.7, 1.0, k)
        plat, plng = destination(lat, lng, r * np.sin(ang), r * np.cos(ang))
        geom = shapely.Polygon(np.c_[plng, plat])
        if not geom.is_valid:
            geom = shapely.make_valid(geom).buffer(0)
        if geom.geom_type != "Polygon":
            geom = max(geom.geoms, key=lambda g: g.area)
        shapely.prepare(geom)
        rad = float(distance_m(lat, lng, plat, plng).max())
        fences.append(Fence(f"p{i}", "polygon", lat, lng, rad, geom, False))
    return fences


def make_pings(n: int, fences: list[Fence], region: tuple[float, float, float, float], rng: np.random.Generator):
    s, nth, w, e = region
    near = n // 5
    lat = rng.uniform(s, nth, n)
    lng = rng.uniform(w, e, n)
    pick = rng.integers(0, len(fences), near)
    clat = np.array([fences[i].lat for i in pick])
    clng = np.array([fences[i].lng for i in pick])
    d = rng.uniform(0, 600, near)
    a = rng.uniform(0, 2 * np.pi, near)
    for k in range(near):
        la, ln = destination(float(clat[k]), float(clng[k]), d[k] * np.sin(a[k]), d[k] * np.cos(a[k]))
        lat[k], lng[k] = float(la), float(ln)
    return lat, lng


class StrtreeMatcher:
    """The baseline: shapely 2 STRtree, vectorised query, exact test on the same shapes."""

    def __init__(self, fences: list[Fence]) -> None:
        self.fences = fences
        self.circle_ids = np.array([i for i, f in enumerate(fences) if f.geometry is None], dtype=np.int64)
        self.poly_ids = np.array([i for i, f in enumerate(fences) if f.geometry is not None], dtype=np.int64)
        boxes = []
        for i in self.circle_ids:
            f = fences[i]
            r = np.array([-f.radius_m, f.radius_m]) * 1.001
            la, _ = destination(f.lat, f.lng, np.zeros(2), r)
            _, ln = destination(f.lat, f.lng, r, np.zeros(2))
            boxes.append(shapely.box(ln[0], la[0], ln[1], la[1]))
        self.ctree = shapely.STRtree(boxes)
        self.clat = np.array([fences[i].lat for i in self.circle_ids])
        self.clng = np.array([fences[i].lng for i in self.circle_ids])
        self.crad = np.array([fences[i].radius_m for i in self.circle_ids])
        self.ptree = shapely.STRtree([fences[i].geometry for i in self.poly_ids])

    def match(self, lat: np.ndarray, lng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pts = shapely.points(lng, lat)
        p, c = self.ctree.query(pts)
        ok = within_m(self.clat[c], self.clng[c], lat[p], lng[p], self.crad[c])
        p2, g = self.ptree.query(pts, predicate="intersects")
        ping = np.concatenate([p[ok], p2])
        fence = np.concatenate([self.circle_ids[c[ok]], self.poly_ids[g]])
        return ping, fence


def timed(fn, *args, repeat: int = 3):
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def built(fn):
    """(object, seconds, RSS growth in MB) of building something; freed memory is handed back
    to the OS first (glibc's malloc_trim, as the index does after a build), so the growth is
    this build's, not the high-water of whatever ran before."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
    before = rss_mb()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    gc.collect()
    return out, dt, rss_mb() - before


POLL_SIZES = (50, 600, 5000)  # pings a batch: a quiet poll, a live poll at ~140k pings/s, a backlog's


def batched_us(idx: FenceIndex, lat: np.ndarray, lng: np.ndarray, size: int, pings: int = 200_000) -> float:
    """µs a ping to match ``pings`` of them in batches of ``size``, best of three: a live worker
    matches a poll at a time, and small batches cost more a ping (each level's cells are found
    ping by ping rather than swept)."""
    n = min(pings, len(lat)) // size * size
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for s in range(0, n, size):
            idx.match(lat[s : s + size], lng[s : s + size])
        best = min(best, time.perf_counter() - t)
    return best / max(1, n) * 1e6


def run(mix: str, n_fences: int, n_pings: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    region = REGIONS[mix]
    fences = make_fences(n_fences, region, rng)
    lat, lng = make_pings(n_pings, fences, region, rng)
    idx, build_s, idx_rss = built(lambda: FenceIndex(fences))
    tree, tree_build_s, tree_rss = built(lambda: StrtreeMatcher(fences))
    t_idx, m = timed(idx.match, lat, lng)
    t_tree, (tp, tf) = timed(tree.match, lat, lng)
    ours = set(zip(m.ping.tolist(), m.fence.tolist(), strict=False))
    theirs = set(zip(tp.tolist(), tf.tolist(), strict=False))
    assert ours == theirs, f"{mix}: results differ: {len(ours ^ theirs)} pairs"
    if idx.compiled:
        numpy_idx, numpy_build_s, _ = built(lambda: FenceIndex(fences, kernel=False))
        t_numpy, mn = timed(numpy_idx.match, lat, lng)
        assert np.array_equal(mn.ping, m.ping) and np.array_equal(mn.fence, m.fence), f"{mix}: numpy path differs"
        del numpy_idx
    else:
        numpy_build_s, t_numpy = build_s, t_idx
    one_lat, one_lng = float(lat[n_pings // 5 + 1]), float(lng[n_pings // 5 + 1])
    reps = 2000
    t = time.perf_counter()
    for _ in range(reps):
        idx.match_point(one_lat, one_lng)
    per_ping_us = (time.perf_counter() - t) / reps * 1e6
    return {
        "mix": mix,
        "kernel": idx.compiled,
        "fences": n_fences,
        "pings": n_pings,
        "matches": len(ours),
        "cells": idx.cell_count(),
        "levels": ",".join(str(lv.res) for lv in idx.levels),
        "build_s": build_s,
        "index_tables_mb": idx.nbytes() / 2**20,
        "index_rss_mb": idx_rss,
        "strtree_build_s": tree_build_s,
        "strtree_rss_mb": tree_rss,
        "ours_pings_per_s": n_pings / t_idx,
        "strtree_pings_per_s": n_pings / t_tree,
        "ratio": t_tree / t_idx,
        "numpy_build_s": numpy_build_s,
        "numpy_pings_per_s": n_pings / t_numpy,
        "numpy_ratio": t_tree / t_numpy,
        "single_ping_us": per_ping_us,
        **{f"batch_{size}_us": batched_us(idx, lat, lng, size) for size in POLL_SIZES},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fences", type=int, default=100_000)
    ap.add_argument("--pings", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = [run(mix, args.fences, args.pings, args.seed) for mix in ("city", "country")]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    head = (
        f"# Fence index benchmark\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()} · "
        f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"`python -m bench.index_bench --fences {args.fences} --pings {args.pings}` · peak RSS {rss:.0f} MB\n\n"
    )
    cols = list(rows[0])
    table = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    for r in rows:
        table += "| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()) + " |\n"
    text = head + table
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
