"""Polite calls to a batch service: paced, retried when that is safe, and polled with back-off.

    calls = BatchCalls(api, Pacer(per_minute=50, clock=clock), clock)
    info = await calls.retrieve(batch_id)        # retried on 429/5xx, honouring retry-after
    delay = PollSchedule(interval=30).next(changed=False)   # 45 s: nothing changed

The batch endpoints have their own rate limit, in requests per minute over all of them
(reference §B.6), so every call waits for its turn on one `Pacer`, and a 429's
`retry-after` pauses the pacer for everyone. Reads (retrieve, list, results, cancel) are
idempotent and retried with back-off; create is never retried here, because a create that
failed without an answer may have made a batch all the same (the runner finds out first).
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from apiproc.clock import Clock
from apiproc.providers.base import Verdict
from apiproc.providers.batches import BatchApi, BatchApiError, BatchInfo, BatchItem, BatchPage
from apiproc.retry import backoff_delay

T = TypeVar("T")

READ_ATTEMPTS = 8
BACKOFF_FACTOR = 1.5
# Without an explicit cap, polling slows to at most ten intervals, and never past 10 minutes
# unless the interval itself is longer.
LONGEST_DEFAULT_POLL = 600.0


class Pacer:
    """Spaces calls evenly at `per_minute`; a pause holds every later call back."""

    def __init__(self, per_minute: float, clock: Clock) -> None:
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.clock = clock
        self._next = -math.inf

    async def wait(self) -> None:
        now = self.clock.now()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await self.clock.sleep(slot - now)

    def pause(self, seconds: float) -> None:
        """The server asked for a break (retry-after): no call before it is over."""
        self._next = max(self._next, self.clock.now() + seconds)


class PollSchedule:
    """Seconds until the next poll: `interval` after a change, growing by half each time
    nothing changed, up to `longest`."""

    def __init__(self, interval: float, longest: float | None = None) -> None:
        self.interval = interval
        default = max(interval, min(10 * interval, LONGEST_DEFAULT_POLL))
        self.longest = max(interval, longest if longest is not None else default)
        self.current = interval

    def next(self, changed: bool) -> float:
        if changed:
            self.current = self.interval
        else:
            self.current = min(self.longest, self.current * BACKOFF_FACTOR)
        return self.current


class BatchCalls:
    """The batch service behind one pacer, with retries for the calls that allow them."""

    def __init__(
        self,
        api: BatchApi,
        pacer: Pacer,
        clock: Clock,
        rng: random.Random | None = None,
        base_delay: float = 1.0,
    ) -> None:
        self.api = api
        self.pacer = pacer
        self.clock = clock
        self.rng = rng or random.Random()
        self.base_delay = base_delay
        self.calls = 0
        self.rate_limited = 0

    async def create(self, entries: AsyncIterable[bytes], size: int, tag: str) -> BatchInfo:
        await self._turn()
        try:
            return await self.api.create(entries, size, tag)
        except BatchApiError as error:
            self._note(error)
            raise

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return await self._read(lambda: self.api.retrieve(batch_id))

    async def list_page(self, cursor: str | None, limit: int) -> BatchPage:
        return await self._read(lambda: self.api.list_page(cursor, limit))

    async def cancel(self, batch_id: str) -> BatchInfo:
        return await self._read(lambda: self.api.cancel(batch_id))

    async def results(self, info: BatchInfo) -> AsyncIterator[BatchItem]:
        """The results, streamed; a failure before the first line is retried, a failure
        after it is raised (the caller writes what it got and starts over later)."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            await self._turn()
            started = False
            try:
                async for item in self.api.results(info):
                    started = True
                    yield item
                return
            except BatchApiError as error:
                self._note(error)
                if started or not self._worth_again(error, attempt):
                    raise
                await self._back_off(error, attempt)

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, READ_ATTEMPTS + 1):
            await self._turn()
            try:
                return await call()
            except BatchApiError as error:
                self._note(error)
                if not self._worth_again(error, attempt):
                    raise
                await self._back_off(error, attempt)
        raise AssertionError("unreachable: the last attempt raises")

    async def _turn(self) -> None:
        await self.pacer.wait()
        self.calls += 1

    def _note(self, error: BatchApiError) -> None:
        if error.status == 429:
            self.rate_limited += 1
        if error.retry_after:
            self.pacer.pause(error.retry_after)

    def _worth_again(self, error: BatchApiError, attempt: int) -> bool:
        return error.verdict is Verdict.RETRY and attempt < READ_ATTEMPTS

    async def _back_off(self, error: BatchApiError, attempt: int) -> None:
        if error.retry_after:
            return  # the pacer already holds the next call back
        await self.clock.sleep(backoff_delay(attempt, None, self.rng, base=self.base_delay))
