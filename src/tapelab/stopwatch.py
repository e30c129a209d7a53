"""Where a run's time goes: seconds per phase (trace, compile, steps, csv, tensorboard, ...)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Adds up the seconds spent in each named phase."""

    def __init__(self, earlier: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = dict(earlier or {})

    def add(self, phase: str, seconds: float) -> None:
        """Count `seconds` towards `phase`."""
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def measure(self, phase: str) -> Iterator[None]:
        """Count the time the `with` block takes towards `phase`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started)
