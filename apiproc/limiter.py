"""Multi-bucket rate limiter: reserve at admission, settle to real usage, obey the server.

    limiter = RateLimiter(Limits(requests_per_minute=3_000, input_tokens_per_minute=2_000_000))
    reservation = await limiter.acquire(Cost(requests=1, input_tokens=900, output_tokens=200))
    limiter.settle(reservation, Cost(requests=1, input_tokens=870, output_tokens=143))

A streamed answer reports its usage as it goes: `progress()` charges what it uses beyond
its reservation at once, and `settle()` squares the rest at the end.

One token bucket per limited dimension (requests, input tokens, output tokens and the
classic combined tokens), each holding one minute of its rate and refilled
continuously, as the API's own buckets are. A request is admitted when every bucket it
needs has room; callers are served strictly in arrival order, so a large request is
never starved by a stream of small ones. A request bigger than a whole bucket raises
`RequestTooLarge` instead of waiting forever.

The server stays the ground truth:
- `observe()` takes the rate-limit figures the server reports with every response and
  never lets a bucket hold more than the server says remains (nor a limit above the
  server's); limits it reports that were not given are added as buckets.
- `rate_limited()` takes a 429: it pauses every admission until `retry-after`.
- The burst is ramped. The API's bucket starts full, but it may also enforce over
  shorter intervals and punish sharp ramps, so each bucket may only be drawn down to
  a fraction of its capacity (`burst`). The fraction starts at one second of the rate
  (but at least a few requests), grows by a few per cent (at least the confirmed
  request's own share) each round trip while responses confirm room, and is cut
  when a 429 arrives although the headers showed room; after such a cut it grows only
  slowly, up to a ceiling that recovers over minutes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from apiproc.clock import Clock, MonotonicClock
from apiproc.providers.base import ServerLimit

DIMENSIONS = ("requests", "input_tokens", "output_tokens", "tokens")

# Burst ramp, as fractions of a bucket's capacity (one minute of its rate).
INITIAL_BURST = 1 / 60
MIN_BURST = 1 / 120
# For small request limits the burst is counted in whole requests: a handful at once is
# no sharp ramp, and each confirmed round trip may add at least one more.
INITIAL_BURST_REQUESTS = 8
SLOW_START_GROWTH = 1.05
CAUTIOUS_GROWTH = 1.01
NARROWING = 0.85
CEILING_RECOVERY_SECONDS = 60.0
CEILING_RECOVERY = 1.1
# Responses without rate-limit headers before falling back to FALLBACK_LIMITS.
DISCOVERY_ATTEMPTS = 3
FALLBACK_LIMITS: Mapping[str, float] = {"requests": 50.0}
EPSILON = 1e-9

log = logging.getLogger("apiproc")


class RequestTooLarge(ValueError):
    """A single request needs more than a bucket can ever hold."""

    def __init__(self, dimension: str, needed: float, limit: float) -> None:
        self.dimension = dimension
        self.needed = needed
        self.limit = limit
        super().__init__(
            f"needs {needed:,.0f} {dimension.replace('_', ' ')} but the limit is "
            f"{limit:,.0f} per minute, so it can never be admitted"
        )


@dataclass(slots=True, frozen=True)
class Cost:
    """What one attempt takes from the buckets."""

    requests: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0

    def of(self, dimension: str) -> float:
        if dimension == "tokens":
            return self.input_tokens + self.output_tokens
        if dimension == "requests":
            return self.requests
        if dimension == "input_tokens":
            return self.input_tokens
        return self.output_tokens


NOTHING = Cost()


@dataclass(slots=True, frozen=True)
class Limits:
    """Per-minute limits; None means not set (learned from the server if it tells)."""

    requests_per_minute: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def by_dimension(self) -> dict[str, float]:
        values = {
            "requests": self.requests_per_minute,
            "input_tokens": self.input_tokens_per_minute,
            "output_tokens": self.output_tokens_per_minute,
            "tokens": self.tokens_per_minute,
        }
        return {name: value for name, value in values.items() if value is not None}


@dataclass(slots=True, frozen=True)
class AttemptReport:
    """What one admitted attempt came back with, handed to `RateLimiter.finish`."""

    used: Cost | None  # what the server counted; None: unknown, so the reservation stays
    server: Mapping[str, ServerLimit] = field(default_factory=lambda: MappingProxyType({}))
    rate_limited: bool = False  # a 429 from pacing: it consumed nothing
    retry_after: float | None = None
    succeeded: bool = False


@dataclass(slots=True)
class Bucket:
    dimension: str
    limit: float
    level: float
    stamp: float

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self, now: float, capacity: float) -> None:
        elapsed = now - self.stamp
        if elapsed <= 0:
            return
        self.stamp = now
        if self.level < capacity:
            self.level = min(capacity, self.level + elapsed * self.limit / 60.0)


@dataclass(slots=True)
class Reservation:
    """What an admitted attempt holds until it is settled."""

    seq: int
    cost: Cost
    settled: bool = False


@dataclass(slots=True)
class LimiterStats:
    narrowings: int = 0


@dataclass(slots=True)
class _Ramp:
    burst: float = INITIAL_BURST
    ceiling: float = 1.0
    cautious: bool = False
    binding: bool = False
    widen_seq: int = 0
    narrow_seq: int = 0
    narrowed_at: float = 0.0


@dataclass(slots=True)
class RateLimiter:
    limits: Limits = field(default_factory=Limits)
    clock: Clock = field(default_factory=MonotonicClock)
    ramp: bool = True
    discover: bool = False
    stats: LimiterStats = field(default_factory=LimiterStats, init=False)
    _buckets: dict[str, Bucket] = field(default_factory=dict, init=False)
    _ramp: _Ramp = field(default_factory=_Ramp, init=False)
    _seq: int = field(default=0, init=False)
    _paused_until: float = field(default=0.0, init=False)
    _server: dict[str, ServerLimit] = field(default_factory=dict, init=False)
    _lock: asyncio.Lock | None = field(default=None, init=False)
    _waiting: int = field(default=0, init=False)  # acquire() calls queued on the lock
    _wake: asyncio.Future[None] | None = field(default=None, init=False)
    _discovery: asyncio.Future[None] | None = field(default=None, init=False)
    _discovery_misses: int = field(default=0, init=False)
    _probe_out: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        now = self.clock.now()
        if not self.ramp:
            self._ramp.burst = 1.0
        for dimension, limit in self.limits.by_dimension().items():
            if limit <= 0:
                raise ValueError(f"the {dimension.replace('_', ' ')} limit must be positive")
            self._add_bucket(dimension, limit, now)
        self.discover = self.discover and "requests" not in self._buckets

    # ---- admission -------------------------------------------------------------------

    def check(self, cost: Cost) -> None:
        """Raise RequestTooLarge if `cost` could never fit."""
        for bucket in self._buckets.values():
            needed = cost.of(bucket.dimension)
            if needed > bucket.limit:
                raise RequestTooLarge(bucket.dimension, needed, bucket.limit)

    def wait_time(self, cost: Cost, now: float) -> float:
        """Seconds until `cost` can be admitted, 0 if now (ignoring other waiters)."""
        delay = self._paused_until - now
        burst = self._ramp.burst
        for bucket in self._buckets.values():
            needed = cost.of(bucket.dimension)
            if needed <= 0:
                continue
            capacity = burst * bucket.limit
            bucket.refill(now, capacity)
            if bucket.level + EPSILON >= needed:
                continue
            # Larger than the current burst but within the limit: admit it alone on a full bucket.
            target = min(needed, capacity)
            if bucket.level + EPSILON >= target:
                continue
            delay = max(delay, (target - bucket.level) / bucket.rate)
        return max(0.0, delay)

    def take(self, cost: Cost) -> Reservation:
        """Admit `cost` now; the caller has checked `wait_time() == 0`."""
        self._seq += 1
        for bucket in self._buckets.values():
            bucket.level -= cost.of(bucket.dimension)
        return Reservation(seq=self._seq, cost=cost)

    async def acquire(self, cost: Cost) -> Reservation:
        """Wait, in arrival order, until every bucket has room for `cost`; then reserve it."""
        self.check(cost)
        if not self._waiting and not self.discover and self.wait_time(cost, self.clock.now()) <= 0:
            return self.take(cost)  # nobody ahead and room now: what the queue would give
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._waiting += 1
        try:
            async with self._lock:
                await self._await_discovery()
                self.check(cost)  # the limits the server just told may be too small for it
                while True:
                    now = self.clock.now()
                    delay = self.wait_time(cost, now)
                    if delay <= 0:
                        break
                    self._ramp.binding = True
                    await self._sleep_or_wake(delay)
                    self.check(cost)  # the server may have lowered a limit meanwhile
                if self.discover:
                    self._probe_out = True
                return self.take(cost)
        finally:
            self._waiting -= 1

    async def _sleep_or_wake(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        wake = loop.create_future()
        self._wake = wake
        sleeper = loop.create_task(self.clock.sleep(delay))
        sleeper.add_done_callback(lambda _: wake.done() or wake.set_result(None))
        try:
            await wake
        finally:
            self._wake = None
            sleeper.cancel()

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # ---- settlement and the server's word ---------------------------------------------

    def finish(self, reservation: Reservation, report: AttemptReport) -> None:
        """Everything one attempt tells the limiter, in the one right order: settle the
        reservation to what was used, then clamp to the server's figures (so a refund never
        lifts a bucket above what the server says remains), then pause or widen."""
        self.settle(reservation, reservation.cost if report.used is None else report.used)
        self.observe(report.server)
        if report.rate_limited:
            self.rate_limited(reservation, report.retry_after, report.server)
        elif report.succeeded:
            self.confirm(reservation)

    def progress(self, reservation: Reservation, used_so_far: Cost) -> None:
        """A streamed answer reported its usage so far: charge what goes beyond the
        reservation now; anything reserved but unused is returned only when it settles."""
        if reservation.settled:
            return
        held = reservation.cost
        grown = Cost(
            requests=max(held.requests, used_so_far.requests),
            input_tokens=max(held.input_tokens, used_so_far.input_tokens),
            output_tokens=max(held.output_tokens, used_so_far.output_tokens),
        )
        if grown == held:
            return
        for bucket in self._buckets.values():
            bucket.level -= grown.of(bucket.dimension) - held.of(bucket.dimension)
        reservation.cost = grown  # settle() then works from what is now held

    def settle(self, reservation: Reservation, actual: Cost) -> None:
        """Return what was reserved but not used; charge what was used beyond it."""
        if reservation.settled:
            return
        reservation.settled = True
        burst = self._ramp.burst
        for bucket in self._buckets.values():
            delta = reservation.cost.of(bucket.dimension) - actual.of(bucket.dimension)
            if delta > 0:
                bucket.level = min(bucket.level + delta, max(bucket.level, burst * bucket.limit))
            else:
                bucket.level += delta
        self._poke()

    def observe(self, server: Mapping[str, ServerLimit]) -> None:
        """Align with the server's rate-limit headers: never more room than it reports.

        Call it after every attempt, with an empty mapping when the answer carried no
        headers (or there was no answer): that is how limit discovery learns to give up.
        """
        now = self.clock.now()
        # A combined tokens figure beside separate input and output limits is their sum,
        # not a limit of its own; alone, it is the one token budget.
        separate = "input_tokens" in server or "output_tokens" in server
        for dimension, figures in server.items():
            self._server[dimension] = figures
            bucket = self._buckets.get(dimension)
            if bucket is None:
                if figures.limit and (dimension != "tokens" or not separate):
                    self._add_bucket(dimension, figures.limit, now, figures.remaining)
                continue
            bucket.refill(now, self._ramp.burst * bucket.limit)
            if figures.limit is not None and 0 < figures.limit < bucket.limit:
                bucket.limit = figures.limit
            if figures.remaining is not None:
                bucket.level = min(bucket.level, figures.remaining)
        self._discovery_step(told=bool(server))
        self._poke()

    def confirm(self, reservation: Reservation) -> None:
        """A request admitted under the current burst succeeded: maybe widen the burst."""
        ramp = self._ramp
        now = self.clock.now()
        if (
            ramp.cautious
            and ramp.ceiling < 1.0
            and now - ramp.narrowed_at >= CEILING_RECOVERY_SECONDS
        ):
            ramp.ceiling = min(1.0, ramp.ceiling * CEILING_RECOVERY)
            ramp.narrowed_at = now
        if reservation.seq <= ramp.widen_seq or not ramp.binding or ramp.burst >= ramp.ceiling:
            return
        growth = CAUTIOUS_GROWTH if ramp.cautious else SLOW_START_GROWTH
        # At least the confirmed request's own share of every bucket: large requests would
        # otherwise need many round trips to fit even a few of them in the burst.
        step = max(ramp.burst * (growth - 1.0), self._share(reservation.cost))
        # Widen only by what the server confirms it still has beyond our own view.
        step = min(step, ramp.ceiling - ramp.burst, self._server_room(now))
        if step <= 0:
            return
        wider = ramp.burst + step
        for bucket in self._buckets.values():
            bucket.refill(now, ramp.burst * bucket.limit)
            bucket.level += (wider - ramp.burst) * bucket.limit
        ramp.burst = wider
        ramp.widen_seq = self._seq
        ramp.binding = False
        self._poke()

    def rate_limited(
        self,
        reservation: Reservation,
        retry_after: float | None,
        server: Mapping[str, ServerLimit],
    ) -> None:
        """A 429 came back: empty the buckets, pause until retry-after, maybe narrow the burst.

        `server` is the 429's own headers, already passed to `observe()` by the caller.
        """
        now = self.clock.now()
        for bucket in self._buckets.values():
            bucket.refill(now, self._ramp.burst * bucket.limit)
            bucket.level = min(bucket.level, 0.0)
        if retry_after is not None and retry_after > 0:
            self.pause_until(now + retry_after)
        if self._showed_room(reservation.cost, server):
            self._narrow(reservation, now)

    def pause_until(self, when: float) -> None:
        self._paused_until = max(self._paused_until, when)

    # ---- views -------------------------------------------------------------------------

    def limit(self, dimension: str) -> float | None:
        bucket = self._buckets.get(dimension)
        return bucket.limit if bucket else None

    @property
    def burst(self) -> float:
        return self._ramp.burst

    # ---- internals ---------------------------------------------------------------------

    def _share(self, cost: Cost) -> float:
        """The largest fraction of a bucket's capacity that `cost` takes."""
        return max(
            (cost.of(bucket.dimension) / bucket.limit for bucket in self._buckets.values()),
            default=0.0,
        )

    def _add_bucket(
        self, dimension: str, limit: float, now: float, remaining: float | None = None
    ) -> None:
        if dimension == "requests" and self.ramp and self._seq <= 1:
            self._ramp.burst = max(self._ramp.burst, min(1.0, INITIAL_BURST_REQUESTS / limit))
        level = self._ramp.burst * limit
        if remaining is not None:
            level = min(level, remaining)
        self._buckets[dimension] = Bucket(dimension, float(limit), level, now)

    def _server_room(self, now: float) -> float:
        """Room the latest headers show beyond what our buckets hold, as a fraction of
        capacity (the smallest over the dimensions the server reports)."""
        room = 1.0
        for dimension, bucket in self._buckets.items():
            figures = self._server.get(dimension)
            if figures is None or figures.remaining is None:
                continue
            bucket.refill(now, self._ramp.burst * bucket.limit)
            room = min(room, (figures.remaining - max(bucket.level, 0.0)) / bucket.limit)
        return room

    def _showed_room(self, cost: Cost, server: Mapping[str, ServerLimit]) -> bool:
        """True if the 429's own headers say every bucket had room for this request."""
        if not server:
            return False
        for dimension, figures in server.items():
            if figures.remaining is None or dimension not in self._buckets:
                continue
            if figures.remaining < cost.of(dimension):
                return False
        return True

    def _narrow(self, reservation: Reservation, now: float) -> None:
        ramp = self._ramp
        if reservation.seq <= ramp.narrow_seq:
            return  # sent before the last cut: its 429 tells nothing new
        ramp.ceiling = max(MIN_BURST, ramp.burst * NARROWING)
        ramp.burst = ramp.ceiling
        ramp.cautious = True
        ramp.narrow_seq = self._seq
        ramp.widen_seq = self._seq
        ramp.narrowed_at = now
        self.stats.narrowings += 1

    async def _await_discovery(self) -> None:
        """Until the server has told its limits, let one request out at a time."""
        while self.discover and self._probe_out:
            if self._discovery is None or self._discovery.done():
                self._discovery = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._discovery)

    def _discovery_step(self, told: bool) -> None:
        """A probe came back; `told` says whether it carried rate-limit headers."""
        if not self.discover:
            return
        self._probe_out = False
        if not told:
            self._discovery_misses += 1
            if self._discovery_misses < DISCOVERY_ATTEMPTS:
                self._release_discovery()
                return
            if not self._buckets:
                self._fall_back()
        self.discover = False
        self._release_discovery()

    def _fall_back(self) -> None:
        """No limits given and none reported: go slowly, and say how to go faster."""
        now = self.clock.now()
        for dimension, limit in FALLBACK_LIMITS.items():
            self._add_bucket(dimension, limit, now)
        log.warning(
            "The server sent no rate-limit headers and no limits were given, so requests go "
            "at %s per minute; pass --max-requests-per-minute (and --max-tokens-per-minute or "
            "the input/output token limits) with the limits your account or server allows.",
            f"{FALLBACK_LIMITS['requests']:g}",
        )

    def _release_discovery(self) -> None:
        if self._discovery is not None and not self._discovery.done():
            self._discovery.set_result(None)
