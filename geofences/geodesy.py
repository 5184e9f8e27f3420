"""Distances on the WGS84 ellipsoid for geofence-sized spans (≤ a few tens of km).

Model: the "mean-latitude" local tangent plane. A displacement (Δφ, Δλ) between two points is
converted to metres with the ellipsoid's meridional radius M(φm) and prime-vertical radius
N(φm) at the mean latitude φm:  dy = M·Δφ,  dx = N·cos(φm)·Δλ,  d = hypot(dx, dy).
Against Karney's exact geodesic (pyproj.Geod) the relative error is below 2e-5 for
d ≤ 10 km and |lat| ≤ 85° (≤ 20 cm at 10 km; tests/unit/test_geodesy.py checks it), far
below GPS accuracy. The in-or-out test of a circle (:func:`within_m`) settles the few pairs
inside that error with the exact geodesic, so it is exact. Longitude differences are wrapped,
so spans across the antimeridian work.
Fences must lie within ±85° latitude: closer to the poles the catalog rejects them.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

WGS84_A = 6_378_137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)
MAX_ABS_LAT = 85.0
MODEL_ERROR = 5e-5  # a safe bound on the model's relative error (measured below 2e-5, see above)

FloatArray = NDArray[np.float64]


def radii(lat_deg: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Meridional (M) and prime-vertical (N) radii of curvature, metres, at ``lat_deg``."""
    s = np.sin(np.radians(np.asarray(lat_deg, dtype=np.float64)))
    w2 = 1.0 - WGS84_E2 * s * s
    n = WGS84_A / np.sqrt(w2)
    m = WGS84_A * (1.0 - WGS84_E2) / (w2 * np.sqrt(w2))
    return m, n


def wrap_lng(dlng_deg: ArrayLike) -> FloatArray:
    """Longitude difference wrapped into [-180, 180)."""
    d = np.asarray(dlng_deg, dtype=np.float64)
    return (d + 180.0) % 360.0 - 180.0


def offsets_m(lat0: ArrayLike, lng0: ArrayLike, lat: ArrayLike, lng: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """East and north offsets (metres) of (lat, lng) from (lat0, lng0); vectorised."""
    lat0 = np.asarray(lat0, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    mid = 0.5 * (lat0 + lat)
    m, n = radii(mid)
    north = m * np.radians(lat - lat0)
    east = n * np.cos(np.radians(mid)) * np.radians(wrap_lng(np.asarray(lng) - np.asarray(lng0)))
    return east, north


def distance_m(lat0: ArrayLike, lng0: ArrayLike, lat: ArrayLike, lng: ArrayLike) -> FloatArray:
    """Distance in metres between points; vectorised over any broadcastable arrays."""
    east, north = offsets_m(lat0, lng0, lat, lng)
    return np.hypot(east, north)


def within_m(lat0: ArrayLike, lng0: ArrayLike, lat: ArrayLike, lng: ArrayLike, radius: ArrayLike) -> NDArray[np.bool_]:
    """Whether each point lies within ``radius`` metres of its centre, exactly: the model decides
    where it is clearly right, Karney's geodesic (pyproj) decides the few pairs within the model's
    error bound of the radius (MODEL_ERROR × radius + 1 cm)."""
    lat0, lng0, lat, lng, radius = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (lat0, lng0, lat, lng, radius))
    )
    d = distance_m(lat0, lng0, lat, lng)
    out = d <= radius
    near = np.flatnonzero(_undecided(d, radius))
    if len(near):
        _, _, exact = _geod().inv(lng0[near], lat0[near], lng[near], lat[near])
        out[near] = np.asarray(exact) <= radius[near]
    return out


def _undecided(d: Any, radius: Any) -> Any:
    """Where the model's distance is too close to the radius to decide in or out (see MODEL_ERROR)."""
    return abs(d - radius) <= MODEL_ERROR * radius + 0.01


def within_m_one(lat0: float, lng0: float, lat: float, lng: float, radius: float) -> bool:
    """``within_m`` for one pair, in plain floats (the per-ping path); same rule, same answer."""
    d = distance_m_one(lat0, lng0, lat, lng)
    if not _undecided(d, radius):
        return d <= radius
    _, _, exact = _geod().inv(lng0, lat0, lng, lat)
    return bool(exact <= radius)


@functools.cache
def _geod() -> Any:
    from pyproj import Geod

    return Geod(ellps="WGS84")


def distance_m_one(lat0: float, lng0: float, lat: float, lng: float) -> float:
    """``distance_m`` for one pair of points, in plain floats: the per-ping path (numpy's
    per-call overhead is ~50x the arithmetic for a single pair). Same formula, same result."""
    mid = math.radians(0.5 * (lat0 + lat))
    s = math.sin(mid)
    w2 = 1.0 - WGS84_E2 * s * s
    n = WGS84_A / math.sqrt(w2)
    m = WGS84_A * (1.0 - WGS84_E2) / (w2 * math.sqrt(w2))
    north = m * math.radians(lat - lat0)
    east = n * math.cos(mid) * math.radians((lng - lng0 + 180.0) % 360.0 - 180.0)
    return math.hypot(east, north)


def destination(lat0: float, lng0: float, east_m: ArrayLike, north_m: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Points at the given east/north offsets (metres) from (lat0, lng0); inverse of offsets_m.

    Solved with two fixed-point steps on the mean latitude (exact to < 1 mm at 10 km).
    """
    east = np.asarray(east_m, dtype=np.float64)
    north = np.asarray(north_m, dtype=np.float64)
    m0, _ = radii(lat0)
    lat = lat0 + np.degrees(north / m0)
    for _ in range(3):
        mid = 0.5 * (lat0 + lat)
        m, n = radii(mid)
        lat = lat0 + np.degrees(north / m)
    mid = 0.5 * (lat0 + lat)
    _, n = radii(mid)
    lng = lng0 + np.degrees(east / (n * np.cos(np.radians(mid))))
    return lat, ((lng + 180.0) % 360.0) - 180.0
