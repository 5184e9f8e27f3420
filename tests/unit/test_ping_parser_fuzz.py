"""Hypothesis throws malformed pings at the parser: it never crashes, and every rejection is a
dead letter with a reason, the original bytes and where it came from."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decisions.pings import (
    MAX_PING_BYTES,
    Ping,
    PingRejected,
    parse_ping,
    parse_pings,
    parse_record,
    presence_check_bytes,
)
from decisions.records import DeadLetter

AT = datetime(2026, 11, 23, tzinfo=UTC)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
field = st.sampled_from(["device_id", "ts", "lat", "lng", "accuracy_m", "speed_mps", "extra"])
# stdlib json writes NaN/Infinity and huge integers, which a phone's bug could send too
almost_pings = st.dictionaries(field, json_values, max_size=7).map(lambda d: json.dumps(d).encode())
payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    almost_pings,
    st.builds(
        lambda n: b'{"device_id":"d","pad":"' + b"x" * n + b'"}', st.integers(MAX_PING_BYTES - 30, MAX_PING_BYTES + 50)
    ),
)


def check(raw: bytes, key: bytes | None) -> None:
    try:
        ping = parse_ping(raw, key)
    except PingRejected as exc:
        assert exc.reason and exc.detail
        letter = DeadLetter.loads(DeadLetter.of(raw, key, exc.reason, exc.detail, "pings", 3, 42, AT).dumps())
        assert (letter.reason, letter.topic, letter.partition, letter.offset) == (exc.reason, "pings", 3, 42)
        original = base64.b64decode(letter.payload_b64) if letter.payload_b64 else letter.payload.encode()
        assert original == raw
        return
    assert isinstance(ping, Ping)
    assert -90 <= ping.lat <= 90 and -180 <= ping.lng <= 180 and 1 <= len(ping.device_id) <= 128


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payloads, st.one_of(st.none(), st.binary(max_size=8), st.just(b"d")))
@pytest.mark.slow
def test_ten_thousand_malformed_payloads_never_crash(raw: bytes, key: bytes | None) -> None:
    check(raw, key)


def test_reasons_for_typical_mistakes() -> None:
    ok = {"device_id": "d", "ts": "2026-11-23T10:00:00+09:00", "lat": 35.0, "lng": 139.0}
    assert parse_ping(orjson.dumps(ok), b"d").ts_ms == 1795395600000
    assert parse_ping(orjson.dumps({**ok, "ts": 1795395600000, "speed_mps": -1})).speed_mps is None
    cases = {
        b"": "not_json", b"nope": "not_json", b"[]": "not_object",
        orjson.dumps({**ok, "lat": "35"}): "bad_type", orjson.dumps({**ok, "lat": True}): "bad_type",
        orjson.dumps({**ok, "lng": 181}): "lng_out_of_range", orjson.dumps({**ok, "ts": "yesterday"}): "bad_timestamp",
        orjson.dumps({**ok, "ts": "2026-11-23T10:00:00"}): "bad_timestamp", orjson.dumps({**ok, "ts": 1795395600}): "bad_timestamp",
        orjson.dumps({k: v for k, v in ok.items() if k != "lng"}): "missing_field",
        orjson.dumps({**ok, "device_id": ""}): "bad_device_id", orjson.dumps({**ok, "accuracy_m": -3}): "bad_accuracy",
        b'{"device_id":"d","ts":1795395600000,"lat":NaN,"lng":0}': "not_json",
        b'{"device_id":"d","ts":1795395600000,"lat":1e400,"lng":0}': "not_json",
    }  # fmt: skip
    for raw, reason in cases.items():
        try:
            parse_ping(raw)
        except PingRejected as exc:
            assert exc.reason == reason, (raw, exc)
        else:
            raise AssertionError(f"{raw!r} was accepted")
    try:
        parse_ping(orjson.dumps(ok), b"other")
    except PingRejected as exc:
        assert exc.reason == "key_mismatch"


number = st.one_of(st.floats(-200, 200), st.integers(-200, 200), st.none(), st.text(max_size=3))
usual_pings = st.fixed_dictionaries(
    {
        "device_id": st.one_of(
            st.text(max_size=130), st.integers(-(2**63), 2**63 - 1), st.sampled_from(["d", "sim-1"])
        ),
        "ts": st.one_of(
            st.integers(0, 5_000_000_000_000), st.floats(0, 5e12), st.sampled_from(["2026-11-23T10:00:00+09:00", "x"])
        ),
        "lat": number,
        "lng": number,
    },
    optional={"accuracy_m": number, "speed_mps": number, "extra": number},
).map(orjson.dumps)


def outcome(raw: bytes | None, key: bytes | None) -> object:
    try:
        return parse_record(raw, key)
    except PingRejected as exc:
        return (exc.reason, exc.detail)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.one_of(usual_pings, payloads, st.none()), st.sampled_from([None, b"d", b"x"])), max_size=20)
)
def test_batch_parser_answers_like_the_detailed_one(records: list[tuple[bytes | None, bytes | None]]) -> None:
    """The batch parser's fast path gives the same ping, or the same reason, as ``parse_record``."""
    records = [*records, (presence_check_bytes("d", 1795395600000), b"d")]
    good, bad = parse_pings([r for r, _ in records], [k for _, k in records])
    rejected = {i: (exc.reason, exc.detail) for i, exc in bad}
    accepted = iter(good)
    for i, (raw, key) in enumerate(records):
        assert (rejected[i] if i in rejected else next(accepted)) == outcome(raw, key), raw
    assert next(accepted, None) is None


def rfc3339(dt: datetime, digits: int, offset_min: int, zulu: bool) -> str:
    """A timestamp the way phones write them: fractions of 0 to 7 digits, Z or ±HH:MM."""
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{dt.microsecond:06d}{dt.microsecond % 10}"[:digits]
    if zulu and offset_min == 0:
        return text + "Z"
    sign = "-" if offset_min < 0 else "+"
    return text + f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"


timestamps = st.one_of(
    st.builds(
        rfc3339, st.datetimes(datetime(1999, 12, 30), datetime(2100, 1, 2)), st.integers(0, 7),
        st.integers(-23 * 60 - 59, 23 * 60 + 59), st.booleans(),
    ),
    st.sampled_from(["2026-11-23T10:00:00", "2026-02-29T10:00:00Z", "2026-11-23 10:00:00Z", "2026-11-23T10:00:00+0900",
                     "2026-11-23T24:00:00Z", "2026-11-23T10:00:00z", "2026-11-23T10:00:00.Z", "+2026-11-23T10:00:00Z"]),
)  # fmt: skip
native_pings = st.fixed_dictionaries(
    {"device_id": st.sampled_from(["d", "é" * 128, "x" * 129]), "ts": st.one_of(timestamps, st.integers(0, 5 * 10**12)),
     "lat": number, "lng": number},
    optional={"accuracy_m": number, "speed_mps": number, "extra": number},
).map(orjson.dumps)  # fmt: skip


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.one_of(native_pings, usual_pings, payloads, st.none()), st.sampled_from([None, b"d", b"x"])),
        max_size=20,
    )
)
def test_the_kernels_parser_answers_like_python(records: list[tuple[bytes | None, bytes | None]]) -> None:
    """The kernel's fast path (where built) gives the same pings and reasons as Python's,
    RFC 3339 timestamps to the millisecond included."""
    values, keys = [r for r, _ in records], [k for _, k in records]
    native, python = parse_pings(values, keys), parse_pings(values, keys, native=False)
    assert native[0] == python[0]
    assert [(i, e.reason, e.detail) for i, e in native[1]] == [(i, e.reason, e.detail) for i, e in python[1]]


def test_the_kernels_parser_takes_the_usual_pings() -> None:
    from decisions.pings import _native_parser

    parser = _native_parser()
    if parser is None:
        pytest.skip("kernel not built")
    usual = [
        b'{"device_id":"sim-1","ts":1795489201836,"lat":35.6436791,"lng":139.7192826,"accuracy_m":19.9}',
        b'{"device_id":"sim-1","ts":"2026-11-23T10:00:00.123+09:00","lat":35.0,"lng":139.0,"speed_mps":null}',
    ]
    assert all(p is not None for p in parser(usual, [b"sim-1", None], Ping))
    assert parser(usual, [b"sim-2", None], Ping)[0] is None  # the key differs: Python says why


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.one_of(native_pings, usual_pings, payloads, st.none()), st.sampled_from([None, b"d", b"x"])),
        max_size=20,
    ),
    st.lists(st.integers(0, 20), max_size=3),
)
def test_columns_parser_answers_like_python(
    records: list[tuple[bytes | None, bytes | None]], checks_at: list[int]
) -> None:
    """Parsed into columns (the decision step's way), a batch is the same pings, presence
    checks and reasons as Python's parser gives, read back one by one, sliced, or joined."""
    from decisions.ping_columns import concatenated, of_pings, parse_columns

    for at in sorted(checks_at, reverse=True):
        records.insert(min(at, len(records)), (presence_check_bytes("d", 1795395600000 + at), b"d"))
    values, keys = [r for r, _ in records], [k for _, k in records]
    columns, bad = parse_columns(values, keys)
    good, expected_bad = parse_pings(values, keys, native=False)
    assert list(columns) == good and len(columns) == len(good)
    assert [columns[k] for k in range(len(good))] == good
    assert [(i, e.reason, e.detail) for i, e in bad] == [(i, e.reason, e.detail) for i, e in expected_bad]
    assert columns.ids == [p.device_id for p in good]
    assert list(columns[1:3]) == good[1:3]
    with pytest.raises(IndexError):
        columns[len(good)]
    for ours, theirs in zip(columns.columns, of_pings(good).columns, strict=True):
        assert ours.dtype == theirs.dtype
        assert ours.tolist() == theirs.tolist() or all(
            a == b or (a != a and b != b) for a, b in zip(ours.tolist(), theirs.tolist(), strict=True)
        )  # NaN where a number is absent, on both sides
    assert list(concatenated([columns, of_pings(good)])) == good + good


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(
            st.tuples(st.one_of(native_pings, payloads, st.none()), st.sampled_from([None, b"d", b"x"])),
            max_size=8,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_poll_parsed_at_once_is_each_partition_parsed_alone(
    parts: list[list[tuple[bytes | None, bytes | None]]],
) -> None:
    """parse_poll: a poll's partitions parsed in one call give each partition's pings and
    rejections (numbered within it) as parsing it alone does; joined again, the one parse."""
    from decisions.ping_columns import concatenated, parse_columns, parse_poll

    polls = [([r for r, _ in records], [k for _, k in records]) for records in parts]
    together = parse_poll(polls)
    assert len(together) == len(polls)
    for (columns, bad), (values, keys) in zip(together, polls, strict=True):
        alone, alone_bad = parse_columns(values, keys)
        assert list(columns) == list(alone) and columns.ids == alone.ids
        assert [(i, e.reason, e.detail) for i, e in bad] == [(i, e.reason, e.detail) for i, e in alone_bad]
    joined = concatenated([c for c, _ in together])
    assert list(joined) == [p for c, _ in together for p in c]
    if len(polls) > 1:
        assert joined is together[0][0].whole  # the parse's own columns, not a copy
        assert list(concatenated([c for c, _ in reversed(together)])) == [
            p for c, _ in reversed(together) for p in c
        ]  # out of order: copied in that order


def test_columns_parser_without_the_kernel_gives_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from decisions import ping_columns

    records = [
        (b'{"device_id":"d","ts":1795489201836,"lat":35.64,"lng":139.71,"accuracy_m":19.9}', b"d"),
        (b'{"device_id":"d","ts":"2026-11-23T10:00:00+09:00","lat":35.0,"lng":139.0,"extra":[1]}', b"d"),
        (presence_check_bytes("e", 1795395600000), b"e"),
        (b"not json", b"d"),
        (None, b"d"),
    ]
    values, keys = [r for r, _ in records], [k for _, k in records]
    native = ping_columns.parse_columns(values, keys)
    monkeypatch.setattr(ping_columns, "_parser", lambda: None)
    python = ping_columns.parse_columns(values, keys)
    assert list(native[0]) == list(python[0]) and len(python[0]) == 3
    assert (
        [(i, e.reason) for i, e in native[1]]
        == [(i, e.reason) for i, e in python[1]]
        == [(3, "not_json"), (4, "empty")]
    )


@pytest.mark.parametrize("native", [True, False])
def test_rejected_pings_leave_no_garbage_cycles(native: bool) -> None:
    """A batch with bad pings is freed by reference counting alone: a rejection kept with its
    traceback held the parsing frame, whose list of rejections held it back (a cycle per batch,
    and a 34-50 ms young collection every ~50k of them under a stream of bad pings)."""
    import gc

    from decisions.ping_columns import parse_columns

    good = b'{"device_id":"d","ts":1795489201836,"lat":35.64,"lng":139.71}'
    values: list[bytes | None] = [good, b'{"device_id":"d","sent_ms":1}', good, b"not json", None]
    keys: list[bytes | None] = [b"d"] * len(values)
    parse = parse_columns if native else (lambda v, k: parse_pings(v, k, native=False))
    parse(values, keys)  # what the first call loads (the kernel, its modules) is not the batch's
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            _, bad = parse(values, keys)
            assert [e.reason for _, e in bad] == ["missing_field", "not_json", "empty"]
            del bad
        assert gc.collect() == 0
    finally:
        gc.enable()
