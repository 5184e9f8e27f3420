"""Which partitions a checkpoint takes when: each once a commit interval, in turns spread
evenly over it, so a second's state changes are not taken, logged and stored in one burst
that the polls meanwhile wait behind (bench/results/e2e.md, twenty-sixth session)."""

from __future__ import annotations

from collections.abc import Sequence


class Rotation:
    """Partitions in turns: with n assigned, one comes due every ``interval / n`` seconds."""

    def __init__(self) -> None:
        self.parts: list[int] = []
        self.cursor = 0  # the next partition's place in ``parts``
        self.last_at = 0.0  # when the last turn was due

    def due(self, parts: Sequence[int], now: float, interval_s: float) -> list[int]:
        """The partitions whose turn came by ``now``, in order. A new assignment starts the
        rotation over (its first turn a step from now); a caller that fell a whole interval
        behind gets every partition once and the schedule restarts from ``now``, rather than
        catching up in a burst."""
        if list(parts) != self.parts:
            self.parts, self.cursor, self.last_at = list(parts), 0, now
            return []
        n = len(self.parts)
        if n == 0:
            return []
        step = interval_s / n
        turns = min(n, int((now - self.last_at) / step))
        if turns == 0:
            return []
        out = [self.parts[(self.cursor + i) % n] for i in range(turns)]
        self.cursor = (self.cursor + turns) % n
        self.last_at = now if turns == n else self.last_at + turns * step
        return out
