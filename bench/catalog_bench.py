"""Start-up benchmark: what a worker pays to read a catalog and get ready to decide, phase by phase.

    python -m bench.catalog_bench [--fences 100000] [--repeat 2] [--out bench/results/catalog.md]

The e2e benchmark's scaled catalog (the example plus synthetic cafés over greater Tokyo). Phases,
as a worker runs them at start and at every catalog reload (collections paused while it
builds, as the worker does; beside it the same with the collector running): YAML (the fast pass over libyaml's
events, and beside it in the same run the positioned parser it replaced, for the ratio),
validation and shapes (the rest of ``load_catalog``), the engine (fence index, campaign tables),
the presence book's catalog, and settling the heap. Best of ``--repeat`` per phase.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.e2e_bench import scaled_catalog
from geofences import yaml_source
from geofences.index import load_kernel
from geofences.load import catalog_files, load_catalog
from streams.agents.decide import engine_for
from streams.heap import collections_paused, settle_heap
from streams.settings import load_settings


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """(best seconds of ``repeat`` calls, the last result)."""
    times, out = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - began)
    return min(times), out


def run(fences: int, repeat: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="geopush-catalog-") as tmp:
        folder = scaled_catalog(fences, Path(tmp) / "catalog")
        texts = [(str(f), f.read_text(encoding="utf-8")) for f in catalog_files([folder])]
        size = sum(len(t) for _, t in texts)
        fast, _ = best(lambda: [yaml_source._fast_data(t) for _, t in texts], repeat)
        positioned, _ = best(lambda: [yaml_source._positioned(t, f) for f, t in texts], repeat)
        settings = load_settings(None, catalog_path=folder)
        load_gc, catalog = best(lambda: load_catalog([folder]), repeat)
        engine_gc = best(lambda: engine_for(catalog, settings), repeat)[0]
        with collections_paused():  # as the worker builds them
            load, catalog = best(lambda: load_catalog([folder]), repeat)
            engine_s, engine = best(lambda: engine_for(catalog, settings), repeat)
        kernel = load_kernel()
        book_s = best(lambda: kernel.PresenceCatalog(*engine.book_config), repeat)[0] if kernel else float("nan")
        settle = settle_heap()
    total = load + engine_s + book_s + settle
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return [
        f"## {fences:,} fences — {datetime.now(UTC):%Y-%m-%d} ({machine})",
        "",
        f"Command: `python -m bench.catalog_bench --fences {fences} --repeat {repeat}` (best of {repeat}). "
        f"YAML: {size / 1e6:.1f} MB in {len(texts)} files.",
        "",
        "| phase | seconds |",
        "|---|---:|",
        f"| YAML, fast pass (data only) | {fast:.2f} |",
        f"| YAML, positioned parser (what the fast pass replaced; now only for problems) | {positioned:.2f} |",
        f"| `load_catalog` in all (YAML, validation, shapes, cross-checks) | {load:.2f} |",
        f"| the engine (`engine_for`: fence index, campaign tables) | {engine_s:.2f} |",
        f"| (the same two with the collector running, as before `collections_paused`) | {load_gc:.2f} + {engine_gc:.2f} |",
        f"| the presence book's catalog | {book_s:.2f} |",
        f"| settling the heap (one full collection, then freeze) | {settle:.2f} |",
        f"| **ready to decide** | **{total:.2f}** |",
        "",
        f"Positioned / fast YAML: **{positioned / fast:.1f}×**.",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fences", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="prepend the results to this markdown file")
    args = ap.parse_args()
    rows = run(args.fences, args.repeat)
    print("\n".join(rows))
    if args.out is not None:
        old = args.out.read_text() if args.out.exists() else "# Catalog start-up benchmark\n\n"
        head, _, rest = old.partition("\n\n")
        args.out.write_text(head + "\n\n" + "\n".join(rows) + "\n" + rest)


if __name__ == "__main__":
    main()
