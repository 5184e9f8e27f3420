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

import math
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from decisions.pings import Ping, PingRejected, PresenceCheck, parse_pings, parse_record

PING, CHECK, ASK_PYTHON = 0, 1, 2  # kinds: the kernel's parse_columns says 2 where Python must look


class PingColumns(Sequence[Ping | PresenceCheck]):
    """Pings and presence checks in order, as columns: ``ids[k]`` and ``columns[i][k]``
    with columns (kind: 0 ping / 1 presence check, ts_ms, lat, lng, accuracy_m, speed_mps;
    NaN where a ping has no such number, and in every number of a check)."""

    __slots__ = ("columns", "ids")

    def __init__(self, ids: list[str], columns: tuple[Any, ...]) -> None:
        self.ids = ids
        self.columns = columns

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
    """Several partitions' columns end to end (the index matches a whole poll at once)."""
    if len(batches) == 1:
        return batches[0]
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
