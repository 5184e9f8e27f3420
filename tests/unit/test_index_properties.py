"""The index against a brute-force oracle: identical (ping, fence) pairs, whatever the fences.

Oracle: Karney's geodesic distance (pyproj) for circles; shapely on the exact polygon for
polygons. Points are drawn anywhere near the fences and in a band 0.3–1 m either side of
every boundary; fences overlap, have holes, are 10 m or 10 km, sit on the antimeridian or
at 85° latitude.
"""

from __future__ import annotations

import math

import h3
import numpy as np
import pyproj
import shapely
from h3ronpy import vector as h3v
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofences.catalog import GeofenceSpec
from geofences.geodesy import destination, radii
from geofences.index import FenceIndex, cell_order, load_kernel
from geofences.shapes import Fence, fence_from_spec

GEOD = pyproj.Geod(ellps="WGS84")


def oracle(fences: list[Fence], lat: np.ndarray, lng: np.ndarray) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    for fi, f in enumerate(fences):
        if f.geometry is None:
            _, _, d = GEOD.inv(np.full(len(lat), f.lng), np.full(len(lat), f.lat), lng, lat)
            hits = np.flatnonzero(d <= f.radius_m)
        else:
            hits = np.flatnonzero(
                shapely.intersects_xy(f.geometry, lng, lat)
                | shapely.intersects_xy(f.geometry, lng + 360.0, lat)
                | shapely.intersects_xy(f.geometry, lng - 360.0, lat)
            )
        out.update((int(p), fi) for p in hits)
    return out


def boundary_band(f: Fence, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points 0.3–1 m inside or outside the fence boundary."""
    delta = rng.uniform(0.3, 1.0, n) * rng.choice([-1.0, 1.0], n)
    if f.geometry is None:
        az = rng.uniform(0, 360, n)
        lng, lat, _ = GEOD.fwd(np.full(n, f.lng), np.full(n, f.lat), az, f.radius_m + delta)
        return np.asarray(lat), np.asarray(lng)
    ring = shapely.get_coordinates(shapely.boundary(f.geometry))
    lats, lngs = [], []
    for k in range(n):
        i = int(rng.integers(0, len(ring) - 1))
        (x0, y0), (x1, y1) = ring[i], ring[i + 1]
        if (x0, y0) == (x1, y1):
            continue
        t = rng.uniform(0.2, 0.8)
        x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        m, nn = radii(y)
        kx, ky = float(nn) * math.cos(math.radians(y)) * math.pi / 180, float(m) * math.pi / 180
        ex, ey = (x1 - x0) * kx, (y1 - y0) * ky
        norm = math.hypot(ex, ey)
        px, py = -ey / norm, ex / norm  # unit normal in metres
        # move 'delta' metres along the normal; the sign is decided by the oracle, not by us
        lx = x + px * delta[k] / kx
        lats.append(y + py * delta[k] / ky)
        lngs.append((lx + 180.0) % 360.0 - 180.0)
    return np.array(lats), np.array(lngs)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[Fence], int]:
    kind = draw(st.sampled_from(["anywhere", "antimeridian", "high-latitude", "city"]))
    if kind == "antimeridian":
        lat0, lng0 = draw(st.floats(-60, 60)), draw(st.sampled_from([179.999, -179.999, 180.0]))
    elif kind == "high-latitude":
        lat0, lng0 = draw(st.sampled_from([84.8, -84.8])), draw(st.floats(-180, 180))
    elif kind == "city":
        lat0, lng0 = 35.68, 139.76
    else:
        lat0, lng0 = draw(st.floats(-84, 84)), draw(st.floats(-180, 180))
    fences = []
    for i in range(draw(st.integers(1, 5))):
        size = draw(st.sampled_from([10.0, 60.0, 300.0, 2_000.0, 10_000.0]))
        off_e, off_n = draw(st.floats(-1.0, 1.0)) * size, draw(st.floats(-1.0, 1.0)) * size
        clat, clng = destination(lat0, lng0, np.array([off_e]), np.array([off_n]))
        clat_f = float(np.clip(clat[0], -84.95, 84.95))
        clng_f = float(clng[0])
        if draw(st.booleans()):
            spec = GeofenceSpec(circle={"lat": clat_f, "lng": clng_f, "radius_m": size})
        else:
            size = min(size, 5_000.0)  # polygons span at most 20 km
            k = draw(st.integers(3, 24))
            ang = np.linspace(0, 2 * np.pi, k, endpoint=False) + draw(st.floats(0, 1))
            rad = size * np.array([draw(st.floats(0.5, 1.0)) for _ in range(k)])
            la, ln = destination(clat_f, clng_f, rad * np.sin(ang), rad * np.cos(ang))
            if np.any(np.abs(la) > 85):
                continue
            outer = [[float(a), float(b)] for a, b in zip(la, ln, strict=True)]
            rings = [outer]
            if draw(st.booleans()):
                hl, hn = destination(clat_f, clng_f, 0.3 * size * np.sin(ang), 0.3 * size * np.cos(ang))
                rings.append([[float(a), float(b)] for a, b in zip(hl, hn, strict=True)])
            spec = GeofenceSpec(polygon=rings)
        fences.append(fence_from_spec(f"s{i}", spec))
    return fences, draw(st.integers(0, 2**31))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_index_matches_the_oracle(case: tuple[list[Fence], int]) -> None:
    fences, seed = case
    if not fences:
        return
    rng = np.random.default_rng(seed)
    lats, lngs = [], []
    for f in fences:
        a, b = boundary_band(f, rng, 60)
        lats.append(a)
        lngs.append(b)
        d = rng.uniform(0, 1.5 * f.radius_m, 200)
        az = rng.uniform(0, 360, 200)
        lng, lat, _ = GEOD.fwd(np.full(200, f.lng), np.full(200, f.lat), az, d)
        lats.append(np.asarray(lat))
        lngs.append(np.asarray(lng))
    lat = np.concatenate(lats)
    lng = np.concatenate(lngs)
    keep = np.abs(lat) <= 85.5
    lat, lng = lat[keep], lng[keep]
    # and points exactly on polygon vertices and edges (boundary included: inside)
    for f in fences:
        if f.geometry is not None:
            ring = shapely.get_coordinates(shapely.boundary(f.geometry))[:8]
            mid = 0.5 * (ring[:-1] + ring[1:])
            on = np.concatenate([ring, mid])
            lat = np.concatenate([lat, on[:, 1]])
            lng = np.concatenate([lng, (on[:, 0] + 180.0) % 360.0 - 180.0])
    want = oracle(fences, lat, lng)
    per_ping: dict[int, list[int]] = {}
    for p, f in sorted(want):
        per_ping.setdefault(p, []).append(f)
    # the numpy path, and the compiled kernel where it is built: each exactly the oracle
    for kernel in (False, True) if load_kernel() is not None else (False,):
        index = FenceIndex(fences, kernel=kernel)
        m = index.match(lat, lng)
        got = set(zip(m.ping.tolist(), m.fence.tolist(), strict=True))
        assert got == want, f"kernel={kernel}: {len(got - want)} extra, {len(want - got)} missing"
        # the single-ping path gives the same answer, boundary bands included
        for k in rng.choice(len(lat), size=min(len(lat), 300), replace=False).tolist():
            assert index.fences_at(lat[k], lng[k]) == per_ping.get(k, []), (kernel, k, lat[k], lng[k])


def test_single_point_and_accuracy() -> None:
    f = fence_from_spec("shop", GeofenceSpec(circle={"lat": 35.0, "lng": 139.0, "radius_m": 100}))
    index = FenceIndex([f])
    assert index.match_point(35.0, 139.0) == ["shop"]
    assert index.match_point(35.01, 139.0) == []
    # 50 m inside: certain with 30 m accuracy, uncertain with 80 m
    lat, lng = destination(35.0, 139.0, np.array([50.0, 50.0]), np.array([0.0, 0.0]))
    m = index.match_accuracy(lat, lng, np.array([30.0, 80.0]))
    assert m.certain is not None and m.certain.tolist() == [True, False]
    d = index.signed_distance_m(np.array([0, 0]), lat, lng)
    np.testing.assert_allclose(d, [-50.0, -50.0], atol=0.01)


def test_polygon_distance_inside_outside_and_hole() -> None:
    spec = GeofenceSpec(polygon=[
        [[35.0, 139.0], [35.0, 139.01], [35.01, 139.01], [35.01, 139.0]],
        [[35.004, 139.004], [35.004, 139.006], [35.006, 139.006], [35.006, 139.004]],
    ])  # fmt: skip
    index = FenceIndex([fence_from_spec("p", spec)])
    assert index.match_point(35.002, 139.002) == ["p"]
    assert index.match_point(35.005, 139.005) == []  # in the hole
    d = index.signed_distance_m(np.array([0, 0]), np.array([35.005, 35.002]), np.array([139.005, 139.002]))
    assert d[0] > 80 and d[1] < -150


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=5, max_value=13), st.integers(min_value=0, max_value=3000), st.integers(0, 2**32 - 1))
def test_cell_order_sorts_runs_of_cells(res: int, n: int, seed: int) -> None:
    """cell_order is a permutation that sorts each run of 2**(57 - 3·res) cells (one run here
    unless res is 13, whose runs of 2**18 are longer than these batches)."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-85, 85, n)
    lng = rng.uniform(-180, 180, n)
    cells = np.array([int(h3.latlng_to_cell(a, b, res), 16) for a, b in zip(lat, lng, strict=True)], dtype=np.uint64)
    cells = np.concatenate([cells, cells[: n // 3]])  # duplicates too
    order = cell_order(cells, res)
    assert sorted(order.tolist()) == list(range(len(cells)))
    np.testing.assert_array_equal(cells[order], np.sort(cells))


def test_cell_order_of_a_batch_longer_than_one_run() -> None:
    """At resolution 13 a run holds 2**18 cells: a longer batch is a permutation sorted run by run."""
    rng = np.random.default_rng(3)
    n = 2**18 + 5000
    cells = np.asarray(h3v.coordinates_to_cells(rng.uniform(35, 36, n), rng.uniform(139, 140, n), 13), dtype=np.uint64)
    order = cell_order(cells, 13)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    run = 2**18
    np.testing.assert_array_equal(cells[order[:run]], np.sort(cells[:run]))
    np.testing.assert_array_equal(cells[order[run:]], np.sort(cells[run:]))
