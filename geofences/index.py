"""The fence index: H3 cells to candidate fences, then an exact test only where it is needed.

Build (all vectorised, per H3 resolution chosen from each fence's size):
* ``centre`` cells: cells whose centre lies inside the fence outline (h3o ``ContainsCentroid``);
* ``edge`` cells: the cells of points sampled along the outline (see SAMPLE_SPACING), plus
  their neighbours — every cell the boundary passes through is among them;
* **interior** = centre − edge: cells wholly inside the fence, matched with no exact test;
* **boundary** = edge: candidates, tested exactly (ellipsoidal distance for circles,
  prepared-shapely ``intersects_xy`` for polygons).
Every cell overlapping a fence is interior or boundary, so no inside ping can be missed.

Query: one vectorised H3 conversion of the batch at the finest resolution in use, parents by
bit arithmetic, ``searchsorted`` per resolution, CSR expansion to (ping, fence) pairs. A coarse
lat/lng occupancy grid first drops pings far from every fence without touching H3.

Where the compiled kernel is built (``geofences._kernel``, Rust, ``make kernel``), queries run
there instead: the same cells (checked against h3o), the batch swept through each level's
sorted cells in cell order, the same exact tests in one pass; pairs too close to a boundary for double precision come back undecided and
are settled here by the exact path, so both give the same answers, pair for pair.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import h3
import numpy as np
import pyarrow as pa
import shapely
from h3.api import basic_int as h3_int
from h3ronpy import ContainmentMode, grid_disk
from h3ronpy import vector as h3v
from numpy.typing import ArrayLike, NDArray

from geofences.geodesy import distance_m, radii, within_m, within_m_one, wrap_lng
from geofences.native import pure_python
from geofences.shapes import Fence

MIN_RES, MAX_RES = 5, 13
CELLS_PER_FENCE = 48
# Boundary samples every 1.5 average edges: a boundary point is then within 0.75 edges of a
# sample, less than the narrowest width of any neighbour cell (√3 × the smallest edge, itself
# > 0.75 average edges), so the sample's cell is the point's cell or one of its neighbours.
SAMPLE_SPACING = 1.5
CIRCUMRADIUS_BOUND = 1.2  # × average edge length; measured maximum 1.107
GRID_MAX_CELLS = 8_000_000
_RES_SHIFT = np.uint64(52)
_RES_MASK = np.uint64(0xF) << _RES_SHIFT
_RES_BITS = 0xF << 52  # _RES_MASK as a plain int

IntArray = NDArray[np.int64]
KERNEL_API = 8  # the kernel's signature this module speaks (kernel/src/lib.rs: API)


def load_kernel(environ: Mapping[str, str] | None = None) -> Any:
    """The compiled matching kernel module (geofences._kernel), or None: not built, or switched
    off (``GEOPUSH_KERNEL=off``, or ``GEOPUSH_PURE_PYTHON=1``, which also turns off the mypyc
    modules), or built for another version of this module (then with a warning to rebuild it)."""
    env = os.environ if environ is None else environ
    if pure_python(env) or env.get("GEOPUSH_KERNEL", "").lower() in ("0", "false", "no", "off"):
        return None
    try:
        kernel = importlib.import_module("geofences._kernel")
    except ImportError:
        return None
    if getattr(kernel, "API", None) != KERNEL_API:
        warnings.warn("geopush: geofences._kernel is stale; `make kernel` rebuilds it", RuntimeWarning, stacklevel=2)
        return None
    return kernel


@functools.cache
def kernel_function(name: str) -> Any:
    """The kernel's function ``name``, looked up once (None: no kernel, or an older one without it)."""
    kernel = load_kernel()
    return getattr(kernel, name, None) if kernel is not None else None


@dataclass(frozen=True)
class Matches:
    """(ping, fence) pairs, sorted by ping then fence; ``certain`` is False where the ping's
    accuracy circle crosses the fence boundary (only from :meth:`FenceIndex.match_accuracy`)."""

    ping: IntArray
    fence: IntArray
    certain: NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return len(self.ping)


@dataclass
class _Level:
    """The cells of one H3 resolution: sorted unique cells and a CSR of (fence, interior)."""

    res: int
    cells: NDArray[np.uint64]
    offsets: IntArray
    fences: NDArray[np.int32]
    interior: NDArray[np.bool_]


def _return_freed_memory() -> None:
    """Hand the build's freed temporaries back to the OS: glibc keeps them otherwise (~150 MB
    of a 100k-fence build), and a worker builds an index at every catalog version."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


def choose_resolution(area_m2: float) -> int:
    """The finest resolution whose cells still cover the fence with ~CELLS_PER_FENCE cells."""
    for res in range(MAX_RES, MIN_RES - 1, -1):
        if area_m2 / h3.average_hexagon_area(res, "m^2") <= CELLS_PER_FENCE:
            return res
    return MIN_RES


def choose_resolutions(area_m2: NDArray[np.float64]) -> IntArray:
    """``choose_resolution`` for many fences at once."""
    res = np.full(len(area_m2), MIN_RES, dtype=np.int64)
    for r in range(MIN_RES + 1, MAX_RES + 1):
        res[area_m2 / h3.average_hexagon_area(r, "m^2") <= CELLS_PER_FENCE] = r
    return res


def to_parent(cells: NDArray[np.uint64], res: int) -> NDArray[np.uint64]:
    """H3 parents at ``res`` by bit arithmetic (set the resolution, fill finer digits with 7)."""
    unused = np.uint64((1 << (3 * (15 - res))) - 1)
    return ((cells & ~_RES_MASK) | (np.uint64(res) << _RES_SHIFT)) | unused


def parent_of(cell: int, res: int) -> int:
    """``to_parent`` for one cell as a plain int (the per-ping path)."""
    return (cell & ~_RES_BITS) | (res << 52) | ((1 << (3 * (15 - res))) - 1)


def cell_order(cells: NDArray[np.uint64], res: int) -> IntArray:
    """A permutation sorting cells of resolution ``res``, ascending within runs of 2**k.

    A cell's varying bits (base cell and ``res`` digits) leave k = 57 - 3·res bits free, where
    the position is packed so a plain integer sort (SIMD, ~10x faster than argsort) does it;
    batches longer than 2**k are ordered run by run, which is all the lookups need.
    """
    shift = 3 * (15 - res)
    width = 7 + 3 * res
    free = 64 - width
    run = 1 << free
    payload = (cells >> np.uint64(shift)) & np.uint64((1 << width) - 1)
    order = np.empty(len(cells), dtype=np.int64)
    for start in range(0, len(cells), run):
        part = payload[start : start + run]
        key = (part << np.uint64(free)) | np.arange(len(part), dtype=np.uint64)
        key.sort()
        order[start : start + len(part)] = (key & np.uint64(run - 1)).astype(np.int64) + start
    return order


def _list_array(arr: object) -> tuple[NDArray[np.uint64], IntArray]:
    """Values and offsets of an Arrow list array returned by h3ronpy."""
    a = pa.array(arr)
    values = np.asarray(a.values, dtype=np.uint64)
    offsets = np.asarray(a.offsets, dtype=np.int64)
    return values, offsets


def _unique_pairs(a: IntArray, b: NDArray[np.uint64]) -> tuple[IntArray, NDArray[np.uint64]]:
    """Distinct (a, b) pairs."""
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.ones(len(a), dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep].astype(np.int64), b[keep]


def destination_many(
    lat: NDArray[np.float64], lng: NDArray[np.float64], radius: NDArray[np.float64], theta: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Points at bearing ``theta`` and distance ``radius`` from each centre: (n, len(theta)) arrays."""
    east = radius[:, None] * np.sin(theta)[None, :]
    north = radius[:, None] * np.cos(theta)[None, :]
    lat0 = lat[:, None]
    m0, _ = radii(lat0)
    out_lat = lat0 + np.degrees(north / m0)
    for _ in range(3):
        m, _ = radii(0.5 * (lat0 + out_lat))
        out_lat = lat0 + np.degrees(north / m)
    mid = 0.5 * (lat0 + out_lat)
    _, n = radii(mid)
    out_lng = lng[:, None] + np.degrees(east / (n * np.cos(np.radians(mid))))
    return out_lat, out_lng


def _unwrap(geom: shapely.Geometry) -> list[shapely.Geometry]:
    """Split a shape in (lng', lat) with lng' beyond ±180 into parts h3 can read."""
    x0, _, x1, _ = geom.bounds
    if x0 >= -180 and x1 <= 180:
        return [geom]
    parts = []
    for lo, hi, shift in ((-540.0, -180.0, 360.0), (-180.0, 180.0, 0.0), (180.0, 540.0, -360.0)):
        piece = geom.intersection(shapely.box(lo, -90, hi, 90))
        if not piece.is_empty:
            parts.append(shapely.affinity.translate(piece, xoff=shift) if shift else piece)
    return parts


class FenceIndex:
    """Batch point-in-fence matching over many fences (built once, queried many times)."""

    def __init__(self, fences: Sequence[Fence], kernel: bool | None = None) -> None:
        """``kernel``: True requires the compiled kernel, False never uses it, None uses it if built."""
        self.fences = list(fences)
        self._module = None if kernel is False else load_kernel()
        if kernel and self._module is None:
            raise RuntimeError("the compiled kernel geofences._kernel is not built (`make kernel`)")
        n = len(self.fences)
        self.store_ids = [f.store_id for f in self.fences]
        self.is_circle = np.array([f.geometry is None for f in self.fences], dtype=bool)
        self.lat = np.array([f.lat for f in self.fences], dtype=np.float64)
        self.lng = np.array([f.lng for f in self.fences], dtype=np.float64)
        self.radius = np.array([f.radius_m for f in self.fences], dtype=np.float64)
        self.shifted = np.array([f.shifted for f in self.fences], dtype=bool)
        self.geoms = np.array([f.geometry for f in self.fences], dtype=object)
        self.res = choose_resolutions(self._areas_m2())
        self.bounds = np.full((n, 4), np.nan)
        if n and (~self.is_circle).any():
            shapely.prepare(self.geoms[~self.is_circle])
            self.bounds[~self.is_circle] = shapely.bounds(self.geoms[~self.is_circle])
        self.levels = self._build_levels()
        self.max_res = max((lv.res for lv in self.levels), default=MAX_RES)
        self._build_grid()
        self._metric: np.ndarray | None = None
        self._kernel: Any = None if self._module is None else self._module.Kernel(**self._kernel_args())
        _return_freed_memory()

    # ------------------------------------------------------------------ build
    def _areas_m2(self) -> NDArray[np.float64]:
        area = math.pi * self.radius**2
        poly = np.flatnonzero(~self.is_circle)
        if len(poly):
            m, n = radii(self.lat[poly])
            scale = m * n * np.cos(np.radians(self.lat[poly])) * (math.pi / 180) ** 2
            area[poly] = shapely.area(self.geoms[poly]) * scale
        return area

    def _build_levels(self) -> list[_Level]:
        """One table per resolution in use, built in chunks of fences on all cores (h3o frees the GIL)."""
        jobs: list[tuple[int, IntArray]] = []
        for res in sorted(set(self.res.tolist())):
            ids = np.flatnonzero(self.res == res)
            jobs.extend((res, chunk) for chunk in np.array_split(ids, max(1, min(16, len(ids) // 2000))))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            parts = list(pool.map(lambda job: (job[0], self._entries(job[1], job[0])), jobs))
        levels = []
        for res in sorted(set(self.res.tolist())):
            mine = [p for r, p in parts if r == res]
            cells = np.concatenate([p[0] for p in mine])
            fence = np.concatenate([p[1] for p in mine])
            inner = np.concatenate([p[2] for p in mine])
            order = np.argsort(cells, kind="stable")
            cells, fence, inner = cells[order], fence[order], inner[order]
            uniq, starts = np.unique(cells, return_index=True)
            offsets = np.append(starts, len(cells)).astype(np.int64)
            level = _Level(res, uniq, offsets, fence.astype(np.int32), inner)
            for table in (level.cells, level.offsets, level.fences, level.interior):
                table.flags.writeable = False  # the compiled kernel reads these very arrays
            levels.append(level)
        return levels

    def _entries(self, ids: IntArray, res: int) -> tuple[NDArray[np.uint64], IntArray, NDArray[np.bool_]]:
        """(cell, fence, interior) of the fences ``ids``, each (cell, fence) once."""
        owner, geoms = self._outlines(ids)
        # cells whose centre is inside
        centre_vals, centre_off = _list_array(
            h3v.wkb_to_cells(shapely.to_wkb(geoms), res, containment_mode=ContainmentMode.ContainsCentroid)
        )
        centre_fence = np.repeat(owner, np.diff(centre_off))
        # cells along the boundary, and their neighbours
        step_deg = SAMPLE_SPACING * h3.average_hexagon_edge_length(res, "m") / 111_320.0
        dense = shapely.segmentize(shapely.boundary(geoms), step_deg)
        coords, which = shapely.get_coordinates(dense, return_index=True)
        sample_cells = self._cells(coords[:, 1], coords[:, 0], res)
        s_fence, s_cell = _unique_pairs(owner[which], sample_cells)
        disk_vals, disk_off = _list_array(grid_disk(pa.array(s_cell), 1))
        edge_fence = np.repeat(s_fence, np.diff(disk_off))
        # interior = centre - edge; every (cell, fence) once, boundary wins
        cells = np.concatenate([disk_vals, centre_vals])
        fence = np.concatenate([edge_fence, centre_fence])
        inner = np.concatenate([np.zeros(len(disk_vals), bool), np.ones(len(centre_vals), bool)])
        order = np.lexsort((inner, cells, fence))
        cells, fence, inner = cells[order], fence[order], inner[order]
        first = np.ones(len(cells), dtype=bool)
        first[1:] = (cells[1:] != cells[:-1]) | (fence[1:] != fence[:-1])
        cells, fence, inner = cells[first], fence[first], inner[first]
        return self._refine_circles(cells, fence, inner, res)

    def _cells(self, lat: NDArray[np.float64], lng: NDArray[np.float64], res: int) -> NDArray[np.uint64]:
        """H3 cells of points: the kernel's conversion where built (h3o's cells, ~4x cheaper)."""
        if self._module is not None:
            cells: NDArray[np.uint64] = self._module.cells(
                np.ascontiguousarray(lat, dtype=np.float64), np.ascontiguousarray(lng, dtype=np.float64), res
            )
            return cells
        return np.asarray(h3v.coordinates_to_cells(lat, lng, res), dtype=np.uint64)

    def _refine_circles(
        self, cells: NDArray[np.uint64], fence: IntArray, inner: NDArray[np.bool_], res: int
    ) -> tuple[NDArray[np.uint64], IntArray, NDArray[np.bool_]]:
        """Circles are simple: a cell is interior when its farthest point is inside, and out
        when its nearest point is outside, judged from its centre and a bound on its
        circumradius (1.2 average edges; the largest measured is 1.107)."""
        ci = np.flatnonzero(self.is_circle[fence])
        if not len(ci):
            return cells, fence, inner
        centres = pa.record_batch(h3v.cells_to_coordinates(pa.array(cells[ci])))
        clat = np.asarray(centres.column(0), dtype=np.float64)
        clng = np.asarray(centres.column(1), dtype=np.float64)
        f = fence[ci]
        d = distance_m(self.lat[f], self.lng[f], clat, clng)
        bound = CIRCUMRADIUS_BOUND * h3.average_hexagon_edge_length(res, "m")
        inner = inner.copy()
        inner[ci] = d + bound <= self.radius[f]
        keep = np.ones(len(cells), dtype=bool)
        keep[ci] = d - bound <= self.radius[f]
        return cells[keep], fence[keep], inner[keep]

    def _outlines(self, ids: IntArray) -> tuple[IntArray, np.ndarray]:
        """Outline shapes h3 can read (circles as 48-gons, antimeridian split), with owners."""
        outlines = np.empty(len(ids), dtype=object)
        circ = ids[self.is_circle[ids]]
        if len(circ):
            theta = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
            lat, lng = destination_many(self.lat[circ], self.lng[circ], self.radius[circ], theta)
            lng = self.lng[circ, None] + wrap_lng(lng - self.lng[circ, None])
            outlines[self.is_circle[ids]] = shapely.polygons(np.stack([lng, lat], axis=-1))
        outlines[~self.is_circle[ids]] = self.geoms[ids[~self.is_circle[ids]]]
        x0, _, x1, _ = shapely.bounds(outlines).T
        wraps = np.flatnonzero((x0 < -180) | (x1 > 180))
        if not len(wraps):
            return ids.astype(np.int64), outlines
        owners = [ids.astype(np.int64)]
        extra: list[shapely.Geometry] = []
        extra_owner: list[int] = []
        for k in wraps:
            parts = _unwrap(outlines[k])
            outlines[k] = parts[0]
            extra.extend(parts[1:])
            extra_owner.extend([int(ids[k])] * (len(parts) - 1))
        owners.append(np.array(extra_owner, dtype=np.int64))
        return np.concatenate(owners), np.concatenate([outlines, np.array(extra, dtype=object)])

    def _build_grid(self) -> None:
        """A coarse lat/lng occupancy grid: True where some fence might be."""
        if not self.fences:
            self._grid = np.zeros((1, 1), dtype=bool)
            self._grid_origin = (0.0, 0.0)
            self._grid_step = 1.0
            return
        pad_m = self.radius + 2.0 * np.array([h3.average_hexagon_edge_length(int(r), "m") for r in self.res])
        dlat = pad_m / 110_574.0
        dlng = pad_m / (111_320.0 * np.cos(np.radians(np.minimum(np.abs(self.lat) + dlat, 89.0))))
        lat0, lat1 = self.lat - dlat, self.lat + dlat
        lng0, lng1 = self.lng - dlng, self.lng + dlng
        south, north = float(lat0.min()), float(lat1.max())
        west, east = float(lng0.min()), float(lng1.max())
        if west < -180 or east > 180 or east - west > 180:
            west, east = -180.0, 180.0  # fences around the antimeridian: span the globe
        step = max(0.004, math.sqrt((north - south) * (east - west) / GRID_MAX_CELLS))
        rows = math.ceil((north - south) / step) + 1
        cols = math.ceil((east - west) / step) + 1
        r0 = np.floor((lat0 - south) / step).astype(np.int64)
        r1 = np.floor((lat1 - south) / step).astype(np.int64)
        # rectangles in column space; those across the antimeridian split in two
        lo, hi = lng0.copy(), lng1.copy()
        west_part = lo < -180
        east_part = hi > 180
        extra_lo = np.concatenate([lo[west_part] + 360.0, np.full(east_part.sum(), -180.0)])
        extra_hi = np.concatenate([np.full(west_part.sum(), 180.0), hi[east_part] - 360.0])
        extra_r0 = np.concatenate([r0[west_part], r0[east_part]])
        extra_r1 = np.concatenate([r1[west_part], r1[east_part]])
        lo, hi = np.clip(lo, -180.0, 180.0), np.clip(hi, -180.0, 180.0)
        lo, hi = np.concatenate([lo, extra_lo]), np.concatenate([hi, extra_hi])
        rr0, rr1 = np.concatenate([r0, extra_r0]), np.concatenate([r1, extra_r1])
        c0 = np.clip(np.floor((lo - west) / step).astype(np.int64), 0, cols - 1)
        c1 = np.clip(np.floor((hi - west) / step).astype(np.int64), 0, cols - 1)
        diff = np.zeros((rows + 1, cols + 1), dtype=np.int32)
        np.add.at(diff, (rr0, c0), 1)
        np.add.at(diff, (rr0, c1 + 1), -1)
        np.add.at(diff, (rr1 + 1, c0), -1)
        np.add.at(diff, (rr1 + 1, c1 + 1), 1)
        grid = diff.cumsum(axis=0).cumsum(axis=1)[:rows, :cols] > 0
        self._grid, self._grid_origin, self._grid_step = grid, (south, west), step

    def _kernel_args(self) -> dict[str, object]:
        """The tables in the kernel's form: levels as lists of arrays, polygons as flat rings."""
        n = len(self.fences)
        ring_count = np.zeros(n, dtype=np.int64)
        xy = np.zeros((0, 2), dtype=np.float64)
        vert_count = np.zeros(0, dtype=np.int64)
        poly = np.flatnonzero(~self.is_circle)
        if len(poly):
            parts, part_owner = shapely.get_parts(self.geoms[poly], return_index=True)
            rings, ring_part = shapely.get_rings(parts, return_index=True)
            ring_owner = poly[part_owner[ring_part]]
            np.add.at(ring_count, ring_owner, 1)
            order = np.argsort(ring_owner, kind="stable")  # rings grouped by fence, in fence order
            coords, which = shapely.get_coordinates(rings[order], return_index=True)
            xy = np.ascontiguousarray(coords, dtype=np.float64)
            vert_count = np.bincount(which, minlength=len(rings)).astype(np.int64)
        return {
            "max_res": self.max_res,
            "levels": [lv.res for lv in self.levels],
            "cells": [lv.cells for lv in self.levels],
            "offsets": [lv.offsets for lv in self.levels],
            "fences": [lv.fences for lv in self.levels],
            "interior": [lv.interior for lv in self.levels],
            "grid": np.ascontiguousarray(self._grid),
            "south": float(self._grid_origin[0]),
            "west": float(self._grid_origin[1]),
            "step": float(self._grid_step),
            "circle": self.is_circle,
            "lat": self.lat,
            "lng": self.lng,
            "radius": self.radius,
            "shifted": self.shifted,
            "bounds": np.ascontiguousarray(np.nan_to_num(self.bounds, nan=0.0)),
            "ring_start": np.concatenate([[0], np.cumsum(ring_count)]).astype(np.int64),
            "vert_start": np.concatenate([[0], np.cumsum(vert_count)]).astype(np.int64),
            "xy": xy,
        }

    @property
    def compiled(self) -> bool:
        """Whether queries run in the compiled kernel."""
        return self._kernel is not None

    def _near_some_fence(self, lat: NDArray[np.float64], lng: NDArray[np.float64]) -> NDArray[np.bool_]:
        south, west = self._grid_origin
        finite = np.isfinite(lat) & np.isfinite(lng)  # not a point: near nothing
        r = np.floor((np.where(finite, lat, south - 1.0) - south) / self._grid_step).astype(np.int64)
        c = np.floor((np.where(finite, lng, west) - west) / self._grid_step).astype(np.int64)
        rows, cols = self._grid.shape
        ok = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        out = np.zeros(len(lat), dtype=bool)
        out[ok] = self._grid[r[ok], c[ok]]
        return out

    # ------------------------------------------------------------------ query
    def candidates(self, lat: ArrayLike, lng: ArrayLike) -> tuple[IntArray, IntArray, NDArray[np.bool_]]:
        """(ping, fence, interior) for every fence whose cells hold the ping; unsorted."""
        lat = np.asarray(lat, dtype=np.float64)
        lng = np.asarray(lng, dtype=np.float64)
        near = np.flatnonzero(self._near_some_fence(lat, lng))
        empty = np.zeros(0, np.int64)
        if not len(near) or not self.levels:
            return empty, empty, np.zeros(0, bool)
        cells = self._cells(lat[near], lng[near], self.max_res)
        # sorted needles make every level's searchsorted cache-friendly; parents keep the order
        order = cell_order(cells, self.max_res)
        cells, near = cells[order], near[order]
        pings, fences, inner = [], [], []
        for lv in self.levels:
            parent = cells if lv.res == self.max_res else to_parent(cells, lv.res)
            pos = np.searchsorted(lv.cells, parent)
            pos_c = np.minimum(pos, len(lv.cells) - 1)
            hit = np.flatnonzero(lv.cells[pos_c] == parent)
            if not len(hit):
                continue
            start = lv.offsets[pos_c[hit]]
            count = lv.offsets[pos_c[hit] + 1] - start
            total = int(count.sum())
            base = np.repeat(start - np.cumsum(count) + count, count)
            entry = base + np.arange(total)
            pings.append(np.repeat(near[hit], count))
            fences.append(lv.fences[entry].astype(np.int64))
            inner.append(lv.interior[entry])
        if not pings:
            return empty, empty, np.zeros(0, bool)
        return np.concatenate(pings), np.concatenate(fences), np.concatenate(inner)

    def contains(self, fence: IntArray, lat: NDArray[np.float64], lng: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Exact test, pair by pair: is (lat[k], lng[k]) inside fence[k] (boundary included)?"""
        out = np.zeros(len(fence), dtype=bool)
        circ = self.is_circle[fence]
        ci = np.flatnonzero(circ)
        if len(ci):
            f = fence[ci]
            out[ci] = within_m(self.lat[f], self.lng[f], lat[ci], lng[ci], self.radius[f])
        pi = np.flatnonzero(~circ)
        if len(pi):
            f = fence[pi]
            x = lng[pi]
            x = np.where(self.shifted[f] & (x < 0), x + 360.0, x)
            y = lat[pi]
            b = self.bounds[f]
            inbox = np.flatnonzero((x >= b[:, 0]) & (x <= b[:, 2]) & (y >= b[:, 1]) & (y <= b[:, 3]))
            out[pi[inbox]] = shapely.intersects_xy(self.geoms[f[inbox]], x[inbox], y[inbox])
        return out

    def match(self, lat: ArrayLike, lng: ArrayLike) -> Matches:
        """Every (ping, fence) with the ping inside the fence, for a batch of points."""
        lat = np.ascontiguousarray(lat, dtype=np.float64)
        lng = np.ascontiguousarray(lng, dtype=np.float64)
        if self._kernel is not None:
            return self._match_compiled(lat, lng)
        ping, fence, inner = self.candidates(lat, lng)
        check = np.flatnonzero(~inner)
        keep = inner.copy()
        if len(check):
            keep[check] = self.contains(fence[check], lat[ping[check]], lng[ping[check]])
        # pairs are distinct: sorting the keys ping * n + fence orders them, and a plain sort
        # of integers is ~10x cheaper than an argsort (SIMD sort), ~30x than a lexsort
        n = np.int64(max(1, len(self.fences)))
        key = ping[keep] * n + fence[keep]
        key.sort()
        ping = key // n
        return Matches(ping, key - ping * n)

    def _match_compiled(self, lat: NDArray[np.float64], lng: NDArray[np.float64]) -> Matches:
        """``match`` in the kernel; the pairs it leaves undecided settled by :meth:`contains`."""
        ping, fence, undecided = self._kernel.match_batch(lat, lng)
        keep = self._settled(ping, fence, undecided, lat, lng)
        if keep is not None:
            ping, fence = ping[keep], fence[keep]
        return Matches(ping, fence)

    def _settled(
        self, ping: IntArray, fence: IntArray, undecided: NDArray[np.bool_], lat: NDArray[np.float64],
        lng: NDArray[np.float64],
    ) -> NDArray[np.bool_] | None:  # fmt: skip
        """Which of the kernel's pairs to keep once those it left undecided are settled by
        :meth:`contains` (None: it decided them all, keep every one)."""
        und = np.flatnonzero(undecided)
        if not len(und):
            return None
        keep = ~undecided
        keep[und] = self.contains(fence[und], lat[ping[und]], lng[ping[und]])
        return keep

    def match_point(self, lat: float, lng: float) -> list[str]:
        """Store ids of the fences containing one point (convenience; use ``match`` for batches)."""
        return [self.store_ids[i] for i in self.fences_at(lat, lng)]

    def fences_at(self, lat: float, lng: float) -> list[int]:
        """The fences containing one point, ascending: ``match`` for a single ping, in plain
        floats and ints (numpy's and h3ronpy's per-call overheads are ~50x the work for one
        point). Same cells (h3-py: the same H3 algorithm), same exact tests, same answer."""
        lat, lng = float(lat), float(lng)
        if self._kernel is not None:
            found = self._kernel.fences_at(lat, lng)
            return [f for f, undecided in found if not undecided or self._contains_one(f, lat, lng)]
        if not self.levels or not self._near_one(lat, lng):
            return []
        cell = h3_int.latlng_to_cell(lat, lng, self.max_res)
        found = []
        for lv in self.levels:
            parent = parent_of(cell, lv.res)
            pos = int(lv.cells.searchsorted(np.uint64(parent)))
            if pos == len(lv.cells) or int(lv.cells[pos]) != parent:
                continue
            for e in range(int(lv.offsets[pos]), int(lv.offsets[pos + 1])):
                f = int(lv.fences[e])
                if lv.interior[e] or self._contains_one(f, lat, lng):
                    found.append(f)
        return sorted(found)

    def _near_one(self, lat: float, lng: float) -> bool:
        """``_near_some_fence`` for one point, in plain floats."""
        south, west = self._grid_origin
        r = math.floor((lat - south) / self._grid_step)
        c = math.floor((lng - west) / self._grid_step)
        rows, cols = self._grid.shape
        return 0 <= r < rows and 0 <= c < cols and bool(self._grid[r, c])

    def _contains_one(self, f: int, lat: float, lng: float) -> bool:
        """:meth:`contains` for one (fence, point) pair."""
        if self.is_circle[f]:
            return within_m_one(float(self.lat[f]), float(self.lng[f]), lat, lng, float(self.radius[f]))
        x = lng + 360.0 if self.shifted[f] and lng < 0 else lng
        x0, y0, x1, y1 = self.bounds[f]
        if not (x0 <= x <= x1 and y0 <= lat <= y1):
            return False
        return bool(shapely.intersects_xy(self.geoms[f], x, lat))

    def match_accuracy(self, lat: ArrayLike, lng: ArrayLike, accuracy_m: ArrayLike) -> Matches:
        """Like ``match``, and ``certain`` says whether the accuracy circle lies wholly inside."""
        lat = np.asarray(lat, dtype=np.float64)
        lng = np.asarray(lng, dtype=np.float64)
        acc = np.broadcast_to(np.asarray(accuracy_m, dtype=np.float64), lat.shape)
        if self._kernel is not None:
            return self._match_accuracy_compiled(lat, lng, acc)
        m = self.match(lat, lng)
        depth = -self.signed_distance_m(m.fence, lat[m.ping], lng[m.ping])
        return Matches(m.ping, m.fence, depth >= acc[m.ping])

    def _match_accuracy_compiled(
        self, lat: NDArray[np.float64], lng: NDArray[np.float64], acc: NDArray[np.float64]
    ) -> Matches:
        """``match_accuracy`` in one kernel pass: each pair's depth test is done as the pair is
        found (circles mostly by their local plane, without trigonometry); the pairs the kernel
        leaves undecided, and their depth, settled here as on the other path."""
        lat, lng = np.ascontiguousarray(lat), np.ascontiguousarray(lng)
        ping, fence, undecided, holds = self._kernel.match_accuracy(lat, lng, np.ascontiguousarray(acc))
        keep = self._settled(ping, fence, undecided, lat, lng)
        if keep is not None:
            ping, fence, holds = ping[keep], fence[keep], holds[keep]
        left = np.flatnonzero(holds < 0)
        if len(left):
            depth = -self.signed_distance_m(fence[left], lat[ping[left]], lng[ping[left]])
            holds[left] = depth >= acc[ping[left]]
        return Matches(ping, fence, holds.view(np.bool_))

    def signed_distance_m(self, fence: ArrayLike, lat: ArrayLike, lng: ArrayLike) -> NDArray[np.float64]:
        """Metres from each point to its fence's boundary: negative inside, positive outside.

        Circles are exact on the ellipsoid; polygons use a local plane at the fence (error
        below 0.2 % of the distance for fences up to 20 km), enough for exit hysteresis.
        In the kernel where built; the few points it cannot place in or out (within ~0.1 mm
        of a polygon edge) are measured here.
        """
        fence = np.ascontiguousarray(fence, dtype=np.int64)
        lat = np.ascontiguousarray(lat, dtype=np.float64)
        lng = np.ascontiguousarray(lng, dtype=np.float64)
        if self._kernel is None:
            return self._signed_distance_numpy(fence, lat, lng)
        out: NDArray[np.float64] = self._kernel.signed_distance(fence, lat, lng)
        left = np.flatnonzero(np.isnan(out))
        if len(left):
            out[left] = self._signed_distance_numpy(fence[left], lat[left], lng[left])
        return out

    def _signed_distance_numpy(
        self, fence: IntArray, lat: NDArray[np.float64], lng: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """:meth:`signed_distance_m` with numpy and shapely."""
        out = np.empty(len(fence), dtype=np.float64)
        circ = self.is_circle[fence]
        ci = np.flatnonzero(circ)
        if len(ci):
            f = fence[ci]
            out[ci] = distance_m(self.lat[f], self.lng[f], lat[ci], lng[ci]) - self.radius[f]
        pi = np.flatnonzero(~circ)
        if len(pi):
            f = fence[pi]
            metric = self._metric_boundaries()
            kx, ky = self._kx[f], self._ky[f]
            x = lng[pi]
            x = np.where(self.shifted[f] & (x < 0), x + 360.0, x)
            x0 = np.where(self.shifted[f] & (self.lng[f] < 0), self.lng[f] + 360.0, self.lng[f])
            pts = shapely.points((x - x0) * kx, (lat[pi] - self.lat[f]) * ky)
            dist = shapely.distance(metric[f], pts)
            inside = self.contains(f, lat[pi], lng[pi])
            out[pi] = np.where(inside, -dist, dist)
        return out

    def warm(self) -> None:
        """Build what is otherwise built on first use, so the first pings do not wait for it."""
        self._metric_boundaries()

    def _metric_boundaries(self) -> np.ndarray:
        """Polygons' boundaries in metres east/north of their representative point (built on first use)."""
        if self._metric is None:
            m, n = radii(self.lat)
            self._kx = n * np.cos(np.radians(self.lat)) * math.pi / 180.0
            self._ky = m * math.pi / 180.0
            metric = np.empty(len(self.fences), dtype=object)
            poly = np.flatnonzero(~self.is_circle)
            if len(poly):
                coords, which = shapely.get_coordinates(self.geoms[poly], return_index=True)
                f = poly[which]
                x0 = np.where(self.shifted[f] & (self.lng[f] < 0), self.lng[f] + 360.0, self.lng[f])
                new = np.c_[(coords[:, 0] - x0) * self._kx[f], (coords[:, 1] - self.lat[f]) * self._ky[f]]
                polygons = shapely.set_coordinates(shapely.from_wkb(shapely.to_wkb(self.geoms[poly])), new)
                metric[poly] = shapely.boundary(polygons)
            self._metric = metric
        return self._metric

    # ------------------------------------------------------------------ facts
    def cell_count(self) -> int:
        return int(sum(len(lv.fences) for lv in self.levels))

    def nbytes(self) -> int:
        """Bytes held by the cell tables, the occupancy grid and the kernel's own arrays (which
        read the cell tables in place), not the shapely geometries."""
        tables = sum(lv.cells.nbytes + lv.offsets.nbytes + lv.fences.nbytes + lv.interior.nbytes for lv in self.levels)
        kernel = self._kernel.nbytes() if self._kernel is not None else 0
        return int(tables + self._grid.nbytes + kernel)
