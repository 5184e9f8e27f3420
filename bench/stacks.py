"""The functions most often on the stack in py-spy's raw output (``py-spy record -f raw``, as
``e2e_bench --latency-profile`` writes): each one's share of the samples, with its callees
(inclusive) and alone (self), so a live worker's profile reads without a flame-graph viewer.

    python -m bench.stacks /tmp/prof/lat-0-worker.txt --top 40
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def shares(lines: list[str]) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, inclusive count per frame, self count per frame) of raw stack lines
    (``frame;frame;...;leaf count``); a frame counted once per sample however deep it recurs."""
    total, inclusive, alone = 0, Counter[str](), Counter[str]()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        alone[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return total, inclusive, alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw", type=Path, help="py-spy's raw output")
    ap.add_argument("--top", type=int, default=40, help="frames listed in each table")
    args = ap.parse_args()
    total, inclusive, alone = shares(args.raw.read_text().splitlines())
    if not total:
        raise SystemExit(f"{args.raw}: no samples (not py-spy raw output, or the process was idle)")
    print(f"{total:,} samples")
    for title, counts in (("inclusive", inclusive), ("self", alone)):
        print(f"--- {title}")
        for frame, n in counts.most_common(args.top):
            print(f"{100 * n / total:5.1f} %  {frame[:160]}")


if __name__ == "__main__":
    main()
