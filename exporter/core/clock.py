"""The wall and monotonic clocks, injectable so tests never depend on real time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the exporter needs to know about time."""

    def time(self) -> float:
        """Return seconds since the epoch (wall clock)."""
        ...

    def monotonic(self) -> float:
        """Return a monotonic reading for measuring durations."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """Return the wall-clock time."""
        return time.time()

    def monotonic(self) -> float:
        """Return the monotonic time."""
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.mono = 0.0

    def time(self) -> float:
        """Return the fake wall-clock time."""
        return self.now

    def monotonic(self) -> float:
        """Return the fake monotonic time."""
        return self.mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self.now += seconds
        self.mono += seconds
