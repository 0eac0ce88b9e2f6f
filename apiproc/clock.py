"""The one source of time: real by default, replaceable in tests.

    clock = MonotonicClock()
    started = clock.now()
    await clock.sleep(0.5)

Everything that waits or measures (the limiter, retry back-off, progress) takes a
`Clock`, so its timing can be tested by advancing a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` have passed on this clock."""


class MonotonicClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    # The C function itself, not a method around it: it is asked several times per request.
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock for tests: time moves only when a sleeper asks or the test says so.

    `sleep()` advances the clock by the requested amount at once, so a coroutine
    that waits for capacity returns immediately with the clock showing the wait.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.time = start

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds

    async def sleep(self, seconds: float) -> None:
        self.time += max(0.0, seconds)
        await asyncio.sleep(0)
