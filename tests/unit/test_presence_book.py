"""The presence book (kernel/src/presence.rs, state.rs): device states held natively, gates
and presence stepped in Rust, campaigns decided in Python. It must decide exactly as the
Python engine — the same decisions, candidates and gates in the same order, the same final
states — and read and write the same state bytes."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decisions.engine import Engine
from decisions.pings import Ping, PresenceCheck, parse_ping
from decisions.records import Device
from decisions.state import DeviceState, Visit
from geofences.index import load_kernel
from geofences.load import load_catalog
from streams.device_store import PartitionStore
from streams.device_view import BookStates, StoreStates, state_view
from streams.phones import simulate
from tests.conftest import REPO

KERNEL = load_kernel()
pytestmark = pytest.mark.skipif(KERNEL is None, reason="kernel not built: no cargo on this machine")
START_MS = 1795489200000  # 2026-11-24T12:00:00+09:00
DAY_MS = 86_400_000
PARTS = 3

Item = Ping | PresenceCheck


def decide_all(
    engine: Engine, items: list[Item], devices: dict[str, object], book: bool, keep: int, size: int = 400,
    take_every: int = 1, refresh_ms: int = 0, writes: list[int] | None = None,
) -> tuple[list[bytes], dict[str, bytes]]:  # fmt: skip
    """Every output in order (per poll and partition), and each device's final state, decoded
    then serialised by Python (so the two paths' bytes are compared by meaning). The changed
    states are taken and stored every ``take_every`` polls, as a checkpoint covers the polls
    of its interval, and everything at the end, as a stop does; ``writes``: each take's count
    appended. After each take, what the store holds of each held state differs from it only
    as ``refresh_ms`` lets it (:func:`assert_store_lags_at_most`)."""
    engine.stream_ms.clear()
    stores = {p: PartitionStore(None) for p in range(PARTS)}
    views = {
        p: (BookStates(s, KERNEL, keep, refresh_ms) if book else StoreStates(s, keep, refresh_ms))
        for p, s in stores.items()
    }
    out: list[bytes] = []
    watched: dict[int, set[str]] = {p: set() for p in stores}  # the worker's devices inside a store
    seen: set[str] = set()
    for i in range(0, len(items), size):
        batches: dict[int, list[Item]] = {p: [] for p in range(PARTS)}
        for item in items[i : i + size]:
            batches[sum(item.device_id.encode()) % PARTS].append(item)
            seen.add(item.device_id)
        decided = engine.decide_poll(batches, views, dict.fromkeys(batches, devices))  # type: ignore[arg-type]
        for p, (decisions, candidates, gated) in sorted(decided.items()):
            out += [x for k, v in decisions.records() for x in (v, b"key " + k)]
            out += [c.notification.dumps() for c in candidates]
            out += [orjson.dumps([p, q.device_id, q.ts_ms, why]) for q, why in gated]
            for d, inside in views[p].visiting():  # the book tells only changes, Python all
                (watched[p].add if inside else watched[p].discard)(d)
            out.append(orjson.dumps([p, sorted(watched[p])]))
        last = i + size >= len(items)
        if (i // size + 1) % take_every == 0 or last:
            for p, view in views.items():
                changes = view.take(everything=last)
                if writes is not None:
                    writes.append(len(changes))
                stores[p].write_states(changes, None)
                view.written(changes)
            for d in seen:
                p = sum(d.encode()) % PARTS
                assert_store_lags_at_most(views[p].get(d), stores[p].state(d), 0 if last else refresh_ms)
    final = {d: DeviceState.loads(raw).dumps() for s in stores.values() for d, raw in s.states()}
    return out, final


def assert_store_lags_at_most(held: DeviceState | None, raw: bytes | None, refresh_ms: int) -> None:
    """The store's copy of a state is the held state but for its last position, ping time and
    visits' last-seen times, less than ``refresh_ms`` of ping time behind (0: exactly it)."""
    if held is None:
        assert raw is None
        return
    assert raw is not None
    stored = DeviceState.loads(raw)
    if not refresh_ms:
        assert stored == held
        return
    assert stored.material() == held.material()
    assert 0 <= held.ts_ms - stored.ts_ms < refresh_ms, (held.ts_ms, stored.ts_ms)


def stream(seed: int) -> tuple[Engine, list[Item], dict[str, object]]:
    """300 simulated phones on the example catalog, with presence checks for silent devices
    mixed in, and the first pings again 40 days later (past the state TTL: states start over)."""
    catalog = load_catalog([REPO / "config" / "catalog"])
    records, sim = simulate(catalog, 300, START_MS, seed=seed, spread_s=120.0)
    pings = [parse_ping(orjson.dumps(p.body)) for p in sim]
    rng = random.Random(seed)
    items: list[Item] = []
    for k, ping in enumerate(pings):
        items.append(ping)
        if k % 37 == 0:
            other = pings[rng.randrange(k + 1)]
            items.append(PresenceCheck(other.device_id, ping.ts_ms + rng.choice((0, 1_000_000, 2_000_000))))
    later = [Ping(p.device_id, p.ts_ms + 40 * DAY_MS, p.lat, p.lng, p.accuracy_m, p.speed_mps) for p in pings[:400]]
    return Engine.for_catalog(catalog), items + later, {d.device_id: d for d in records}


@pytest.mark.parametrize("seed", [3, 8])
@pytest.mark.parametrize("keep", [0, 25, 10_000])
def test_the_book_decides_like_the_python_engine(seed: int, keep: int) -> None:
    engine, items, devices = stream(seed)
    python = decide_all(engine, items, devices, book=False, keep=keep)
    native = decide_all(engine, items, devices, book=True, keep=keep)
    decisions = [o for o in python[0] if o.startswith(b"{")]  # decisions and notifications
    assert len(decisions) > 100 and len(python[1]) > 250  # enters, dwells, exits, checks and gates happened
    assert native[0] == python[0]
    assert native[1] == python[1]


@pytest.mark.parametrize("book", [False, True])
def test_decisions_do_not_depend_on_how_many_polls_a_checkpoint_covers(book: bool) -> None:
    """States taken every fourth poll (held across polls, each device's written once) decide
    and tell visits as states taken after every poll do."""
    engine, items, devices = stream(5)
    every_poll = decide_all(engine, items, devices, book=book, keep=25)
    every_fourth = decide_all(engine, items, devices, book=book, keep=25, take_every=4)
    assert len(every_poll[0]) > 500 and every_fourth == every_poll


@pytest.mark.parametrize("keep", [0, 25, 10_000])
def test_changes_held_back_decide_alike_and_write_less(keep: int) -> None:
    """With ``refresh_ms`` a take holds back states changed only in position and times (each
    device pings every ~15 s here): the decisions and the states after a stop are those of
    writing every change, the book's and Python's alike, with fewer writes where states stay
    held between polls (``keep`` > 0) — and the store is never more than that behind (checked
    at every take by ``decide_all``), also for states forgotten past ``keep``."""
    engine, items, devices = stream(6)
    runs, writes = {}, {}
    for book in (False, True):
        for refresh_ms in (0, 60_000):
            count: list[int] = []
            runs[book, refresh_ms] = decide_all(
                engine, items, devices, book=book, keep=keep, size=100, refresh_ms=refresh_ms, writes=count
            )
            writes[book, refresh_ms] = sum(count)
    assert len(runs[False, 0][0]) > 500
    assert runs[True, 60_000] == runs[False, 60_000] == runs[True, 0] == runs[False, 0]
    assert writes[True, 0] == writes[False, 0]
    for book in (False, True):  # which held states are forgotten past `keep` differs between the two
        if keep == 10_000:
            assert writes[book, 60_000] < 0.8 * writes[book, 0], writes
        elif keep:  # ~100 devices a partition for 25 held: most held back changes are written as forgotten
            assert writes[book, 60_000] < writes[book, 0], writes
        else:
            assert writes[book, 60_000] == writes[book, 0]  # nothing held between polls: nothing held back


def test_a_catalog_swap_reconfigures_the_book() -> None:
    """A new engine (catalog) mid-stream: the book follows it, states carry over by store id."""
    catalog = load_catalog([REPO / "config" / "catalog"])
    records, sim = simulate(catalog, 200, START_MS, seed=4, spread_s=120.0)
    pings = [parse_ping(orjson.dumps(p.body)) for p in sim]
    devices = {d.device_id: d for d in records}
    results = []
    for book in (False, True):
        first, second = Engine.for_catalog(catalog), Engine.for_catalog(catalog, exit_buffer_m=5.0)
        store = PartitionStore(None)
        view = BookStates(store, KERNEL, 100) if book else StoreStates(store, 100)
        out = []
        for i in range(0, len(pings), 300):
            engine = first if i < len(pings) // 2 else second
            if engine is second and not second.stream_ms:
                second.stream_ms = dict(first.stream_ms)
            decisions, candidates, gated = engine.decide(pings[i : i + 300], view, devices)  # type: ignore[arg-type]
            out += [x for k, v in decisions.records() for x in (v, b"key " + k)]
            out += [c.notification.dumps() for c in candidates]
            out += [orjson.dumps([q.ts_ms, why]) for q, why in gated]
            changes = view.take()
            store.write_states(changes, None)
            view.written(changes)
        results.append(out)
    assert len(results[0]) > 100 and results[1] == results[0]


NEAR = [(f.lat, f.lng) for f in load_catalog([REPO / "config" / "catalog"]).fences][:4]


@st.composite
def walks(draw: st.DrawFn) -> list[Item]:
    """A few devices moving around a few stores (inside, on the edge, away), with duplicates,
    late pings, vague fixes, speeds and presence checks."""
    items: list[Item] = []
    t = START_MS
    for _ in range(draw(st.integers(1, 60))):
        device = draw(st.sampled_from(["a", "b", "c"]))
        t += draw(st.sampled_from([0, 1_000, 15_000, 60_000, 400_000, 2_000_000, -20_000]))
        if draw(st.integers(0, 9)) == 0:
            items.append(PresenceCheck(device, t))
            continue
        lat, lng = draw(st.sampled_from(NEAR))
        dlat, dlng = draw(st.sampled_from([0.0, 0.0004, 0.0008, 0.003, -0.0006])), draw(st.floats(-0.001, 0.001))
        acc = draw(st.one_of(st.none(), st.sampled_from([5.0, 40.0, 150.0])))
        speed = draw(st.one_of(st.none(), st.sampled_from([0.5, 12.0])))
        items.append(Ping(device, t, lat + dlat, lng + dlng, acc, speed))
    return items


ENGINE = Engine.for_catalog(load_catalog([REPO / "config" / "catalog"]))
DEVICES = {d: None for d in "abc"}  # no device records: every campaign is "no_device"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(walks(), st.sampled_from([1, 4, 100]))
def test_random_walks_decide_alike(items: list[Item], size: int) -> None:
    python = decide_all(ENGINE, items, DEVICES, book=False, keep=2, size=size)
    assert decide_all(ENGINE, items, DEVICES, book=True, keep=2, size=size) == python


def state_bytes() -> list[bytes]:
    """States as Python writes them: plain, packed (long), and format 1 (absolute times)."""
    small = DeviceState(
        START_MS, 35.0, 139.70000001, {"s-1": Visit(START_MS - 60_000, START_MS, ["c-1"])},
        [(START_MS - 5_000, "c-1", "s-1")], ["s-2"],
    )  # fmt: skip
    big = DeviceState(START_MS, None, None, {f"store-{i}": Visit(START_MS - i, START_MS) for i in range(80)})
    v1 = orjson.dumps([START_MS, 1.5, 2.5, {"s": [START_MS - 10, START_MS - 5, []]}, [[START_MS - 3, "c", "s"]], []])
    return [small.dumps(), big.dumps(), v1, DeviceState().dumps()]


@pytest.mark.parametrize("raw", state_bytes())
def test_the_book_reads_and_writes_python_state_bytes(raw: bytes) -> None:
    store = PartitionStore(None)
    store.write_states([("d", raw)], None)
    view = BookStates(store, KERNEL, 10)
    view.prepare(ENGINE, ["d"])
    assert view.get("d") == DeviceState.loads(raw)
    view.put("d", DeviceState.loads(raw))  # written back by the book, read again by Python
    [(device, written)] = view.take()
    assert device == "d" and DeviceState.loads(written) == DeviceState.loads(raw)
    assert len(written) < 1100  # a long state is packed as Python packs it


def test_a_corrupt_state_names_its_device() -> None:
    store = PartitionStore(None)
    store.write_states([("dev-9", b"[2,1,"), ("dev-8", b"[7]")], None)
    view = BookStates(store, KERNEL)
    with pytest.raises(ValueError, match=r"dev-9.*not JSON"):
        view.prepare(ENGINE, ["dev-9"])
    with pytest.raises(ValueError, match=r"dev-8.*1 items"):
        view.prepare(ENGINE, ["dev-8"])


def test_the_worker_holds_states_in_the_book_where_the_kernel_is() -> None:
    store = PartitionStore(None)
    assert isinstance(state_view(store, KERNEL), BookStates)
    assert isinstance(state_view(store, None), StoreStates)


def test_the_book_tells_only_the_devices_whose_being_inside_changed() -> None:
    """Most changed states do not start or end a visit: the worker's list of devices to watch
    for silence hears of a device when it enters, when it leaves, and when it is new."""
    engine = Engine.for_catalog(load_catalog([REPO / "config" / "catalog"]))  # its own stream time
    store = PartitionStore(None)
    view = BookStates(store, KERNEL, 10)
    lat, lng = NEAR[0]
    told = []
    for k, dlat in enumerate([0.0, 0.0, 0.0, 0.01, 0.01, 0.0]):  # in, in, in, away, away, back
        engine.decide([Ping("a", START_MS + k * 30_000, lat + dlat, lng, 5.0, 0.5)], view, DEVICES)  # type: ignore[arg-type]
        told.append(view.visiting())
        view.written(view.take())
    assert told == [[("a", True)], [], [], [("a", False)], [], [("a", True)]]
    # read back from the store (another book, as after a rebalance): inside, so nothing to tell
    store.write_states([("a", view.get("a").dumps())], None)  # type: ignore[union-attr]
    again = BookStates(store, KERNEL, 10)
    engine.decide([Ping("a", START_MS + 200_000, lat, lng, 5.0, 0.5)], again, DEVICES)  # type: ignore[arg-type]
    assert again.visiting() == []
    again.forget(["a"])  # expired: the worker stops watching it, the book must tell it again
    engine.decide([Ping("a", START_MS + 230_000, lat, lng, 5.0, 0.5)], again, DEVICES)  # type: ignore[arg-type]
    assert again.visiting() == [("a", True)]


def tight_catalog(out: Path) -> Path:
    """The example catalog with its first four stores in every campaign (enter, dwell, exit),
    a one-minute dwell and caps a short walk breaks: the campaign checks the book does."""
    src = REPO / "config" / "catalog"
    stores = yaml.safe_load((src / "stores.yaml").read_text())
    for s in stores["stores"][:4]:
        s["tags"] = sorted({*s.get("tags", []), "cafe", "flagship", "station", "bookstore"})
    campaigns = yaml.safe_load((src / "campaigns.yaml").read_text())
    for c in campaigns["campaigns"]:
        c["caps"] = {"store_cooldown": "20m", "per_campaign": {"max": 2, "window": "2h"}, "budget": 100}
        c["active"].pop("days", None)
        if c["trigger"] == "dwell":
            c["dwell_seconds"] = 60
    defaults = yaml.safe_load((src / "defaults.yaml").read_text())
    defaults["defaults"]["caps"]["per_device"] = {"max": 3, "window": "3h"}
    out.mkdir()
    for name, doc in (("stores", stores), ("campaigns", campaigns), ("defaults", defaults)):
        (out / f"{name}.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return out


def device(device_id: str, status: str) -> Device | None:
    if status == "none":
        return None
    at = datetime(2026, 11, 1, tzinfo=UTC)
    token = None if status == "no_token" else f"tok-{device_id}"
    return Device(device_id=device_id, token=token, opt_in=status != "opted_out", locale="en", updated_at=at)


@pytest.fixture(scope="module")
def tight_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.for_catalog(load_catalog([tight_catalog(tmp_path_factory.mktemp("tight") / "catalog")]))


STATUSES = st.sampled_from(["reachable", "reachable", "none", "opted_out", "no_token"])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(walks(), st.sampled_from([1, 5, 100]), st.tuples(STATUSES, STATUSES, STATUSES))
def test_campaign_checks_in_the_book_decide_alike(
    tight_engine: Engine, items: list[Item], size: int, statuses: tuple[str, str, str]
) -> None:
    """Devices of every kind (none, opted out, no token, reachable) walking in and out of
    stores with every trigger, under caps a walk breaks and across opening hours: the book's
    consent, schedule and cap checks say what the Python engine says, in the same order."""
    devices = {d: device(d, s) for d, s in zip("abc", statuses, strict=True)}
    python = decide_all(tight_engine, items, devices, book=False, keep=2, size=size)
    assert decide_all(tight_engine, items, devices, book=True, keep=2, size=size) == python


def test_the_tight_walks_reach_every_check(tight_engine: Engine) -> None:
    """The walks above can reach each reason the book decides (else their sameness says little)."""
    lat, lng = NEAR[0]
    reasons = Counter()
    for statuses in (("reachable",) * 3, ("none", "opted_out", "no_token")):
        devices = {d: device(d, s) for d, s in zip("abc", statuses, strict=True)}
        items: list[Item] = []
        for k in range(400):  # ~13 hours of a device a minute apart at the store, now and then away
            away = 0.01 if k % 7 == 3 else 0.0
            items += [Ping(d, START_MS + k * 120_000 + i, lat + away, lng, 5.0, 0.5) for i, d in enumerate("abc")]
        tight_engine.stream_ms.clear()
        out, _ = decide_all(tight_engine, items, devices, book=True, keep=10)
        records = [orjson.loads(o) for o in out if o.startswith(b"{")]
        reasons.update(r.get("reason", "notified") for r in records)  # notifications have no reason
    wanted = {"notified", "cooldown", "campaign_cap", "device_cap", "no_device", "opted_out", "no_token", "quiet_hours"}
    assert wanted <= set(reasons), reasons


def test_the_books_records_are_the_rows_bytes(tight_engine: Engine) -> None:
    """The book writes its suppressions' records itself: byte for byte what the Python rows
    write (orjson), for device ids JSON must escape and times with and without milliseconds."""
    lat, lng = NEAR[0]
    odd = ['q"uote', "back\\slash", "new\nline\t\x01\x1f", "café/東京\x7f", "plain"]
    statuses = ["reachable", "none", "opted_out", "no_token", "reachable"]
    devices = {d: device(d, s) for d, s in zip(odd, statuses, strict=True)}
    items: list[Item] = []
    for k in range(120):
        away = 0.01 if k % 9 == 4 else 0.0
        items += [Ping(d, START_MS + k * 90_000 + (i * 250 if k % 2 else 0), lat + away, lng, 5.0, 0.5)
                  for i, d in enumerate(odd)]  # fmt: skip
    python = decide_all(tight_engine, items, devices, book=False, keep=3, size=50)
    native = decide_all(tight_engine, items, devices, book=True, keep=3, size=50)
    records = [orjson.loads(o) for o in native[0] if o.startswith(b"{") and b'"suppressed"' in o]
    assert {r["device_id"] for r in records} == set(odd)
    assert any(".250000Z" in r["ts"] for r in records) and any(r["ts"].endswith(":00Z") for r in records)
    assert native == python


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-62_135_596_800_000, 253_402_300_799_999), st.integers(0, 4_102_444_800_000)))
def test_the_kernel_writes_times_as_the_rows_do(ts_ms: int) -> None:
    from decisions.decision_row import iso_utc

    assert KERNEL.iso_utc(ts_ms) == iso_utc(ts_ms)


def test_the_books_counts_for_the_metrics_are_the_rows_counts(tight_engine: Engine) -> None:
    """What the decision step's metrics read of the book's suppressions (counts by reason,
    distinct transitions, ping times) is what the same decisions as rows say."""
    from decisions.decided import Rows

    lat, lng = NEAR[0]
    devices = {d: device(d, s) for d, s in zip("abc", ("reachable", "none", "opted_out"), strict=True)}
    items: list[Item] = []
    for k in range(200):
        away = 0.01 if k % 7 == 3 else 0.0
        items += [Ping(d, START_MS + k * 120_000 + i, lat + away, lng, 5.0, 0.5) for i, d in enumerate("abc")]
    tight_engine.stream_ms.clear()
    view = BookStates(PartitionStore(None), KERNEL, 10)
    seen = 0
    for i in range(0, len(items), 60):
        written, _, _ = tight_engine.decide(items[i : i + 60], view, devices)  # type: ignore[arg-type]
        rows = Rows(list(written))
        assert written.labels() == rows.labels()
        assert written.transitions() == rows.transitions()
        assert written.ts_ms(notify=False).tolist() == rows.ts_ms(notify=False).tolist()
        seen += len(written)
        view.written(view.take())
    assert seen > 100


def test_a_poll_decided_in_one_call_is_each_partition_decided_alone() -> None:
    """``PresenceBook.decide_many`` with a poll's partitions in one call (``decide_poll``)
    answers as with one partition a call (``decide``), state for state; and bounds that do
    not cover the pings are refused, naming what is wrong."""
    engine, items, devices = stream(9)
    pings = [i for i in items if isinstance(i, Ping)][:1500]
    parts = {p: [q for q in pings if sum(q.device_id.encode()) % PARTS == p] for p in range(PARTS)}
    outputs = []
    finals = []
    for together in (True, False):
        engine.stream_ms.clear()
        stores = {p: PartitionStore(None) for p in parts}
        views = {p: BookStates(s, KERNEL, 1000) for p, s in stores.items()}
        out: list[bytes] = []
        for at in range(0, 500, 100):
            poll = {p: batch[at : at + 100] for p, batch in parts.items()}
            decided = (
                engine.decide_poll(poll, views, dict.fromkeys(poll, devices))  # type: ignore[arg-type]
                if together
                else {p: engine.decide(b, views[p], devices, p) for p, b in poll.items()}  # type: ignore[arg-type]
            )
            for p, (decisions, candidates, gated) in sorted(decided.items()):
                out += [v for _, v in decisions.records()] + [c.notification.dumps() for c in candidates]
                out += [orjson.dumps([p, q.device_id, q.ts_ms, why]) for q, why in gated]
        outputs.append(out)
        finals.append({p: sorted(views[p].take(everything=True)) for p in views})
    assert len(outputs[0]) > 50 and outputs[0] == outputs[1] and finals[0] == finals[1]
    book = BookStates(PartitionStore(None), KERNEL).book
    book.configure(engine.presence_catalog(KERNEL))
    empty = np.zeros(0)
    with pytest.raises(ValueError, match="bounds, stream_ms and device do not match"):
        type(book).decide_many(
            [book], [0, 1], [], empty.astype(np.uint8), empty.astype(np.int64), empty, empty, empty, empty,
            np.zeros(1, dtype=np.int64), empty.astype(np.int64), empty.astype(bool), [0], engine.index.signed_distance_m,
            [lambda d: 0], engine.schedule_answer,
        )  # fmt: skip
