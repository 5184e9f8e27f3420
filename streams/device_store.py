"""The partitions' device state and device records, on local disk (RocksDB) or in memory.

The changelog topic is the truth and the local store a cache of it: every write of a partition
carries the changelog offset it reflects, in the same atomic batch, so after a restart (or when the
partition comes back) only the changelog's tail is read. The device records are a copy of the
compacted ``devices`` topic kept the same way, with the ``devices`` offset they reflect.

RocksDB's write-ahead log is off (as Kafka Streams runs its stores): each batch lands in the
memtable with the offset it reflects, so after a crash the store reopens at its last flush — a
consistent earlier point, offsets included — and the changelog's tail brings it up to date.
The log cost ~0.3 µs of the worker's thread and ~0.6 µs of CPU in all per state written
(a 436-B state, 400 to a batch, 2026-12-06).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

STATE = b"s"  # + device id -> DeviceState bytes
DEVICE = b"d"  # + device id -> Device record bytes
CHANGELOG_NEXT = b"~changelog"  # next changelog offset to read
DEVICES_NEXT = b"~devices"  # next devices-topic offset to read
# RocksDB's write buffers (memtables), for all of a worker's partitions. Every state change is
# a new entry until its buffer is flushed, and an insert walks a skip list of every entry: the
# bigger the buffer, the more cache misses a put costs. 8 MiB, two of them, flushed too often
# for twelve partitions (100k dense fences: 50.0k pings/s against 68.8k); one 48-MiB buffer
# (2026-12-07) cost 1.08-1.17 µs of the worker's thread a ~120-B state. Four of 16 MiB: 0.73-0.78
# (~435-B states: 0.76-0.83 against 0.89-0.92), fewer CPU seconds in all (flushes run on
# RocksDB's threads, the spare buffers let them fall behind without stalling the writes), and
# 64 MiB at most instead of 96 (2.4M puts of 1,600 a batch over 30k devices, 2026-12-07).
WRITE_BUFFER_BYTES = 16 << 20
WRITE_BUFFERS = 4


class LocalStore:
    """The worker's one local store, every partition's keys under the partition's own prefix:
    RocksDB at ``path``, or memory if ``path`` is None (tests, ``store=memory``).

    One RocksDB for all partitions, not one each: a state written into one memtable cost ~0.85
    µs of the worker's thread against ~1.8 µs spread over twelve (twelve skip lists of 8 MiB do
    not stay in the CPU's caches; bench/results/e2e.md, twentieth session)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.db: Any = self._open()

    def _open(self) -> Any:
        if self.path is None:
            return {}
        from rocksdict import Options, Rdict, WriteOptions

        self.path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(WRITE_BUFFERS)
        db = Rdict(str(self.path), options=options)
        writes = WriteOptions()
        # the changelog is the log (see the module's doc); a property, though rocksdict's stub says a method
        writes.disable_wal = True  # type: ignore[method-assign,assignment]
        db.set_write_options(writes)
        return db

    def partition(self, p: int) -> PartitionStore:
        """Partition ``p``'s view of the store."""
        return PartitionStore(self, p)

    def close(self) -> None:
        """Flush what is only in memory (no write-ahead log), then close."""
        if self.path is not None and self.db is not None:
            self.db.flush()
            self.db.close()
            self.db = None


def drop_per_partition_stores(folder: Path, keep: str) -> list[Path]:
    """Remove the one-RocksDB-per-partition stores an older geopush left in ``folder``
    (``<keep>-<partition>``): a cache of the changelog, read again into the shared store."""
    gone = sorted(d for d in folder.glob(f"{keep}-*") if d.is_dir() and d.name[len(keep) + 1 :].isdigit())
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone


class PartitionStore:
    """One partition's keys in a :class:`LocalStore`; given a path (or None: memory) instead,
    in a store of its own, closed with it."""

    def __init__(self, local: LocalStore | Path | None, partition: int = 0) -> None:
        self.owned = not isinstance(local, LocalStore)
        self.local = local if isinstance(local, LocalStore) else LocalStore(local)
        self.path = self.local.path
        self.partition = partition
        self.prefix = partition.to_bytes(4, "big")
        # told the ids of device records written (None: all may have changed), so what was
        # decoded from them is dropped then, not checked against the store at every read
        self.device_watchers: list[Callable[[list[str] | None], None]] = []

    @property
    def db(self) -> Any:
        return self.local.db

    # ---------------------------------------------------------------- reads
    def state(self, device_id: str) -> bytes | None:
        raw: bytes | None = self.db.get(self.prefix + STATE + device_id.encode())
        return raw

    def device(self, device_id: str) -> bytes | None:
        raw: bytes | None = self.db.get(self.prefix + DEVICE + device_id.encode())
        return raw

    def next_offset(self, which: bytes) -> int:
        raw = self.db.get(self.prefix + which)
        return int(raw) if raw is not None else 0

    def states(self) -> Iterator[tuple[str, bytes]]:
        """Every (device id, state) of the partition, in key order."""
        skip = len(self.prefix) + len(STATE)
        for key, value in self._prefixed(self.prefix + STATE):
            yield key[skip:].decode(), value

    def count(self, prefix: bytes) -> int:
        return sum(1 for _ in self._prefixed(self.prefix + prefix))

    # ---------------------------------------------------------------- writes
    def write_states(self, changes: Iterable[tuple[str, bytes | None]], changelog_next: int | None) -> None:
        """Apply state changes (None deletes) and record the changelog offset they reflect, atomically."""
        at = self.prefix + STATE
        self._write(((at + k.encode(), v) for k, v in changes), CHANGELOG_NEXT, changelog_next)

    def write_devices(self, changes: Iterable[tuple[str, bytes | None]], devices_next: int) -> None:
        """Apply device records (None deletes) read from ``devices`` up to ``devices_next``, atomically."""
        rows = list(changes)
        at = self.prefix + DEVICE
        self._write(((at + k.encode(), v) for k, v in rows), DEVICES_NEXT, devices_next)
        for watcher in self.device_watchers:
            watcher([k for k, _ in rows])

    def reset(self) -> None:
        """Forget the partition's keys (the changelog was recreated or truncated below our offset)."""
        if self.path is None:
            for k in [k for k in self.db if k.startswith(self.prefix)]:
                del self.db[k]
        else:
            end = (self.partition + 1).to_bytes(4, "big")  # the next partition's prefix: past every key of ours
            self.db.delete_range(self.prefix, end)
        for watcher in self.device_watchers:
            watcher(None)

    def close(self) -> None:
        """Close the store if it is this partition's own (a shared one is closed by its owner)."""
        if self.owned:
            self.local.close()

    # ---------------------------------------------------------------- internals
    def _write(self, puts: Iterable[tuple[bytes, bytes | None]], mark: bytes, offset: int | None) -> None:
        if self.path is None:
            for k, v in puts:
                if v is None:
                    self.db.pop(k, None)
                else:
                    self.db[k] = v
            if offset is not None:
                self.db[self.prefix + mark] = str(offset).encode()
            return
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for k, v in puts:
            if v is None:
                batch.delete(k)
            else:
                batch.put(k, v)
        if offset is not None:
            batch.put(self.prefix + mark, str(offset).encode())
        self.db.write(batch)

    def _prefixed(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        if self.path is None:
            for k in sorted(k for k in self.db if k.startswith(prefix)):
                value = self.db.get(k)  # a reader may pause between items (expiry): skip what went
                if value is not None:
                    yield k, value
            return
        it = self.db.iter()
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            yield key, it.value()
            it.next()
