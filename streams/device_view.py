"""The decision engine's view of one partition's device state and device records.

The decision step decides a poll while the previous poll's writes are still on their way to
the changelog and the local store, so a state lives in three places in turn: held (changed
by the poll being decided), unwritten (serialised, waiting for its poll's checkpoint), then
in the store. Reads look in that order, so the engine always sees its own latest write.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from decisions.records import Device
from decisions.state import DeviceState
from streams.device_store import PartitionStore


class Changes:
    """The states a checkpoint writes: device ids and their serialised states (None deletes),
    as two lists rather than a pair each (a second's ~60k pairs at a live 120k pings/s set off
    garbage collections that took a third of the take). Iterates as (device id, state) pairs."""

    __slots__ = ("ids", "raws")

    def __init__(self, ids: list[str] | None = None, raws: Sequence[bytes | None] | None = None) -> None:
        self.ids: list[str] = [] if ids is None else ids
        self.raws: Sequence[bytes | None] = [] if raws is None else raws
        if len(self.ids) != len(self.raws):
            raise ValueError(f"{len(self.ids)} device ids for {len(self.raws)} states")

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[str, bytes | None]]:
        return zip(self.ids, self.raws, strict=True)

    def encoded_ids(self) -> list[bytes]:
        """The device ids as record keys."""
        return [device_id.encode() for device_id in self.ids]


def drop_written(unwritten: dict[str, bytes], changes: Changes) -> None:
    """Forget the bytes a checkpoint put in the store, unless a later poll took newer ones."""
    for device_id, raw in changes:
        if raw is not None and unwritten.get(device_id) is raw:
            del unwritten[device_id]


class StoreStates:
    """Reads through to the store, writes held until taken. Decoded states of recent devices
    stay in memory between polls (up to ``keep``), so a device pinging every few seconds is
    not read and decoded every poll. With ``refresh_ms``, a take holds back a state that
    changed only in its last position, ping time and visits' last-seen times for less than
    that much of its ping time since the store's copy (:meth:`held_back`)."""

    def __init__(self, store: PartitionStore, keep: int = 0, refresh_ms: int = 0) -> None:
        self.store = store
        self.keep = keep
        self.refresh_ms = refresh_ms
        self.decoded: dict[str, DeviceState] = {}
        self.dirty: dict[str, DeviceState] = {}
        self.touched: dict[str, None] = {}  # changed since the last visiting() (or take)
        self.unwritten: dict[str, bytes] = {}  # taken, not yet in the store
        self.stored: dict[str, tuple[int, int]] = {}  # of decoded states: the store's copy (material, ts)
        self.soft: set[str] = set()  # held back by a take: written later (see take)

    def get(self, device_id: str) -> DeviceState | None:
        state = self.dirty.get(device_id) or self.decoded.get(device_id)
        if state is not None:
            return state
        raw = self.unwritten.get(device_id) or self.store.state(device_id)
        if raw is None:
            return None
        state = DeviceState.loads(raw)
        if self.keep:
            self.decoded[device_id] = state
            if self.refresh_ms:
                self.stored[device_id] = (state.material(), state.ts_ms)
        return state

    def put(self, device_id: str, state: DeviceState) -> None:
        self.dirty[device_id] = state
        self.touched[device_id] = None

    def visiting(self) -> list[tuple[str, bool]]:
        """(device, inside some store now) of each state changed since the last call (or take):
        every device whose being inside may have changed (here all of them; the book reports
        only those where it did)."""
        touched, self.touched = self.touched, {}
        return [(k, bool(self.dirty[k].visits)) for k in touched]  # touched only with dirty, cleared with it

    def held_back(self, device_id: str, state: DeviceState) -> bool:
        """Whether the store's copy differs from ``state`` only in its last position, ping time
        and visits' last-seen times, for less than ``refresh_ms`` of its ping time."""
        copy = self.stored.get(device_id)
        return copy is not None and 0 <= state.ts_ms - copy[1] < self.refresh_ms and copy[0] == state.material()

    def take(self, everything: bool = False) -> Changes:
        """The held writes, serialised now (the engine goes on changing the objects), to be
        written by a checkpoint; until then reads see them. Kept decoded for the next polls.
        Changes :meth:`held_back` stay for a later take unless ``everything``, and are written
        before their states are forgotten."""
        everything = everything or not self.keep or not self.refresh_ms
        dirty, self.dirty = self.dirty, {}
        self.touched = {}
        if not everything:
            for device_id, state in list(dirty.items()):
                if self.held_back(device_id, state):
                    del dirty[device_id]
                    self.soft.add(device_id)
        elif self.soft:
            dirty.update((d, self.decoded[d]) for d in self.soft if d not in dirty)
        self.soft.difference_update(dirty)
        if self.keep:
            self.decoded.update(dirty)
            if len(self.decoded) > self.keep:  # forget the least recently loaded quarter
                for device_id in list(itertools.islice(self.decoded, len(self.decoded) - self.keep * 3 // 4)):
                    if device_id in self.soft:
                        self.soft.discard(device_id)
                        dirty[device_id] = self.decoded[device_id]
                    del self.decoded[device_id]
                    self.stored.pop(device_id, None)
        ids, raws = list(dirty), [state.dumps() for state in dirty.values()]
        if self.refresh_ms:
            self.stored.update((d, (s.material(), s.ts_ms)) for d, s in dirty.items() if d in self.decoded)
        self.unwritten.update(zip(ids, raws, strict=True))
        return Changes(ids, raws)

    def written(self, changes: Changes) -> None:
        """A checkpoint put these in the store: stop holding them (unless a later poll changed them again)."""
        drop_written(self.unwritten, changes)

    def forget(self, device_ids: Iterable[str] | None = None) -> None:
        """Drop decoded and unwritten states (all of them by default), and changes held back
        for them: the engine may have changed them in polls whose writes then failed, or the
        store deleted them."""
        if device_ids is None:
            self.decoded.clear()
            self.dirty.clear()
            self.touched.clear()
            self.unwritten.clear()
            self.stored.clear()
            self.soft.clear()
        else:
            for device_id in device_ids:
                self.decoded.pop(device_id, None)
                self.unwritten.pop(device_id, None)
                self.stored.pop(device_id, None)
                self.soft.discard(device_id)


class BookStates:
    """:class:`StoreStates` with the states held and stepped natively, by the kernel's presence
    book (``geofences._kernel.PresenceBook``): the engine decides gates and presence there and
    only campaigns in Python. Same reads, writes and bytes; ``keep`` bounds the states held,
    ``refresh_ms`` holds back changes as :class:`StoreStates` says."""

    def __init__(self, store: PartitionStore, kernel: Any, keep: int = 0, refresh_ms: int = 0) -> None:
        self.store = store
        self.keep = keep
        self.refresh_ms = refresh_ms
        self.kernel = kernel
        self.book = kernel.PresenceBook()
        self.engine: object | None = None  # the engine the book is configured for
        self.unwritten: dict[str, bytes] = {}  # taken, not yet in the store

    def prepare(self, engine: Any, device_ids: list[str]) -> None:
        if engine is not self.engine:
            self.book.configure(engine.presence_catalog(self.kernel))
            self.engine = engine
        for device_id in self.book.missing(device_ids):
            raw = self.unwritten.get(device_id) or self.store.state(device_id)
            if raw is not None:
                self.book.load(device_id, raw)

    def get(self, device_id: str) -> DeviceState | None:
        raw: bytes | None = self.book.dumps(device_id)
        raw = raw or self.unwritten.get(device_id) or self.store.state(device_id)
        return DeviceState.loads(raw) if raw is not None else None

    def put(self, device_id: str, state: DeviceState) -> None:
        self.book.load(device_id, state.dumps(), dirty=True)

    def visiting(self) -> list[tuple[str, bool]]:
        visiting: list[tuple[str, bool]] = self.book.visiting()  # only where it changed
        return visiting

    def take(self, everything: bool = False) -> Changes:
        ids, raws = self.book.take(self.keep, self.refresh_ms, everything)
        self.unwritten.update(zip(ids, raws, strict=True))
        return Changes(ids, raws)

    def written(self, changes: Changes) -> None:
        drop_written(self.unwritten, changes)

    def forget(self, device_ids: Iterable[str] | None = None) -> None:
        if device_ids is None:
            self.book.forget()
            self.unwritten.clear()
        else:
            ids = list(device_ids)
            self.book.forget(ids)
            for device_id in ids:
                self.unwritten.pop(device_id, None)


def state_view(store: PartitionStore, kernel: Any, keep: int = 0, refresh_ms: int = 0) -> StoreStates | BookStates:
    """The engine's view of a partition's states: the presence book where the kernel is built
    (``kernel``: ``geofences.index.load_kernel()``'s module, or None), else Python objects."""
    if kernel is not None:
        return BookStates(store, kernel, keep, refresh_ms)
    return StoreStates(store, keep, refresh_ms)


class StoreDevices:
    """The engine's view of one partition's device records. What was read is kept decoded (up
    to ``keep`` devices, unknown ones too) until the store says the record was written again
    (``PartitionStore.device_watchers``): a dwelling device's checks read the store once, not
    once per decision (a RocksDB read and a bytes comparison were ~3 µs a decision)."""

    def __init__(self, store: PartitionStore, keep: int = 10_000) -> None:
        self.store = store
        self.keep = keep
        self.decoded: dict[str, Device | None] = {}
        store.device_watchers.append(self.forget)

    def get(self, device_id: str) -> Device | None:
        try:
            return self.decoded[device_id]
        except KeyError:
            pass
        raw = self.store.device(device_id)
        device = Device.loads(raw) if raw is not None else None
        if len(self.decoded) >= self.keep:
            self.decoded.clear()
        self.decoded[device_id] = device
        return device

    def forget(self, device_ids: list[str] | None) -> None:
        """Drop what was decoded of these devices (None: of all)."""
        if device_ids is None:
            self.decoded.clear()
            return
        for device_id in device_ids:
            self.decoded.pop(device_id, None)
