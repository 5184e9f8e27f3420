"""A poll's pings as columns: parsed by the kernel without a Python object per ping.

The decision step reads a partition's records into :class:`PingColumns` (device ids and the
(kind, ts, lat, lng, accuracy, speed) arrays the index and the presence book read), and the
engine takes them as they are; a :class:`~decisions.pings.Ping` is built only for the few
pings something names one by one (a gate's metric, a notification, a suppression's record).
Creating, reading back and freeing a ``Ping`` per record cost ~0.6 µs of the ~1 µs a ping
took to parse (bench/results/e2e.md, twentieth session).

Not compiled by mypyc (a subclass of ``Sequence``); its ``__getitem__`` is off the hot path.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from decisions.pings import Ping, PingRejected, PresenceCheck, parse_pings, parse_record

PING, CHECK, ASK_PYTHON = 0, 1, 2  # kinds: the kernel's parse_columns says 2 where Python must look


class PingColumns(Sequence[Ping | PresenceCheck]):
    """Pings and presence checks in order, as columns: ``ids[k]`` and ``columns[i][k]``
    with columns (kind: 0 ping / 1 presence check, ts_ms, lat, lng, accuracy_m, speed_mps;
    NaN where a ping has no such number, and in every number of a check). ``whole``: the
    columns these are a slice of, from ``start`` (:func:`parse_poll`), if any."""

    __slots__ = ("columns", "ids", "start", "whole")

    def __init__(
        self, ids: list[str], columns: tuple[Any, ...], whole: PingColumns | None = None, start: int = 0
    ) -> None:
        self.ids = ids
        self.columns = columns
        self.whole = whole
        self.start = start

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, k: int) -> Ping | PresenceCheck: ...
    @overload
    def __getitem__(self, k: slice) -> Sequence[Ping | PresenceCheck]: ...
    def __getitem__(self, k: int | slice) -> Ping | PresenceCheck | Sequence[Ping | PresenceCheck]:
        if isinstance(k, slice):
            return PingColumns(self.ids[k], tuple(c[k] for c in self.columns))
        kind, ts, lat, lng, acc, speed = self.columns
        device_id = self.ids[k]  # IndexError past the end, as a list
        if kind[k] == CHECK:
            return PresenceCheck(device_id, int(ts[k]))
        return Ping(device_id, int(ts[k]), float(lat[k]), float(lng[k]), _number(acc[k]), _number(speed[k]))

    def __iter__(self) -> Iterator[Ping | PresenceCheck]:
        for k in range(len(self.ids)):
            yield self[k]


def _number(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def parse_columns(
    values: list[bytes | None], keys: list[bytes | None]
) -> tuple[PingColumns, list[tuple[int, PingRejected]]]:
    """:func:`decisions.pings.parse_pings` into columns: the same pings and presence checks
    in order, and [(index, why)] of the rejected records. The kernel parses the usual ping;
    the rest go through ``parse_record`` (which names what is wrong); without the kernel,
    ``parse_pings`` and the columns read from its pings."""
    parser = _parser()
    if parser is None:
        good, rejected = parse_pings(values, keys, native=False)
        return of_pings(good), rejected
    ids, (kind, ts, lat, lng, acc, speed) = parser(values, keys)
    bad: list[tuple[int, PingRejected]] = []
    asked = np.flatnonzero(kind == ASK_PYTHON).tolist()
    for i in asked:
        try:
            item = parse_record(values[i], keys[i])
        except PingRejected as exc:
            # without its traceback: that holds this frame, whose ``bad`` holds the exception, a
            # cycle per batch only a collection frees (a bad ping in 50 left ~45k objects, each
            # young collection 34 ms; 2026-12-07)
            bad.append((i, exc.with_traceback(None)))
            continue
        ids[i] = item.device_id
        ts[i] = item.ts_ms
        if isinstance(item, PresenceCheck):
            kind[i] = CHECK
        else:
            kind[i] = PING
            lat[i], lng[i], acc[i], speed[i] = item.lat, item.lng, _or_nan(item.accuracy_m), _or_nan(item.speed_mps)
    columns = (kind, ts, lat, lng, acc, speed)
    if bad:
        keep = np.ones(len(ids), dtype=bool)
        keep[[i for i, _ in bad]] = False
        ids = [d for d, kept in zip(ids, keep.tolist(), strict=True) if kept]
        columns = tuple(c[keep] for c in columns)
    return PingColumns(ids, columns), bad


def parse_poll(
    parts: Sequence[tuple[list[bytes | None], list[bytes | None]]],
) -> list[tuple[PingColumns, list[tuple[int, PingRejected]]]]:
    """:func:`parse_columns` of several partitions' (values, keys) in one call (a call a
    partition cost ~17 µs more each, a poll's dozen ~0.2 ms): each partition's columns, a slice
    of the whole that :func:`concatenated` gives back as it is, and its rejected records
    (indices within the partition)."""
    if len(parts) == 1:
        return [parse_columns(parts[0][0], parts[0][1])]
    values = [v for vals, _ in parts for v in vals]
    keys = [k for _, ks in parts for k in ks]
    whole, bad = parse_columns(values, keys)
    starts = list(itertools.accumulate((len(vals) for vals, _ in parts), initial=0))
    rejected: list[list[tuple[int, PingRejected]]] = [[] for _ in parts]
    for i, exc in bad:
        j = bisect.bisect_right(starts, i) - 1
        rejected[j].append((i - starts[j], exc))
    out = []
    at = 0
    for j, (vals, _) in enumerate(parts):
        n = len(vals) - len(rejected[j])
        cols = tuple(c[at : at + n] for c in whole.columns)
        out.append((PingColumns(whole.ids[at : at + n], cols, whole, at), rejected[j]))
        at += n
    return out


def of_pings(items: Sequence[Ping | PresenceCheck]) -> PingColumns:
    """Pings and presence checks as columns (the path without the kernel, and tests)."""
    n = len(items)
    pings = [p if isinstance(p, Ping) else None for p in items]
    return PingColumns(
        [p.device_id for p in items],
        (
            np.fromiter((0 if p is not None else 1 for p in pings), np.uint8, n),
            np.fromiter((p.ts_ms for p in items), np.int64, n),
            np.fromiter((p.lat if p is not None else math.nan for p in pings), np.float64, n),
            np.fromiter((p.lng if p is not None else math.nan for p in pings), np.float64, n),
            np.fromiter((_or_nan(p.accuracy_m) if p is not None else math.nan for p in pings), np.float64, n),
            np.fromiter((_or_nan(p.speed_mps) if p is not None else math.nan for p in pings), np.float64, n),
        ),
    )


def concatenated(batches: Sequence[PingColumns]) -> PingColumns:
    """Several partitions' columns end to end (the index matches a whole poll at once): the
    columns they were sliced from, where they are all of them in order (:func:`parse_poll`)."""
    if len(batches) == 1:
        return batches[0]
    whole = batches[0].whole
    if whole is not None and all(b.whole is whole for b in batches):
        at = 0
        for b in batches:
            if b.start != at:
                break
            at += len(b)
        else:
            if at == len(whole):
                return whole
    return PingColumns(
        [d for b in batches for d in b.ids],
        tuple(np.concatenate(cols) for cols in zip(*(b.columns for b in batches), strict=True)),
    )


def _or_nan(x: float | None) -> float:
    return math.nan if x is None else x


def _parser() -> Any:
    """The kernel's ``parse_columns``, or None."""
    from geofences.index import kernel_function

    return kernel_function("parse_columns")
