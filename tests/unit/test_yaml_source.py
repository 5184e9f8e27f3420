"""The two-speed YAML reader: the fast pass gives PyYAML's data, and positions on demand."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences import yaml_source
from geofences.yaml_source import YamlSyntaxError, parse_text
from tests.conftest import REPO

# YAML 1.1 as PyYAML reads it: each of these is a trap for a hand-written resolver
TRICKY = [
    "a: yes\nb: No\nc: on\nd: OFF\ne: y\nf: n\ng: true\nh: False",
    "octal: 0123\nhex: 0x1F\nbin: 0b101\nsexa: 1:30\nunder: 1_000\nneg: -0\nplus: +5\nzero: 0",
    "f1: 1.5\nf2: -0.0\nf3: .5\nf4: -.5\nf5: 1e3\nf6: 1.0e+3\nf7: .inf\nf8: -.Inf\nf9: 1_0.5\nf10: 6.8523015e+5",
    "f11: 190:20:30.15\nf12: 0.1\nf13: 00.1\nf14: 12.\nf15: +.5\nf16: 1.2.3",
    "n1: ~\nn2: null\nn3: Null\nn4:\nn5: ''\nn6: 'null'\nn7: \"yes\"",
    "d1: 2026-12-01\nd2: 2026-12-01T10:00:00Z\nd3: 2026-12-01 10:00:00.5 +09:00\nd4: '2026-12-01'",
    "hours: {mon-fri: 10:00-20:00, sat: closed, sun: '09:00-12:00'}\nt: 10:00",
    "list: [1, two, 3.0, [4, [5]], {six: 6}]\nempty_list: []\nempty_map: {}",
    "text: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    "1: int key\n2.5: float key\nfalse: bool key\n~: null key\n2026-01-01: date key",
    "- a\n- b: [c]\n-\n- - nested",
    "plain scalar at the root",
    "'=': quoted equals\nx: '<<'",
    'unicode: カフェ\nemoji: "\\u2615"',
]

# left to the positioned parser, which must still read them as PyYAML does
UNHANDLED = [
    "base: &b {x: 1}\nother: *b",
    "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2",
    "tagged: !!str 123\nbin: !!binary aGVsbG8=",
    "? [complex, key]\n: value",
    "=: value key",
]


def _keyed(data: object) -> object:
    """PyYAML's data with keys as the catalog reader turns them (non-scalars as text)."""
    if isinstance(data, dict):
        return {yaml_source._key(k): _keyed(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_keyed(v) for v in data]
    return data


def _same(a: object, b: object) -> bool:
    """Equal with the types too (1 == 1.0 == True in Python; not in a catalog)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return (
            list(a) == list(b)
            and all(type(k) is type(j) for k, j in zip(a, b, strict=True))
            and all(_same(a[k], b[k]) for k in a)
        )
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b  # nan
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("text", TRICKY)
def test_fast_pass_reads_what_pyyaml_reads(text: str) -> None:
    fast = yaml_source._fast_data(text)  # raises if it left this to the positioned parser
    expected = _keyed(yaml.load(text, Loader=yaml.SafeLoader))
    assert _same(fast, expected), (fast, expected)
    assert _same(yaml_source._positioned(text, "t.yaml")[0], expected)


@pytest.mark.parametrize("text", UNHANDLED)
def test_what_the_fast_pass_leaves_is_read_by_the_positioned_parser(text: str) -> None:
    with pytest.raises(yaml_source._Unhandled):
        yaml_source._fast_data(text)
    if text.startswith("="):
        assert parse_text(text, "t.yaml").data == {"=": "value key"}  # flatten_mapping's rule for '='
    elif text.startswith("?"):
        assert parse_text(text, "t.yaml").data == {"['complex', 'key']": "value"}  # a key as text
    else:
        assert _same(parse_text(text, "t.yaml").data, _keyed(yaml.load(text, Loader=yaml.SafeLoader)))


def test_shipped_catalog_reads_the_same_both_ways() -> None:
    for f in sorted((REPO / "config" / "catalog").glob("*.yaml")):
        text = f.read_text()
        assert _same(yaml_source._fast_data(text), yaml_source._positioned(text, str(f))[0]), f


def test_positions_are_worked_out_when_first_asked() -> None:
    text = textwrap.dedent("""\
        stores:
          - id: s1
            geofence:
              circle: {lat: 35.0, lng: 139.0, radius_m: 50}
        """)
    doc = parse_text(text, "stores.yaml")
    assert doc.places is None  # the fast pass kept none
    assert str(doc.position(("stores", 0, "geofence", "circle", "lng"))) == "stores.yaml:4:27"  # the key
    assert str(doc.position(("stores", 0, "id"))) == "stores.yaml:2:5"
    assert str(doc.position(("stores", 0, "colour"))) == "stores.yaml:2:5"  # nearest written ancestor
    assert doc.places is not None


def test_duplicate_keys_are_found_with_their_position() -> None:
    doc = parse_text("a: 1\nb:\n  c: 2\n  c: 3\n", "d.yaml")
    assert doc.duplicate_keys == [("b", "c")]
    assert doc.data == {"a": 1, "b": {"c": 3}}  # the last wins, as in plain YAML
    assert str(doc.position(("b", "c"))) == "d.yaml:4:3"


@pytest.mark.parametrize(
    ("text", "where"),
    [("a: [1, 2\nb: 3", ":2:"), ("a: 1\n---\nb: 2", ":2:"), ("when: 2026-13-45", ":1:7"), ("a: 'open", ":")],
)
def test_errors_carry_a_position(text: str, where: str) -> None:
    with pytest.raises(YamlSyntaxError) as info:
        parse_text(text, "e.yaml")
    assert str(info.value).startswith("e.yaml") and where in str(info.value), str(info.value)


def test_a_date_that_is_not_one_is_named_in_words() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        parse_text("active:\n  from: 2026-13-01\n", "c.yaml")
    assert str(info.value) == "c.yaml:2:9: '2026-13-01' is not a valid date: month must be in 1..12"


def test_empty_documents_have_no_data() -> None:
    assert parse_text("", "e.yaml").data is None
    assert parse_text("# only a comment\n", "e.yaml").data is None
    assert parse_text("---\n...\n", "e.yaml").data is None
    assert isinstance(parse_text("d: 2026-12-01", "e.yaml").data["d"], dt.date)


@settings(max_examples=400, deadline=None)
@given(
    st.from_regex(r"[-+]?[0-9][0-9_.:eE+-]{0,7}", fullmatch=True)  # number-like: the shortcuts' ground
    | st.text(alphabet="0123456789.-+:eE_xob ~yesnoYNtrufalTFinINfNaA", min_size=1, max_size=12)
)
def test_any_plain_scalar_reads_as_pyyaml_reads_it(raw: str) -> None:
    """Numbers, booleans, nulls, dates and sexagesimals in every spelling: the fast pass's own
    int and float shortcuts must never read a scalar differently from PyYAML."""
    text = f"k: {raw}\nlist: [{raw}]\n"
    try:
        expected = yaml.load(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, ValueError):
        with pytest.raises((YamlSyntaxError, ValueError)):
            parse_text(text, "f.yaml")
        return
    try:
        fast = yaml_source._fast_data(text)
    except yaml_source._Unhandled:
        fast = parse_text(text, "f.yaml").data  # left to the positioned parser
    assert _same(fast, _keyed(expected)), (raw, fast, expected)


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8) | st.dates(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=4),
        max_leaves=20,
    )
)
def test_dumped_documents_read_back_the_same_both_ways(data: object) -> None:
    text = yaml.safe_dump({"root": data}, allow_unicode=True)
    expected = yaml.load(text, Loader=yaml.SafeLoader)
    assert _same(yaml_source._fast_data(text), _keyed(expected))
    assert _same(parse_text(text, "d.yaml").data, _keyed(expected))
