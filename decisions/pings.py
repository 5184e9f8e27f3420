"""The ping contract with the mobile app, and its parser (hot path: orjson + explicit checks).

A ping is a JSON object (≤ 8 KiB), key = device id:
``{"device_id": "d-1", "ts": "2026-11-23T10:00:00+09:00" | 1795395600000, "lat": 35.6595,
"lng": 139.7005, "accuracy_m": 12.5, "speed_mps": 1.2}``; unknown fields are ignored.
Anything else raises :class:`PingRejected` with a machine reason and a human detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

MAX_PING_BYTES = 8192
MIN_EPOCH_MS = 946_684_800_000  # 2000-01-01: anything earlier is a unit mistake
MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01


class PingRejected(ValueError):
    """A ping that cannot be used: ``reason`` is a stable code, ``detail`` says what exactly."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Ping:
    """A valid ping. Treat as immutable (not ``frozen``: that costs 4x to build, per ping)."""

    device_id: str
    ts_ms: int  # epoch milliseconds, UTC
    lat: float
    lng: float
    accuracy_m: float | None = None
    speed_mps: float | None = None


@dataclass(slots=True)
class PresenceCheck:
    """Not a ping: the worker's own request to end visits of a device that went silent.

    Sent by the sweeper to the pings topic (same key, so it is processed in order with the
    device's pings); ``ts_ms`` is the stream time when it was sent."""

    device_id: str
    ts_ms: int


CONTROL_FIELD = b'"control":"presence_check"'


def presence_check_bytes(device_id: str, ts_ms: int) -> bytes:
    return orjson.dumps({"control": "presence_check", "device_id": device_id, "ts": ts_ms})


def parse_record(raw: bytes | None, key: bytes | None = None) -> Ping | PresenceCheck:
    """A ping, or the sweeper's presence check; raise PingRejected otherwise."""
    if raw is not None and CONTROL_FIELD in raw[:40]:
        try:
            obj = orjson.loads(raw)
            return PresenceCheck(str(obj["device_id"]), int(obj["ts"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise PingRejected("bad_control", "a malformed presence check") from None
    return parse_ping(raw, key)


def _number(obj: dict[str, object], name: str, required: bool) -> float | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise PingRejected("missing_field", f"{name} is required")
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PingRejected("bad_type", f"{name} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise PingRejected("not_finite", f"{name} is {v}")
    return f


def _timestamp(v: object) -> int:
    if isinstance(v, bool) or v is None:
        raise PingRejected(
            "bad_timestamp" if v is not None else "missing_field", "ts is required (RFC 3339 or epoch ms)"
        )
    if isinstance(v, int | float):
        if not math.isfinite(v) or not MIN_EPOCH_MS <= v <= MAX_EPOCH_MS:
            raise PingRejected("bad_timestamp", f"ts {v} is not epoch milliseconds between 2000 and 2100")
        return int(v)
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise PingRejected("bad_timestamp", f"ts {v[:40]!r} is not RFC 3339") from None
        if dt.tzinfo is None:
            raise PingRejected("bad_timestamp", f"ts {v[:40]!r} has no UTC offset")
        ms = int(dt.timestamp() * 1000)
        if not MIN_EPOCH_MS <= ms <= MAX_EPOCH_MS:
            raise PingRejected("bad_timestamp", f"ts {v[:40]!r} is not between 2000 and 2100")
        return ms
    raise PingRejected("bad_timestamp", f"ts must be a string or a number, got {type(v).__name__}")


def parse_ping(raw: bytes | None, key: bytes | None = None) -> Ping:
    """Parse and validate one ping; raise PingRejected saying why not."""
    if raw is None:
        raise PingRejected("empty", "the record has no value")
    if len(raw) > MAX_PING_BYTES:
        raise PingRejected("too_large", f"{len(raw)} bytes (at most {MAX_PING_BYTES})")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PingRejected("not_json", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise PingRejected("not_object", f"a ping is a JSON object, got {type(obj).__name__}")
    device = obj.get("device_id")
    if device is None:
        raise PingRejected("missing_field", "device_id is required")
    if not isinstance(device, str):
        raise PingRejected("bad_type", f"device_id must be a string, got {type(device).__name__}")
    if not 1 <= len(device) <= 128:
        raise PingRejected("bad_device_id", f"device_id must be 1 to 128 characters, got {len(device)}")
    if key is not None and key != device.encode():
        raise PingRejected("key_mismatch", "the record key differs from device_id")
    ts = _timestamp(obj.get("ts"))
    lat = _number(obj, "lat", True)
    lng = _number(obj, "lng", True)
    assert lat is not None and lng is not None
    if not -90.0 <= lat <= 90.0:
        raise PingRejected("lat_out_of_range", f"lat {lat} is not between -90 and 90")
    if not -180.0 <= lng <= 180.0:
        raise PingRejected("lng_out_of_range", f"lng {lng} is not between -180 and 180")
    acc = _number(obj, "accuracy_m", False)
    if acc is not None and acc < 0:
        raise PingRejected("bad_accuracy", f"accuracy_m {acc} is negative")
    speed = _number(obj, "speed_mps", False)
    if speed is not None and speed < 0:
        speed = None  # Android reports -1 for "unknown"
    return Ping(device, ts, lat, lng, acc, speed)


def parse_pings(
    values: list[bytes | None], keys: list[bytes | None], native: bool = True
) -> tuple[list[Ping | PresenceCheck], list[tuple[int, PingRejected]]]:
    """A batch of records: (pings and presence checks in order, [(index, why)] of the rejected).

    The usual ping (a JSON object with a string id, epoch-ms or RFC 3339 ``ts`` and float
    fields in range) takes a fast path: the kernel's parser where it is built (``native``),
    else plain type checks over orjson; anything else goes through :func:`parse_record`,
    which gives the same answer for the usual ping and the detailed reason for the rest."""
    good: list[Ping | PresenceCheck] = []
    bad: list[tuple[int, PingRejected]] = []
    append = good.append
    parser = _native_parser() if native else None
    if parser is not None:
        for i, ping in enumerate(parser(values, keys, Ping)):
            if ping is not None:
                append(ping)
                continue
            try:
                append(parse_record(values[i], keys[i]))
            except PingRejected as exc:
                bad.append((i, exc))
        return good, bad
    loads, fast = orjson.loads, _fast_ping
    for i, (raw, key) in enumerate(zip(values, keys, strict=True)):
        if raw is not None and len(raw) <= MAX_PING_BYTES and CONTROL_FIELD not in raw[:40]:
            try:
                ping = fast(loads(raw), key)
            except orjson.JSONDecodeError:
                ping = None
            if ping is not None:
                append(ping)
                continue
        try:
            append(parse_record(raw, key))
        except PingRejected as exc:
            bad.append((i, exc))
    return good, bad


_NATIVE: list[Any] = []  # [the kernel's parse_pings, or None], looked up at first use


def _native_parser() -> Any:
    if not _NATIVE:
        from geofences.index import load_kernel

        kernel = load_kernel()
        _NATIVE.append(getattr(kernel, "parse_pings", None) if kernel is not None else None)
    return _NATIVE[0]


def _fast_ping(obj: object, key: bytes | None) -> Ping | None:
    """The ping if ``obj`` is a usual, valid one; None sends it down the detailed path."""
    if type(obj) is not dict:
        return None
    device, ts, lat, lng = obj.get("device_id"), obj.get("ts"), obj.get("lat"), obj.get("lng")
    acc, speed = obj.get("accuracy_m"), obj.get("speed_mps")
    if type(device) is not str or not 0 < len(device) <= 128 or (key is not None and key != device.encode()):
        return None
    if type(ts) is str:
        try:
            ts = _timestamp(ts)
        except PingRejected:
            return None
    elif type(ts) is not int or not MIN_EPOCH_MS <= ts <= MAX_EPOCH_MS:
        return None
    # orjson never yields NaN or infinity, so a float here is finite
    if type(lat) is not float or type(lng) is not float or not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
        return None
    if acc is not None and (type(acc) is not float or acc < 0):
        return None
    if speed is not None and (type(speed) is not float or speed < 0):
        return None
    return Ping(device, ts, lat, lng, acc, speed)
