"""CPU benchmark of the decision step without Kafka: the worker's per-poll work on the same bytes.

    python -m bench.decide_bench [--pings 300000] [--fences 10000] [--layout spread|dense] [--profile out.prof]
        [--synthetic-tags tokyo]

The simulator's pings (as on the ``pings`` topic) are split into 12 partitions by key and fed
in polls of ~5,000 records, as the worker gets them; for each partition: parse, decide (match,
gates, presence, campaigns), serialise decisions, candidates and changed states, and write the
states to an in-memory partition store — everything ``DecideLoop.handle`` does but the network.
Side by side in the same run: ``orjson.loads`` of every record alone (what the raw consumer
ceiling pays for decoding). The ratio between the two is what this benchmark tracks; the
end-to-end benchmark (``bench.e2e_bench``) measures the same thing with the broker in the loop.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
from aiokafka.producer.message_accumulator import BatchBuilder

from bench.e2e_bench import LAYOUTS, PINGS_PER_DEVICE, START, scaled_catalog
from decisions.ping_columns import parse_poll
from decisions.pings import PingRejected
from decisions.records import DeadLetter
from geofences.index import load_kernel
from geofences.load import load_catalog
from streams.agents.decide import engine_for
from streams.device_store import LocalStore
from streams.device_view import StoreDevices, state_view
from streams.heap import Pauses, settle_heap
from streams.outbox import candidate_bytes
from streams.phones import simulate
from streams.produce import BATCH_BYTES, encoded, encoder_for
from streams.settings import load_settings

PARTITIONS = 12
POLL = 5000

Record = tuple[bytes, bytes]  # (key, value)


def polls(records: list[Record], size: int = POLL) -> list[dict[int, list[Record]]]:
    """The records as a worker polls them: up to ``size`` at a time, grouped by partition."""
    out = []
    for start in range(0, len(records), size):
        by_part: dict[int, list[Record]] = {}
        for key, value in records[start : start + size]:
            by_part.setdefault(zlib.crc32(key) % PARTITIONS, []).append((key, value))
        out.append(by_part)
    return out


def decode_only(batches: list[dict[int, list[Record]]]) -> int:
    n = 0
    for by_part in batches:
        for msgs in by_part.values():
            for _, value in msgs:
                orjson.loads(value)
            n += len(msgs)
    return n


PHASES = ("parse", "decide", "visiting", "outputs", "take", "changelog", "store")


def _produced(records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Records made into produce batches as the worker makes them (``streams.produce``:
    the kernel's where built, else aiokafka's builder), without a broker: the batches' bytes."""
    kernel = encoder_for(None)
    if kernel is not None:
        return sum(len(batch._build()) for batch in encoded(kernel, records, BATCH_BYTES))
    size = 0
    batch = BatchBuilder(BATCH_BYTES, 0)
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            size += len(batch._build())
            batch = BatchBuilder(BATCH_BYTES, 0)
            batch.append(key=key, value=value, timestamp=None)
    if batch.record_count():
        size += len(batch._build())
    return size


def decide_all(
    batches: list[dict[int, list[Record]]], fences_dir: Path, devices: list[bytes], book: bool = True,
    store_dir: Path | None = None, phases: dict[str, float] | None = None, take_every: int = 1, refresh_ms: int = 0,
) -> Callable[[], int]:  # fmt: skip
    """A closure running the decision step over every poll (fresh state each call); ``book``:
    device states in the kernel's presence book, as the worker keeps them where it is built
    (else Python objects, the Python engine); ``store_dir``: local stores in RocksDB there (else
    in memory); ``phases``: seconds spent in each of PHASES, added up over the runs."""
    runs = itertools.count()
    phases = phases if phases is not None else dict.fromkeys(PHASES, 0.0)
    catalog = load_catalog([fences_dir])
    settings = load_settings(None, catalog_path=fences_dir)
    engine = engine_for(catalog, settings)

    def run() -> int:
        engine.stream_ms.clear()
        local = LocalStore(store_dir / f"run-{next(runs)}" if store_dir else None)
        stores = {p: local.partition(p) for p in range(PARTITIONS)}
        keep = settings.state_cache_devices // PARTITIONS
        kernel = load_kernel() if book else None
        views = {p: state_view(stores[p], kernel, keep, refresh_ms) for p in stores}
        for raw in devices:
            key = orjson.loads(raw)["device_id"].encode()
            stores[zlib.crc32(key) % PARTITIONS].write_devices([(key.decode(), raw)], 0)
        books = {p: StoreDevices(stores[p]) for p in stores}
        watched: dict[int, set[str]] = {p: set() for p in stores}  # the worker's open_visits
        out = 0
        clock = time.perf_counter
        for i, by_part in enumerate(batches):
            t0 = clock()
            parsed = {}
            polled = parse_poll([([v for _, v in msgs], [k for k, _ in msgs]) for msgs in by_part.values()])
            for (p, msgs), (columns, rejected) in zip(by_part.items(), polled, strict=True):
                parsed[p] = columns
                for j, exc in rejected:  # not `i`: the poll's number decides when to take
                    _letter(msgs[j], exc)
            t1 = clock()
            decided = engine.decide_poll(parsed, views, books)
            t2 = clock()
            for p in decided:  # the changes to the worker's watch on silent devices, as it asks
                for d, inside in views[p].visiting():
                    (watched[p].add if inside else watched[p].discard)(d)
            t2v = clock()
            taken = {}
            for found, candidates, _ in decided.values():
                out += _produced(found.records()) + _produced((b"", candidate_bytes(c)) for c in candidates)
            t3 = clock()
            if (i + 1) % take_every == 0 or i == len(batches) - 1:
                for p in views:
                    taken[p] = views[p].take()
            t4 = clock()
            for changes in taken.values():
                out += _produced((k.encode(), v) for k, v in changes)
            t5 = clock()
            for p, changes in taken.items():
                stores[p].write_states(changes, None)
                views[p].written(changes)
            t6 = clock()
            spans = (t1 - t0, t2 - t1, t2v - t2, t3 - t2v, t4 - t3, t5 - t4, t6 - t5)
            for name, spent in zip(PHASES, spans, strict=True):
                phases[name] += spent
        local.close()
        return out

    return run


def _letter(record: Record, exc: PingRejected) -> bytes:
    return DeadLetter.of(record[1], record[0], exc.reason, exc.detail, "pings", 0, 0, START).dumps()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pings", type=int, default=300_000)
    ap.add_argument("--fences", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, the best is reported")
    ap.add_argument("--profile", type=Path, help="write a cProfile of the decision step here")
    ap.add_argument("--no-settle", action="store_true", help="leave the garbage collector as CPython sets it")
    ap.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="spread",
        help="of the synthetic stores past 10k (see bench.e2e_bench.store_box)",
    )
    ap.add_argument(
        "--store",
        choices=("rocksdb", "memory"),
        default="rocksdb",
        help="where the partitions' states are written (the worker's default: rocksdb)",
    )
    ap.add_argument("--poll", type=int, default=POLL,
                    help="records a poll: ~5,000 under full load; a few hundred at a third of it (per-poll costs)")  # fmt: skip
    ap.add_argument("--take-every", type=int, default=1,
                    help="polls decided between two checkpoints (states taken, logged and stored once for them)")  # fmt: skip
    ap.add_argument("--bad-every", type=int, default=0,
                    help="every this many records an unusable one (a dead letter), as the e2e latency load's probes")  # fmt: skip
    ap.add_argument("--state-refresh-s", type=float, default=0.0,
                    help="the worker's state_refresh_s: states changed only in position and times held back "
                         "this long (0: every changed state written)")  # fmt: skip
    ap.add_argument("--book-only", action="store_true", help="skip the Python engine run beside the presence book")
    ap.add_argument("--synthetic-tags", default="cafe,tokyo",
                    help="tags of the synthetic stores; 'tokyo' leaves them out of every campaign, to measure "
                         "the campaign work apart")  # fmt: skip
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fences_dir = scaled_catalog(
            args.fences, Path(tmp) / "catalog", tags=args.synthetic_tags.split(","), layout=args.layout
        )
        catalog = load_catalog([fences_dir])
        devices, pings = simulate(catalog, max(1, args.pings // PINGS_PER_DEVICE), int(START.timestamp() * 1000), 4)
        records = [(p.device_id.encode(), orjson.dumps(p.body)) for p in pings[: args.pings]]
        if args.bad_every:  # as the e2e latency load's probes: no ts, no position (a dead letter each)
            for i in range(0, len(records), args.bad_every):
                key = records[i][0]
                records[i] = (key, orjson.dumps({"device_id": key.decode(), "sent_ms": 1795395600123.4}))
        batches = polls(records, args.poll)
        raw_devices = [d.dumps() for d in devices]
        store_dir = Path(tmp) / "stores" if args.store == "rocksdb" else None
        phases = {name: dict.fromkeys(PHASES, 0.0) for name in ("book", "python")}
        refresh_ms = int(args.state_refresh_s * 1000)
        runs = {
            "book": decide_all(
                batches, fences_dir, raw_devices, True, store_dir, phases["book"], args.take_every, refresh_ms
            )
        }
        if load_kernel() is not None and not args.book_only:
            runs["python"] = decide_all(
                batches, fences_dir, raw_devices, False, store_dir, phases["python"], args.take_every, refresh_ms
            )
        if not args.no_settle:
            settle_heap()  # as the worker does once its catalog is built
        decode_s = float("inf")
        best = dict.fromkeys(runs, float("inf"))
        gc_pauses = dict.fromkeys(runs, "")
        for _ in range(args.repeat):  # alternate, keep the best of each: the machine is shared
            t = time.perf_counter()
            n = decode_only(batches)
            decode_s = min(decode_s, time.perf_counter() - t)
            for name, run in runs.items():
                with Pauses() as pauses:
                    t = time.perf_counter()
                    run()
                    took = time.perf_counter() - t
                if took < best[name]:
                    best[name], gc_pauses[name] = took, pauses.summary()
        if args.profile:
            cProfile.runctx("run()", globals(), {"run": runs["book"]}, str(args.profile))
    print(
        f"{n:,} pings in polls of {args.poll:,}, {args.fences:,} fences ({args.layout}, synthetic stores tagged {args.synthetic_tags}), "
        f"states in {args.store}: "
        f"decode only {n / decode_s:,.0f}/s (best of {args.repeat})"
    )
    for name, took in best.items():
        label = "presence book" if name == "book" and load_kernel() is not None else "Python engine"
        print(
            f"  decision step, {label}: {n / took:,.0f}/s ({took / n * 1e6:.1f} µs/ping), "
            f"ratio {decode_s / took:.3f}; GC pauses in that run: {gc_pauses[name]}"
        )
        print("    µs/ping by phase (mean of the runs): " + ", ".join(
            f"{phase} {spent / args.repeat / n * 1e6:.2f}" for phase, spent in phases[name].items()
        ))  # fmt: skip


if __name__ == "__main__":
    main()
