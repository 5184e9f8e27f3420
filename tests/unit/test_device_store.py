"""The per-partition store of the decision step: RocksDB and memory behave the same, writes and
their changelog offsets are atomic and survive a reopen, states and device records never mix."""

from __future__ import annotations

from pathlib import Path

import pytest

from decisions.state import DeviceState, Visit
from streams.device_store import (
    CHANGELOG_NEXT,
    DEVICES_NEXT,
    WRITE_BUFFER_BYTES,
    LocalStore,
    PartitionStore,
    drop_per_partition_stores,
)
from streams.device_view import Changes, StoreDevices, StoreStates


@pytest.fixture(params=["rocksdb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> PartitionStore:
    return PartitionStore(tmp_path / "p0" if request.param == "rocksdb" else None)


def test_states_and_devices_are_kept_apart_with_their_offsets(store: PartitionStore) -> None:
    assert store.next_offset(CHANGELOG_NEXT) == 0 and store.next_offset(DEVICES_NEXT) == 0
    store.write_states([("a", b"[1]"), ("b", b"[2]")], 7)
    store.write_devices([("a", b'{"v":1}'), ("z", b'{"v":2}')], 3)
    assert list(store.states()) == [("a", b"[1]"), ("b", b"[2]")]
    assert store.device("a") == b'{"v":1}' and store.state("z") is None
    assert (store.next_offset(CHANGELOG_NEXT), store.next_offset(DEVICES_NEXT)) == (7, 3)
    store.write_states([("a", None)], 8)  # a tombstone deletes
    store.write_devices([("z", None)], 4)
    assert list(store.states()) == [("b", b"[2]")] and store.device("z") is None
    assert store.count(b"d") == 1 and (store.next_offset(CHANGELOG_NEXT), store.next_offset(DEVICES_NEXT)) == (8, 4)
    store.write_states([], None)  # nothing written: the offset stays
    assert store.next_offset(CHANGELOG_NEXT) == 8


def test_reset_forgets_everything(store: PartitionStore) -> None:
    store.write_states([("a", b"[1]")], 5)
    store.reset()
    assert list(store.states()) == [] and store.next_offset(CHANGELOG_NEXT) == 0
    store.write_states([("b", b"[2]")], 1)
    assert store.state("b") == b"[2]"


@pytest.mark.parametrize("kind", ["rocksdb", "memory"])
def test_partitions_in_one_local_store_are_kept_apart(kind: str, tmp_path: Path) -> None:
    """Every partition's states, device records and offsets under its own prefix: same ids in
    two partitions do not meet, and resetting one (its changelog recreated) leaves the others."""
    local = LocalStore(tmp_path / "shared" if kind == "rocksdb" else None)
    parts = {p: local.partition(p) for p in (0, 1, 255, 256)}
    for p, store in parts.items():
        store.write_states([("a", b"[%d]" % p), (f"only-{p}", b"[0]")], 10 + p)
        store.write_devices([("a", b'{"p":%d}' % p)], 20 + p)
    for p, store in parts.items():
        assert list(store.states()) == [("a", b"[%d]" % p), (f"only-{p}", b"[0]")]
        assert store.device("a") == b'{"p":%d}' % p and store.state("only-0") == (b"[0]" if p == 0 else None)
        assert (store.next_offset(CHANGELOG_NEXT), store.next_offset(DEVICES_NEXT)) == (10 + p, 20 + p)
        assert store.count(b"d") == 1
    told: list[list[str] | None] = []
    parts[255].device_watchers.append(told.append)
    parts[255].reset()
    assert told == [None]
    assert list(parts[255].states()) == [] and parts[255].device("a") is None
    assert parts[255].next_offset(CHANGELOG_NEXT) == 0
    for p in (0, 1, 256):  # the neighbours on both sides untouched
        assert parts[p].state("a") == b"[%d]" % p and parts[p].next_offset(CHANGELOG_NEXT) == 10 + p
    parts[1].close()  # a partition's view does not close the shared store
    assert parts[0].state("a") == b"[0]"
    local.close()


def test_shared_rocksdb_store_survives_a_reopen(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "shared")
    for p in range(3):
        local.partition(p).write_states([(f"dev-{i}", b"[%d,%d]" % (p, i)) for i in range(100)], 100 + p)
    local.close()
    again = LocalStore(tmp_path / "shared")
    for p in range(3):
        store = again.partition(p)
        assert store.next_offset(CHANGELOG_NEXT) == 100 + p and store.state("dev-99") == b"[%d,99]" % p
        assert sum(1 for _ in store.states()) == 100
    again.close()


def test_stores_of_one_partition_each_from_an_older_geopush_are_removed(tmp_path: Path) -> None:
    for name in ("presence-0", "presence-11"):
        PartitionStore(tmp_path / name).close()
    (tmp_path / "presence-notes").mkdir()
    (tmp_path / "presence").mkdir()
    gone = drop_per_partition_stores(tmp_path, "presence")
    assert [d.name for d in gone] == ["presence-0", "presence-11"]
    assert sorted(d.name for d in tmp_path.iterdir()) == ["presence", "presence-notes"]


def test_rocksdb_state_survives_a_reopen(tmp_path: Path) -> None:
    first = PartitionStore(tmp_path / "p3")
    first.write_states([(f"dev-{i}", b"[%d]" % i) for i in range(1000)], 1000)
    first.close()
    again = PartitionStore(tmp_path / "p3")
    assert again.next_offset(CHANGELOG_NEXT) == 1000
    assert again.state("dev-999") == b"[999]" and sum(1 for _ in again.states()) == 1000


def test_rocksdb_states_written_past_several_write_buffers_read_back_newest(tmp_path: Path) -> None:
    """The write buffer is small (WRITE_BUFFER_BYTES): many flushes of overwritten keys later,
    every key reads its newest value, in the store and after a reopen, with its offset."""
    store = PartitionStore(tmp_path / "p5")
    value = b"x" * 500
    polls = 3 * WRITE_BUFFER_BYTES // (len(value) * 1000) + 1
    for poll in range(polls):  # the same 2,000 devices, 1,000 of them changing every poll
        store.write_states([(f"dev-{(poll * 1000 + i) % 2000}", b"%d:" % poll + value) for i in range(1000)], poll + 1)
    store.close()
    again = PartitionStore(tmp_path / "p5")
    assert again.next_offset(CHANGELOG_NEXT) == polls
    newest = {f"dev-{(p * 1000 + i) % 2000}": p for p in range(polls) for i in range(1000)}
    assert {d: int(raw.split(b":")[0]) for d, raw in again.states()} == newest


def test_engine_view_reads_through_and_holds_writes_until_flushed(store: PartitionStore) -> None:
    stored = DeviceState(ts_ms=1, lat=35.0, lng=139.0, visits={"s1": Visit(1, 1)})
    store.write_states([("d1", stored.dumps())], 1)
    states = StoreStates(store)
    got = states.get("d1")
    assert got == stored and states.get("nobody") is None
    assert got is not None
    got.ts_ms = 2
    states.put("d1", got)
    assert states.get("d1") is got  # the engine sees its own write within the batch
    loaded = store.state("d1")
    assert loaded is not None and DeviceState.loads(loaded).ts_ms == 1  # the store only on flush
    store.write_devices(
        [
            (
                "d1",
                b'{"v":1,"device_id":"d1","token":"t","locale":"ja","opt_in":true,"updated_at":"2026-11-23T00:00:00Z"}',
            )
        ],
        1,
    )
    device = StoreDevices(store).get("d1")
    assert device is not None and device.token == "t"
    assert StoreDevices(store).get("d2") is None


def test_engine_view_keeps_recent_states_decoded_between_polls(store: PartitionStore) -> None:
    for i in range(8):
        store.write_states([(f"d{i}", DeviceState(ts_ms=i).dumps())], i + 1)
    states = StoreStates(store, keep=4)
    first = states.get("d0")
    assert first is not None and states.get("d0") is first  # decoded once
    first.ts_ms = 100
    states.put("d0", first)
    changes = states.take()
    assert list(changes) == [("d0", first.dumps())] and states.dirty == {}
    store.write_states(changes, 9)
    states.written(changes)
    assert states.get("d0") is first  # the next poll: not read again
    for i in range(1, 8):
        states.get(f"d{i}")
    assert len(states.decoded) == 8
    states.take()  # over the bound: the oldest loaded are forgotten, down to 3/4 of it
    assert list(states.decoded) == ["d5", "d6", "d7"]
    states.forget(["d6"])
    assert "d6" not in states.decoded and states.get("d6") == DeviceState(ts_ms=6)
    got = states.get("d7")
    assert got is not None
    got.ts_ms = 999  # changed by a poll whose writes then failed: everything decoded is dropped
    states.forget()
    assert states.get("d7") == DeviceState(ts_ms=7)


def test_engine_view_reads_states_taken_but_not_yet_written(store: PartitionStore) -> None:
    """The next poll is decided while the previous poll's checkpoint is in flight: it must see
    the states that poll took, not the older ones still in the store."""
    store.write_states([("d1", DeviceState(ts_ms=1).dumps())], 1)
    states = StoreStates(store, keep=0)  # nothing kept decoded: every read goes past the cache
    got = states.get("d1")
    assert got is not None
    got.ts_ms = 2
    states.put("d1", got)
    first = states.take()
    got.ts_ms = 99  # the engine goes on changing the object: what was taken is what was decided
    assert list(first) == [("d1", DeviceState(ts_ms=2).dumps())]
    assert states.get("d1") == DeviceState(ts_ms=2)  # not the store's ts 1
    again = states.get("d1")
    assert again is not None
    again.ts_ms = 3
    states.put("d1", again)
    second = states.take()  # a later poll changes it again before the first checkpoint is done
    store.write_states(first, 2)
    states.written(first)
    assert states.get("d1") == DeviceState(ts_ms=3)  # the first checkpoint does not hide the second
    store.write_states(second, 3)
    states.written(second)
    assert states.unwritten == {} and states.get("d1") == DeviceState(ts_ms=3)
    states.put("d1", DeviceState(ts_ms=4))
    states.take()
    states.forget()  # a failed checkpoint: back to what the store holds
    assert states.get("d1") == DeviceState(ts_ms=3)


def _device(token: str) -> bytes:
    return (
        b'{"v":1,"device_id":"d1","token":"' + token.encode() + b'","locale":"ja","opt_in":true,'
        b'"updated_at":"2026-11-23T00:00:00Z"}'
    )


def test_device_view_reads_a_record_again_only_once_it_is_written_again(store: PartitionStore) -> None:
    book = StoreDevices(store, keep=2)
    assert book.get("d1") is None  # unknown, and remembered as such ...
    store.db[b"d" + b"d1"] = _device("t0")  # (a write behind the store's back is not seen)
    assert book.get("d1") is None
    store.write_devices([("d1", _device("t1"))], 1)
    first = book.get("d1")
    assert first is not None and first.token == "t1"
    assert book.get("d1") is first  # the same bytes: the decoded record is reused
    store.write_devices([("d1", _device("t2"))], 2)  # a new token on the devices topic
    second = book.get("d1")
    assert second is not None and second.token == "t2"
    store.write_devices([("d1", None)], 3)  # a tombstone
    assert book.get("d1") is None
    for i in range(5):  # more devices than it keeps: it starts over, answers stay right
        store.write_devices([(f"x{i}", _device(f"x{i}").replace(b'"d1"', f'"x{i}"'.encode()))], 4 + i)
        got = book.get(f"x{i}")
        assert got is not None and got.device_id == f"x{i}"
    assert len(book.decoded) <= 2


def test_device_view_starts_over_when_the_store_is_reset(store: PartitionStore) -> None:
    book = StoreDevices(store)
    store.write_devices([("d1", _device("t1"))], 1)
    assert book.get("d1") is not None
    store.reset()  # the changelog was recreated: nothing read before holds
    assert book.get("d1") is None
    store.write_devices([("d1", _device("t2"))], 1)
    got = book.get("d1")
    assert got is not None and got.token == "t2"


CRASH = """
import os, sys
from pathlib import Path
from streams.device_store import PartitionStore
store = PartitionStore(Path(sys.argv[1]))
value = b"x" * 500
for poll in range(int(sys.argv[2])):  # each poll: 1,000 devices to the poll's number, its offset
    store.write_states([(f"dev-{i}", b"%d:" % poll + value) for i in range(1000)], poll + 1)
os._exit(0)  # killed: no close, no flush
"""


def test_a_killed_store_reopens_at_a_consistent_earlier_point(tmp_path: Path) -> None:
    """No write-ahead log: what was only in memory is gone after a kill, but what is left is
    the store as of one batch, the changelog offset with it (the changelog brings the rest)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    polls = 3 * WRITE_BUFFER_BYTES // (500 * 1000) + 2  # past a few flushes
    subprocess.run([sys.executable, "-c", CRASH, str(tmp_path / "p7"), str(polls)], cwd=REPO, check=True)
    again = PartitionStore(tmp_path / "p7")
    mark = again.next_offset(CHANGELOG_NEXT)
    assert 0 < mark <= polls  # flushed batches kept (the newest ones may be lost)
    assert {int(raw.split(b":")[0]) for _, raw in again.states()} == {mark - 1}  # all of that one batch
    assert sum(1 for _ in again.states()) == 1000


def test_changes_keep_ids_and_states_in_step() -> None:
    changes = Changes(["a", "b"], [b"1", None])
    assert list(changes) == [("a", b"1"), ("b", None)] and len(changes) == 2 and changes
    assert changes.encoded_ids() == [b"a", b"b"] and not Changes()
    with pytest.raises(ValueError, match="2 device ids for 1 states"):
        Changes(["a", "b"], [b"1"])
