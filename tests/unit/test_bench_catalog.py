"""The end-to-end benchmark's scaled catalogs (where the synthetic stores go) and its latency load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.e2e_bench import (
    DENSE_AT,
    REPO,
    TOKYO_BOX,
    catalogs,
    due_at,
    gc_pauses,
    scaled_catalog,
    sent_by,
    store_box,
    synthetic_stores,
    worker_env,
)


def area(box: tuple[float, float, float, float]) -> float:
    lat0, lat1, lng0, lng1 = box
    return (lat1 - lat0) * (lng1 - lng0)


def test_spread_keeps_the_density_of_10k_and_dense_packs_tokyo() -> None:
    assert store_box(DENSE_AT, "spread") == store_box(DENSE_AT, "dense") == TOKYO_BOX
    assert store_box(100_000, "dense") == TOKYO_BOX
    spread = store_box(100_000, "spread")
    assert abs(area(spread) / area(TOKYO_BOX) - 10.0) < 1e-9
    centre = lambda b: ((b[0] + b[1]) / 2, (b[2] + b[3]) / 2)  # noqa: E731
    assert centre(spread) == centre(TOKYO_BOX)


def test_catalogs_run_each_layout_only_where_they_differ() -> None:
    assert catalogs("10000,100000", "both") == [(10_000, "spread"), (100_000, "spread"), (100_000, "dense")]
    assert catalogs("100000", "dense") == [(100_000, "dense")]


def test_synthetic_stores_fill_the_box_they_are_given() -> None:
    box = store_box(12_000, "spread")
    stores = synthetic_stores(12_000, 7, ("cafe",), box)
    assert len(stores) == 12_000 and all(s["tags"] == ["cafe"] for s in stores)
    circles = [s["geofence"]["circle"] for s in stores if "circle" in s["geofence"]]
    lats, lngs = [c["lat"] for c in circles], [c["lng"] for c in circles]
    lat0, lat1, lng0, lng1 = box
    assert lat0 <= min(lats) < TOKYO_BOX[0] and TOKYO_BOX[1] < max(lats) <= lat1
    assert lng0 <= min(lngs) < TOKYO_BOX[2] and TOKYO_BOX[3] < max(lngs) <= lng1


def test_scaled_catalog_is_the_example_plus_synthetic_stores(tmp_path: Path) -> None:
    folder = scaled_catalog(100, tmp_path / "c", layout="spread")
    stores = yaml.safe_load((folder / "stores.yaml").read_text())["stores"]
    example = yaml.safe_load((REPO / "config" / "catalog" / "stores.yaml").read_text())["stores"]
    assert len(stores) == 100 and stores[: len(example)] == example
    assert {p.name for p in folder.iterdir()} == {"stores.yaml", "campaigns.yaml", "defaults.yaml"}


def test_latency_load_ramps_up_evenly_then_holds_its_rate() -> None:
    assert sent_by(0.0, 1000.0, 10.0) == 0.0
    assert sent_by(5.0, 1000.0, 10.0) == pytest.approx(1250.0)  # half-way up: a quarter of the ramp's pings
    assert sent_by(10.0, 1000.0, 10.0) == pytest.approx(5000.0)  # the ramp sends half its seconds' worth
    assert sent_by(12.0, 1000.0, 10.0) - sent_by(11.0, 1000.0, 10.0) == pytest.approx(1000.0)  # then the rate
    assert sent_by(3.0, 1000.0, 0.0) == pytest.approx(3000.0)  # no ramp: the rate from the start


@pytest.mark.parametrize("ramp_s", [0.0, 10.0])
@pytest.mark.parametrize("n", [0, 1, 400, 5000, 5001, 123_456])
def test_due_at_is_when_sent_by_reaches_the_ping(n: int, ramp_s: float) -> None:
    t = due_at(n, 1000.0, ramp_s)
    assert sent_by(t, 1000.0, ramp_s) == pytest.approx(n)
    assert t >= 0.0


def test_gc_pauses_read_from_the_workers_metrics() -> None:
    text = "\n".join([
        "# HELP geopush_gc_pause_seconds Garbage-collector pauses",
        'geopush_gc_pause_seconds_bucket{generation="0",le="0.01"} 10.0',
        'geopush_gc_pause_seconds_count{generation="0"} 12.0',
        'geopush_gc_pause_seconds_sum{generation="0"} 0.25',
        'geopush_gc_pause_seconds_count{generation="1"} 0.0',
        'geopush_gc_pause_seconds_sum{generation="1"} 0.0',
        'geopush_gc_pause_seconds_count{generation="2"} 1.0',
        'geopush_gc_pause_seconds_sum{generation="2"} 0.105',
        'geopush_pings_total 5.0',
    ])  # fmt: skip
    assert gc_pauses(text) == "worker GC pauses since its start: gen0 12× 250 ms, gen2 1× 105 ms"
    assert gc_pauses("geopush_pings_total 5.0") == "worker GC pauses since its start: none"
    before = text.replace('"0"} 12.0', '"0"} 10.0').replace("0.25", "0.2")
    assert gc_pauses(text, before) == "worker GC pauses during the load: gen0 2× 50 ms"  # gen2 before it
    assert gc_pauses(text, text) == "worker GC pauses during the load: none"


def test_worker_env_takes_settings_and_refuses_anything_else() -> None:
    assert worker_env("") == {}
    assert worker_env("GEOPUSH_COMMIT_INTERVAL_S=0.25, GEOPUSH_FETCH_MIN_BYTES=1") == {
        "GEOPUSH_COMMIT_INTERVAL_S": "0.25",
        "GEOPUSH_FETCH_MIN_BYTES": "1",
    }
    for bad in ("COMMIT_INTERVAL_S=1", "GEOPUSH_X"):
        with pytest.raises(SystemExit, match="expected GEOPUSH_NAME=value"):
            worker_env(bad)
