"""The compiled matching kernel (kernel/, Rust): built where cargo is, the same H3 cells as
H3's C library (h3-py), and the same matches as the numpy path on the benchmark's fences."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from h3.api import basic_int as h3_int

from bench.index_bench import REGIONS, make_fences, make_pings
from geofences.index import FenceIndex, load_kernel

KERNEL = load_kernel()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="kernel not built: no cargo on this machine")


def test_kernel_is_built_where_cargo_is() -> None:
    cargo = shutil.which("cargo") or (Path.home() / ".cargo/bin/cargo").is_file()
    if cargo and not os.environ.get("GEOPUSH_PURE_PYTHON"):
        assert KERNEL is not None, "cargo is here, so `make install` builds geofences._kernel"
    assert load_kernel({"GEOPUSH_PURE_PYTHON": "1"}) is None
    assert load_kernel({"GEOPUSH_KERNEL": "off"}) is None
    assert (load_kernel({"GEOPUSH_KERNEL": "true"}) is None) == (KERNEL is None)


def test_pure_python_switch_and_required_kernel() -> None:
    fences = make_fences(20, REGIONS["city"], np.random.default_rng(1))
    assert not FenceIndex(fences, kernel=False).compiled
    if KERNEL is None:
        with pytest.raises(RuntimeError, match="make kernel"):
            FenceIndex(fences, kernel=True)
    else:
        assert FenceIndex(fences).compiled


@needs_kernel
@pytest.mark.parametrize("res", [0, 1, 4, 7, 9, 10, 12, 13, 15])
def test_cells_are_h3s_worldwide_and_in_tokyo(res: int) -> None:
    rng = np.random.default_rng(res)
    n = 20_000
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lng = rng.uniform(-180, 180, n)
    lat[: n // 4] = rng.uniform(35.0, 36.5, n // 4)
    lng[: n // 4] = rng.uniform(139.0, 140.5, n // 4)
    # and cell centres
    centres = [h3_int.latlng_to_cell(float(a), float(b), res) for a, b in zip(lat[:200], lng[:200], strict=True)]
    pts = [h3_int.cell_to_latlng(c) for c in centres]
    lat = np.concatenate([lat, [p[0] for p in pts]])
    lng = np.concatenate([lng, [p[1] for p in pts]])
    got = KERNEL.cells(lat, lng, res)  # type: ignore[attr-defined]
    want = np.array([h3_int.latlng_to_cell(float(a), float(b), res) for a, b in zip(lat, lng, strict=True)], np.uint64)
    assert np.array_equal(got, want), f"{int((got != want).sum())} of {len(lat)} cells differ at res {res}"


@needs_kernel
@pytest.mark.parametrize("res", [3, 4, 9, 12])
def test_a_cell_vertex_goes_to_one_of_the_cells_that_meet_there(res: int) -> None:
    """Exactly on a vertex, implementations differ (H3's C library and h3o disagree on ~1 in 4):
    any of the three cells is right, and the index is exact either way (every cell touching
    a point inside a fence is in that fence's table)."""
    rng = np.random.default_rng(res)
    lat, lng = np.degrees(np.arcsin(rng.uniform(-1, 1, 100))), rng.uniform(-180, 180, 100)
    for a, b in zip(lat, lng, strict=True):
        cell = h3_int.latlng_to_cell(float(a), float(b), res)
        corners = h3_int.cell_to_boundary(cell)
        got = KERNEL.cells(np.array([c[0] for c in corners]), np.array([c[1] for c in corners]), res)  # type: ignore[attr-defined]
        ring = set(h3_int.grid_disk(cell, 1))
        assert all(int(g) in ring for g in got), (res, cell)


@needs_kernel
def test_rejects_a_resolution_out_of_range() -> None:
    with pytest.raises(ValueError, match="resolution 16"):
        KERNEL.cells(np.zeros(1), np.zeros(1), 16)  # type: ignore[attr-defined]


@needs_kernel
@pytest.mark.parametrize("mix", ["city", "country"])
def test_same_matches_as_the_numpy_path(mix: str) -> None:
    rng = np.random.default_rng(3)
    fences = make_fences(3_000, REGIONS[mix], rng)
    lat, lng = make_pings(60_000, fences, REGIONS[mix], rng)
    lat[:50] = np.nan  # not a point: matches nothing, on either path
    pure = FenceIndex(fences, kernel=False)
    compiled = FenceIndex(fences, kernel=True)
    # identical tables: the kernel's H3 conversion built them where it is used
    for a, b in zip(pure.levels, compiled.levels, strict=True):
        assert a.res == b.res and np.array_equal(a.cells, b.cells) and np.array_equal(a.fences, b.fences)
    want, got = pure.match(lat, lng), compiled.match(lat, lng)
    assert len(want) > 1_000
    assert np.array_equal(want.ping, got.ping) and np.array_equal(want.fence, got.fence)
    for k in range(50, 1_050):
        assert compiled.fences_at(lat[k], lng[k]) == pure.fences_at(lat[k], lng[k])


@needs_kernel
def test_empty_index_and_empty_batch() -> None:
    empty = FenceIndex([], kernel=True)
    assert len(empty.match(np.array([35.0]), np.array([139.0]))) == 0
    fences = make_fences(10, REGIONS["city"], np.random.default_rng(2))
    m = FenceIndex(fences, kernel=True).match(np.zeros(0), np.zeros(0))
    assert len(m) == 0 and m.ping.dtype == np.int64


def test_a_kernel_built_for_another_version_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import types

    stale = types.ModuleType("geofences._kernel")
    stale.API = 0  # type: ignore[attr-defined]
    monkeypatch.setattr(importlib, "import_module", lambda name: stale)
    with pytest.warns(RuntimeWarning, match="make kernel"):
        assert load_kernel({}) is None


@needs_kernel
def test_signed_distances_are_the_numpy_paths() -> None:
    """Exit hysteresis and accuracy checks read these: the kernel's local-plane distances agree
    with shapely's to a micrometre, inside (negative), outside, in holes, across the antimeridian."""
    from geofences.catalog import GeofenceSpec
    from geofences.shapes import fence_from_spec

    rng = np.random.default_rng(5)
    fences = make_fences(400, REGIONS["city"], rng)
    outer = [[-16.5, 179.995], [-16.5, -179.995], [-16.51, -179.995], [-16.51, 179.995]]
    hole = [[-16.503, 179.999], [-16.503, -179.999], [-16.507, -179.999], [-16.507, 179.999]]
    fences.append(fence_from_spec("dateline", GeofenceSpec(polygon=[outer, hole])))
    pure, compiled = FenceIndex(fences, kernel=False), FenceIndex(fences, kernel=True)
    n = 20_000
    f = rng.integers(0, len(fences), n)
    f[:2_000] = len(fences) - 1
    centre_lat = np.array([fences[i].lat for i in f])
    centre_lng = np.array([fences[i].lng for i in f])
    radius = np.array([fences[i].radius_m for i in f])
    lat = centre_lat + rng.uniform(-1.5, 1.5, n) * radius / 111_000.0
    lng = (centre_lng + rng.uniform(-1.5, 1.5, n) * radius / 90_000.0 + 180.0) % 360.0 - 180.0
    want, got = pure.signed_distance_m(f, lat, lng), compiled.signed_distance_m(f, lat, lng)
    assert (want < 0).sum() > 3_000 and (want > 0).sum() > 3_000
    assert ((want[:2_000] < 0) & (want[:2_000] > -100)).any(), "some points between hole and outline"
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)
    assert np.array_equal(np.sign(got), np.sign(want))


@needs_kernel
@pytest.mark.parametrize("mix", ["city", "country"])
def test_accuracy_matches_are_the_numpy_paths(mix: str) -> None:
    """The kernel's one-pass depth test (circles mostly by their local plane) says what the
    numpy path says, pair for pair: accuracies of 0, a few metres, the fence's own size, and
    none (NaN); points near edges included (the benchmark's pings cluster around fences)."""
    rng = np.random.default_rng(11)
    fences = make_fences(3_000, REGIONS[mix], rng)
    lat, lng = make_pings(60_000, fences, REGIONS[mix], rng)
    acc = rng.choice([0.0, 5.0, 20.0, 65.0, 150.0, 400.0, np.nan], len(lat))
    pure = FenceIndex(fences, kernel=False)
    compiled = FenceIndex(fences, kernel=True)
    want, got = pure.match_accuracy(lat, lng, acc), compiled.match_accuracy(lat, lng, acc)
    assert want.certain is not None and got.certain is not None
    assert np.array_equal(want.ping, got.ping) and np.array_equal(want.fence, got.fence)
    assert np.array_equal(want.certain, got.certain)
    assert 1_000 < int(want.certain.sum()) < len(want) - 1_000, "both answers well represented"


@needs_kernel
def test_accuracy_at_a_circles_edge_and_across_the_antimeridian() -> None:
    """Points walked outward across circles' edges, one centimetre at a time around the
    answer's edge (radius - accuracy), at 35° and 79° and astride 180°: same answers as numpy."""
    from geofences.catalog import GeofenceSpec
    from geofences.shapes import fence_from_spec

    centres = [(35.66, 139.70, 120.0), (79.0, 12.0, 300.0), (-16.5, 179.9995, 80.0)]
    fences = [
        fence_from_spec(f"c{i}", GeofenceSpec(circle={"lat": la, "lng": ln, "radius_m": r}))
        for i, (la, ln, r) in enumerate(centres)
    ]
    pure, compiled = FenceIndex(fences, kernel=False), FenceIndex(fences, kernel=True)
    for la, ln, r in centres:
        acc = 30.0
        metres = np.concatenate([np.linspace(0, r * 1.2, 400), r - acc + np.arange(-200, 200) * 0.01])
        for bearing in (0.0, 0.7, 1.9):
            lat = la + metres * np.cos(bearing) / 111_000.0
            lng = (ln + metres * np.sin(bearing) / (111_000.0 * np.cos(np.radians(la))) + 180.0) % 360.0 - 180.0
            a = np.full(len(lat), acc)
            want, got = pure.match_accuracy(lat, lng, a), compiled.match_accuracy(lat, lng, a)
            assert want.certain is not None and got.certain is not None
            assert np.array_equal(want.ping, got.ping) and np.array_equal(want.certain, got.certain)
            assert want.certain.any() and not want.certain.all()
