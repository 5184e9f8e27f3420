"""Fence geometry: a store's geofence spec turned into an exact, testable shape.

Circles stay circles (centre + radius, tested by ellipsoidal distance). Polygons become shapely
geometries in (x = longitude, y = latitude) degrees, edges straight in that plane (GeoJSON's
convention); a polygon crossing the antimeridian has its western longitudes shifted by +360 so
it is one continuous shape, and pings are shifted the same way before the test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from geofences.catalog import GeofenceSpec
from geofences.geodesy import MAX_ABS_LAT, distance_m, offsets_m, radii

MAX_POLYGON_SPAN_M = 20_000.0


class FenceError(ValueError):
    """A geofence that cannot be used; ``path`` points inside the spec (e.g. (0, 2, 1))."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Fence:
    """One store's fence, ready to index and test."""

    store_id: str
    kind: str  # "circle" | "polygon"
    lat: float  # centre (circle) or a representative point inside (polygon)
    lng: float
    radius_m: float  # circle radius, or the polygon's bounding radius from (lat, lng)
    geometry: BaseGeometry | None  # polygons only, in (lng', lat) degrees
    shifted: bool  # polygon longitudes shifted by +360 (antimeridian)


def _point(raw: Any, path: tuple[str | int, ...]) -> tuple[float, float]:
    if not (isinstance(raw, list | tuple) and len(raw) == 2):
        raise FenceError(path, f"a point is [lat, lng], got {raw!r}")
    lat, lng = raw
    for v, what in ((lat, "lat"), (lng, "lng")):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise FenceError(path, f"{what} must be a number, got {v!r}")
    if not -90 <= lat <= 90:
        raise FenceError(path, f"lat {lat} is out of range (expected -90 to 90)")
    if abs(lat) > MAX_ABS_LAT:
        raise FenceError(path, f"lat {lat} is too close to a pole (geopush supports ±{MAX_ABS_LAT}°)")
    if not -180 <= lng <= 180:
        raise FenceError(path, f"lng {lng} is out of range (expected -180 to 180)")
    return float(lat), float(lng)


def _depth(raw: Any) -> int:
    d = 0
    while isinstance(raw, list) and raw:
        raw = raw[0]
        d += 1
    return d


def _rings(raw: Any, path: tuple[str | int, ...]) -> list[list[tuple[float, float]]]:
    """A polygon is one ring ([[lat, lng], ...]) or a list of rings (outer first, then holes)."""
    if not isinstance(raw, list) or not raw:
        raise FenceError(path, "a polygon needs at least 3 points")
    depth = _depth(raw)
    rings_raw, base = ([raw], path) if depth == 2 else (raw, path)
    if depth not in (2, 3):
        raise FenceError(path, "a polygon is a list of [lat, lng] points, or a list of such rings")
    rings = []
    for r, ring in enumerate(rings_raw):
        rpath = base if depth == 2 else (*base, r)
        if not isinstance(ring, list):
            raise FenceError(rpath, f"a ring is a list of [lat, lng] points, got {ring!r}")
        pts = [_point(p, (*rpath, i)) for i, p in enumerate(ring)]
        if len(pts) > 1 and pts[0] == pts[-1]:
            pts = pts[:-1]
        if len(set(pts)) < 3:
            raise FenceError(rpath, f"a ring needs at least 3 distinct points, got {len(set(pts))}")
        rings.append(pts)
    return rings


def _crosses_antimeridian(lngs: list[float]) -> bool:
    return max(lngs) - min(lngs) > 180.0


def _polygon_fence(store_id: str, polys: list[list[list[tuple[float, float]]]]) -> Fence:
    lngs = [p[1] for poly in polys for ring in poly for p in ring]
    shifted = _crosses_antimeridian(lngs)

    def x(lng: float) -> float:
        return lng + 360.0 if shifted and lng < 0 else lng

    parts = [
        shapely.Polygon([(x(lng), lat) for lat, lng in poly[0]], [[(x(lng), lat) for lat, lng in h] for h in poly[1:]])
        for poly in polys
    ]
    geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        raise FenceError((), f"invalid polygon for store {store_id}: {_describe(reason)}")
    rep = geom.representative_point()
    m, n = radii(rep.y)
    area_m2 = geom.area * float(m[()] * n[()]) * math.cos(math.radians(rep.y)) * (math.pi / 180) ** 2
    if area_m2 < 1.0:
        raise FenceError((), f"degenerate polygon for store {store_id}: its area is {area_m2:.2g} m²")
    lat, lng = rep.y, rep.x if rep.x <= 180 else rep.x - 360.0
    ext = np.asarray(shapely.get_coordinates(geom.envelope))
    span = float(distance_m(ext[:, 1].min(), ext[:, 0].min(), ext[:, 1].max(), ext[:, 0].max()))
    if span > MAX_POLYGON_SPAN_M:
        raise FenceError((), f"polygon for store {store_id} spans {span / 1000:.1f} km (at most 20 km)")
    coords = shapely.get_coordinates(geom)
    east, north = offsets_m(lat, lng, coords[:, 1], coords[:, 0])
    radius = float(np.hypot(east, north).max())
    return Fence(store_id, "polygon", lat, lng, radius, geom, shifted)


def _describe(reason: str) -> str:
    """Turn GEOS' validity reason into words, with the place as lat/lng."""
    if "[" in reason:
        what, _, where = reason.partition("[")
        nums = where.rstrip("]").split()
        if len(nums) >= 2:
            x, y = float(nums[0]), float(nums[1])
            x = x - 360.0 if x > 180 else x
            return f"{what.strip().lower()} near lat {y:.6f}, lng {x:.6f}"
    return reason.lower()


def fence_from_spec(store_id: str, spec: GeofenceSpec) -> Fence:
    """Build the exact fence of one store, or raise FenceError saying what is wrong and where."""
    if spec.circle is not None:
        c = spec.circle
        return Fence(store_id, "circle", c.lat, c.lng, c.radius_m, None, False)
    if spec.polygon is not None:
        rings = _rings(spec.polygon, ("polygon",))
        return _polygon_fence(store_id, [rings])
    assert spec.multipolygon is not None
    if not isinstance(spec.multipolygon, list) or not spec.multipolygon:
        raise FenceError(("multipolygon",), "a multipolygon is a list of polygons")
    polys = [_rings(p, ("multipolygon", i)) for i, p in enumerate(spec.multipolygon)]
    return _polygon_fence(store_id, polys)
