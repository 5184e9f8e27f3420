"""``geopush replay``: the stream's decision code over files, the clock driven by the pings.

Marketers ask "what would this campaign have sent last week?": give it the catalog, the
devices (JSON lines of device records) and the pings (JSON lines as on the ``pings`` topic);
it writes one decision per line and returns a per-campaign summary.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from decisions.decision_row import DecisionRow
from decisions.engine import Engine, apply_budget
from decisions.pings import Ping, PingRejected, parse_ping
from decisions.records import Device
from decisions.state import DeviceState

BATCH = 20_000


class DictStates(dict[str, DeviceState]):
    def put(self, device_id: str, state: DeviceState) -> None:
        self[device_id] = state


@dataclass
class Summary:
    pings: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    gated: Counter[str] = field(default_factory=Counter)
    notified: Counter[str] = field(default_factory=Counter)
    suppressed: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, d: DecisionRow) -> None:
        key = d.campaign_id or "-"
        if d.outcome == "notify":
            self.notified[key] += 1
        else:
            self.suppressed[key][d.reason] += 1

    def lines(self) -> list[str]:
        out = [f"pings: {self.pings}  rejected: {sum(self.rejected.values())} {dict(self.rejected) or ''}"]
        out.append(f"gated: {dict(self.gated)}")
        for c in sorted(set(self.notified) | set(self.suppressed)):
            why = ", ".join(f"{r} {n}" for r, n in self.suppressed[c].most_common())
            out.append(
                f"{c:<24} notified {self.notified[c]:>7}   suppressed {sum(self.suppressed[c].values()):>7}  {why}"
            )
        return out


def read_devices(path: Path) -> dict[str, Device]:
    devices: dict[str, Device] = {}
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    d = Device.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: not a device record: {exc}") from None
                devices[d.device_id] = d
    return devices


def batches(lines: Iterable[bytes], summary: Summary) -> Iterator[list[Ping]]:
    batch: list[Ping] = []
    for line in lines:
        if not line.strip():
            continue
        summary.pings += 1
        try:
            batch.append(parse_ping(line.rstrip(b"\n")))
        except PingRejected as exc:
            summary.rejected[exc.reason] += 1
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def replay(
    engine: Engine,
    devices: dict[str, Device],
    pings: Iterable[bytes],
    out: IO[bytes] | None,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Run the engine over ping lines; write decisions (JSON lines) to ``out``."""
    summary = Summary()
    states = DictStates()
    used: Counter[str] = Counter()
    for batch in batches(pings, summary):
        decisions, candidates, gated = engine.decide(batch, states, devices)
        summary.gated.update(gated.by_reason())
        finals = list(decisions)
        for cand in candidates:
            d, spend = apply_budget(cand.decision, cand.budget, used[cand.decision.campaign_id or ""])
            if spend:
                used[cand.decision.campaign_id or ""] += 1
            finals.append(d)
        finals.sort(key=lambda d: (d.ts_ms, d.device_id))
        for d in finals:
            summary.add(d)
            if out is not None:
                out.write(d.dumps() + b"\n")
        if progress:
            progress(len(batch))
    return summary
