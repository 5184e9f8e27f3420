"""Catalog loading: the shipped example is valid; every problem is named with file:line:col and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from geofences.load import CatalogInvalid, load_catalog
from tests.conftest import REPO


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


def problems(paths: list[Path]) -> list[str]:
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(paths)
    return [str(p) for p in info.value.problems]


def test_example_catalog_is_valid() -> None:
    cat = load_catalog([REPO / "config" / "catalog"])
    assert len(cat.stores) == 20 and len(cat.campaigns) >= 4
    assert {f.kind for f in cat.fences} == {"circle", "polygon"}
    assert all(set(c.offer.text) >= {"ja", "en"} for c in cat.campaigns)
    assert len(cat.version) == 16


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    src = (REPO / "config" / "catalog" / "stores.yaml").read_text()
    a = tmp_path / "a"
    a.mkdir()
    (a / "stores.yaml").write_text(src)
    (a / "c.yaml").write_text((REPO / "config" / "catalog" / "campaigns.yaml").read_text())
    v1 = load_catalog([a]).version
    (a / "stores.yaml").write_text(src.replace("radius_m: 120", "radius_m: 121"))
    assert load_catalog([a]).version != v1


STORE_ERRORS = """
stores:
  - id: s1
    name: One
    timezone: Asia/Tokio
    colour: red
    geofence:
      circle: {lat: 95, lng: 139.7, radius_m: 5}
  - id: s2
    name: Bowtie
    hours: {mon-fri: "09:00-25:00", funday: "10:00-11:00"}
    geofence:
      polygon: [[35.0, 139.0], [35.01, 139.01], [35.0, 139.01], [35.01, 139.0]]
  - id: s3
    name: Flat
    geofence:
      polygon: [[35.0, 139.0], [35.01, 139.01], [35.02, 139.02]]
  - id: s4
    name: Polar
    geofence:
      polygon: [[86.0, 10.0], [86.0, 11.0], [86.5, 10.5]]
  - id: s5
    name: Both
    geofence:
      circle: {lat: 35, lng: 139, radius_m: 100}
      polygon: [[35.0, 139.0], [35.01, 139.01], [35.0, 139.01]]
"""


def test_store_problems_are_all_reported_with_positions(tmp_path: Path) -> None:
    f = write(tmp_path, "stores.yaml", STORE_ERRORS)
    got = problems([f])
    expect = [
        (4, "stores[0].timezone: unknown timezone 'Asia/Tokio'"),
        (5, "stores[0].colour: unknown key"),
        (7, "stores[0].geofence.circle.lat: Input should be less than or equal to 85"),
        (7, "stores[0].geofence.circle.radius_m: Input should be greater than or equal to 10"),
        (10, "stores[1].hours.mon-fri[0]: '25:00' is not a time of day"),
        (10, "stores[1].hours.funday: 'funday' is not a day or day range"),
        (11, "stores[1].geofence: invalid polygon for store s2: self-intersection near lat 35.005"),
        (15, "stores[2].geofence: degenerate polygon for store s3"),
        (20, "stores[3].geofence.polygon[0]: lat 86.0 is too close to a pole"),
        (23, "stores[4].geofence: a geofence needs exactly one of circle, polygon, multipolygon"),
    ]
    assert len(got) == len(expect), "\n".join(got)
    for line, text in expect:
        assert any(g.startswith(f"{f}:{line}:") and text in g for g in got), (line, text, got)


CAMPAIGN_ERRORS = """
stores:
  - id: s1
    name: One
    tags: [cafe]
    geofence: {circle: {lat: 35, lng: 139, radius_m: 100}}
campaigns:
  - id: c1
    stores: {ids: [nope], tags: [cafe]}
    trigger: dwell
    active: {from: 2026-12-01, until: 2026-11-01}
    offer:
      text:
        ja: {title: "", body: "x {store.nmae}"}
  - id: c2
    stores: {tags: [none]}
    trigger: enter
    dwell_seconds: 30
    active: {from: 2026-01-01, until: 2026-12-31, hours: "10:00-20:00"}
    offer: {text: {en: {title: t, body: b}}}
  - id: c2
    stores: {tags: [cafe]}
    trigger: enter
    active: {from: 2026-01-01, until: 2026-12-31, hours: "10:00-20:00"}
    offer: {text: {en: {title: t, body: b}}}
    caps: {store_cooldown: soon}
"""


def test_campaign_problems_are_all_reported(tmp_path: Path) -> None:
    f = write(tmp_path, "c.yaml", CAMPAIGN_ERRORS)
    got = problems([f])
    expect = [
        (8, "campaigns[0].stores.ids[0]: no store with id 'nope'"),
        (10, "campaigns[0].active: until (2026-11-01) is before from (2026-12-01)"),
        (13, "campaigns[0].offer.text.ja.title: String should have at least 1 character"),
        (13, "campaigns[0].offer.text.ja.body: unknown field {store.nmae}"),
        (14, "campaigns[1]: dwell_seconds only applies to trigger dwell"),
        (15, "campaigns[1].stores.tags[0]: no store has tag 'none'"),
        (25, "campaigns[2].caps.store_cooldown: 'soon' is not a duration"),
    ]
    for line, text in expect:
        assert any(g.startswith(f"{f}:{line}:") and text in g for g in got), (line, text, got)


def test_duplicates_across_files_and_keys(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", """
        stores:
          - id: s1
            name: One
            name: Again
            geofence: {circle: {lat: 35, lng: 139, radius_m: 100}}
        """)  # fmt: skip
    b = write(tmp_path, "b.yaml", """
        stores:
          - id: s1
            name: Other
            geofence: {circle: {lat: 35, lng: 139, radius_m: 100}}
        """)  # fmt: skip
    got = problems([tmp_path])
    assert any(g.startswith(f"{a}:4:") and "duplicate key" in g for g in got), got
    assert any(g.startswith(f"{b}:2:") and f"duplicate store id 's1' (first defined at {a}:2:" in g for g in got), got


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    f = write(tmp_path, "broken.yaml", "stores:\n  - id: s1\n    name: [unclosed\n")
    got = problems([f])
    assert len(got) == 1 and got[0].startswith(f"{f}:") and "YAML syntax error" in got[0]


def test_a_bad_date_is_a_positioned_problem_not_a_traceback(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "campaigns.yaml",
        """
        campaigns:
          - id: c1
            active: {from: 2026-02-30, until: 2026-12-31}
        """,
    )
    got = problems([f])
    assert got == [f"{f}:3:20: YAML bad value: '2026-02-30' is not a valid date: day is out of range for month"], got


def test_unknown_top_level_key_and_missing_path(tmp_path: Path) -> None:
    f = write(tmp_path, "x.yaml", "store:\n  - id: s1\n")
    assert any("store: unknown key (expected stores, campaigns, defaults)" in g for g in problems([f]))
    assert any("file not found" in g for g in problems([tmp_path / "missing.yaml"]))
    (tmp_path / "empty").mkdir()
    assert any("no YAML files found" in g for g in problems([tmp_path / "empty"]))
