"""The rate limiter of one model class: reserve at admission, settle, obey the server.

    limiter = RateLimiter(Limits(requests_per_minute=3_000), name="haiku-4-5")
    reservation = await limiter.acquire(Cost(requests=1, input_tokens=900, output_tokens=200))
    limiter.finish(reservation, AttemptReport(used=Cost(1, 870, 143), server=headers))

A request is admitted when every bucket it needs has room within the burst; callers are
served strictly in arrival order, so a large request is never starved by a stream of
small ones. A request bigger than a whole bucket raises `RequestTooLarge` instead of
waiting forever. Each attempt ends with one `finish()` call, which does everything the
answer tells, in the one right order:
1. settle the reservation to what the server counted (refund or charge);
2. take the server's figures: a limit in force that changed rescales its bucket, a
   configured limit above the server's is reported once, and no bucket keeps more room
   than the server's latest `remaining` (after the refund, so a refund cannot lift it);
3. a 429 pauses the class until `retry-after` (and narrows the burst when the headers
   showed room); a success may widen the burst.
Bucket arithmetic, the ramp and discovery live in their own modules; this one only
orders what they do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from apiproc.clock import Clock, MonotonicClock
from apiproc.limiter.buckets import Bucket, Buckets
from apiproc.limiter.cost import AttemptReport, Cost, Limits, Reservation
from apiproc.limiter.discovery import FALLBACK_LIMITS, Discovery, Step
from apiproc.limiter.ramp import Ramp
from apiproc.providers.base import ServerLimit

log = logging.getLogger("apiproc")

# The dimensions an input estimate is drawn from, and how far one of their buckets may
# fall (as a fraction of its burst) before the estimates' precision matters.
INPUT_DIMENSIONS = ("input_tokens", "tokens")
WITHIN_REACH = 0.75
# Far from every limit, an answer's rate-limit figures are read at most this often: they
# can then only tell of a changed limit or of another client drawing on the same budget.
FIGURES_EVERY = 0.01  # seconds

FLAGS = {
    "requests": "--max-requests-per-minute",
    "input_tokens": "--max-input-tokens-per-minute",
    "output_tokens": "--max-output-tokens-per-minute",
    "tokens": "--max-tokens-per-minute",
}


class RateLimiter:
    def __init__(
        self,
        limits: Limits | None = None,
        clock: Clock | None = None,
        ramp: bool = True,
        discover: bool = False,
        name: str = "",
    ) -> None:
        self.name = name
        self.clock = clock or MonotonicClock()
        configured = (limits or Limits()).by_dimension()
        self.buckets = Buckets()
        self.ramp = Ramp.starting(configured.get("requests"), enabled=ramp)
        self.discovery = Discovery(active=discover and "requests" not in configured)
        self._seq = 0
        self._paused_until = 0.0
        self._server: dict[str, ServerLimit] = {}
        self._figures_at = float("-inf")  # clock time the server's figures were last taken
        self._warned: set[str] = set()
        # Dimensions a request waited for since the burst last widened: only their room
        # may hold the burst back (a bucket nobody waits for cannot be what paces us).
        self._binding: set[str] = set()
        self._lock: asyncio.Lock | None = None
        # Everything admitted so far (requests, input and output tokens), for what an
        # answer missed.
        self._admitted = (0.0, 0.0, 0.0)
        self._queued = 0  # acquire() calls waiting their turn on the lock
        # Requests wait their turn in acquire() (or discovery admits one at a time), so
        # none is admitted ahead of them: kept up to date, as it is read per request.
        self.waiting = self.discovery.active
        self._wake: asyncio.Future[None] | None = None
        # An input token budget has been drawn down far enough for estimates to matter
        # (it stays so): until then a generous estimate costs nothing.
        self.tokens_within_reach = False
        now = self.clock.now()
        for dimension, limit in configured.items():
            if limit <= 0:
                raise ValueError(f"the {dimension.replace('_', ' ')} limit must be positive")
            level = self.ramp.burst * limit
            self.buckets.add(Bucket(dimension, float(limit), level, now, configured=limit))

    # ---- the contract ------------------------------------------------------------------

    async def acquire(self, cost: Cost) -> Reservation:
        """Wait, in arrival order, until every bucket has room for `cost`; then reserve it."""
        reservation = self.admit_now(cost)
        if reservation is not None:
            return reservation
        self.check(cost)
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._queued += 1
        self.waiting = True
        try:
            async with self._lock:
                await self.discovery.turn()
                self.check(cost)  # the limits the server just told may be too small for it
                while (delay := self.wait_time(cost, self.clock.now())) > 0:
                    self.waits(cost, self.clock.now())
                    await self._sleep_or_wake(delay)
                    self.check(cost)  # the server may have lowered a limit meanwhile
                self.discovery.sent()
                return self.take(cost)
        finally:
            self._queued -= 1
            self._update_waiting()

    def admit_now(self, cost: Cost) -> Reservation | None:
        """Reserve `cost` at once if nobody is ahead and every bucket has room (what the
        queue would give), else None; without a coroutine, for the usual case."""
        now = self.clock.now()
        if self.waiting or now < self._paused_until:
            return None
        if not self.buckets.take_if_room(cost, self.ramp.burst, now):
            return None
        return self._reserved(cost)

    def progress(self, reservation: Reservation, used_so_far: Cost) -> None:
        """Usage reported while the answer streams in: charge what goes beyond what the
        reservation has taken so far, at once. Nothing is refunded before `finish()`."""
        if reservation.settled:
            return
        charged = reservation.charged.most(used_so_far)
        self.buckets.charge(charged.minus(reservation.charged))
        reservation.charged = charged

    def finish(self, reservation: Reservation, report: AttemptReport) -> None:
        """Everything one attempt tells the limiter; see the module docstring."""
        if reservation.settled:
            return
        reservation.settled = True
        now = self.clock.now()
        used = reservation.charged if report.used is None else report.used
        self.buckets.settle(reservation.charged, used, self.ramp.burst, now)
        self._observe(report.server, now)
        if self.discovery.active:
            self._discovered(self.discovery.answered(bool(report.server), report.api_answer), now)
            self._update_waiting()
        if report.rate_limited:
            self._rate_limited(reservation, report, now)
        elif report.succeeded and (self.ramp.binding or self.ramp.cautious):
            self._confirm(reservation, now)  # else Ramp.may_widen() would change nothing
        if self._wake is not None:
            self._poke()

    # ---- views -------------------------------------------------------------------------

    def _update_waiting(self) -> None:
        self.waiting = self._queued > 0 or self.discovery.active

    def wants_figures(self) -> bool:
        """Whether the next answer's rate-limit figures are worth reading: always near a
        limit (requests wait, the burst may widen, the limits are being discovered, an
        input budget has come within reach), and otherwise once every FIGURES_EVERY
        seconds."""
        return (
            self.waiting
            or self.ramp.binding
            or self.tokens_within_reach
            or self.clock.now() - self._figures_at >= FIGURES_EVERY
        )

    def limit(self, dimension: str) -> float | None:
        return self.buckets.limit(dimension)

    @property
    def burst(self) -> float:
        return self.ramp.burst

    # ---- admission ---------------------------------------------------------------------

    def check(self, cost: Cost) -> None:
        """Raise RequestTooLarge if `cost` could never fit."""
        self.buckets.check(cost)

    def wait_time(self, cost: Cost, now: float) -> float:
        """Seconds until `cost` can be admitted, 0 if now (ignoring other waiters)."""
        delay = self.buckets.wait_time(cost, self.ramp.burst, now)
        return max(0.0, delay, self._paused_until - now)

    def waits(self, cost: Cost, now: float) -> None:
        """A request must wait for `cost`: the burst binds, by the buckets short of room."""
        self.ramp.binding = True
        short = self.buckets.short(cost, self.ramp.burst, now)
        self._binding |= short
        if not short.isdisjoint(INPUT_DIMENSIONS):
            self.tokens_within_reach = True

    def take(self, cost: Cost) -> Reservation:
        """Admit `cost` now; the caller has checked `wait_time() == 0`."""
        self.buckets.take(cost)
        return self._reserved(cost)

    def _reserved(self, cost: Cost) -> Reservation:
        """The reservation of `cost`, just taken from the buckets."""
        self._seq += 1
        if not self.tokens_within_reach:
            floor = WITHIN_REACH * self.ramp.burst
            self.tokens_within_reach = self.buckets.below(INPUT_DIMENSIONS, floor)
        # Running totals, not a Cost per request: _confirm() alone makes one of them.
        requests, input_tokens, output_tokens = self._admitted
        self._admitted = admitted = (
            requests + cost.requests,
            input_tokens + cost.input_tokens,
            output_tokens + cost.output_tokens,
        )
        return Reservation(self.name, self._seq, cost, cost, False, admitted)

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

    # ---- the server's word -------------------------------------------------------------

    def _observe(self, server: Mapping[str, ServerLimit], now: float) -> None:
        """Limits in force follow the server (never above a configured one); no bucket
        holds more than the server says remains."""
        if server:
            self._figures_at = now
        self._server.update(server)
        get = self.buckets.get
        for dimension, figures in server.items():
            bucket = get(dimension)
            limit = figures.limit
            if bucket is None:
                # A combined tokens figure beside separate input and output limits is
                # their sum, not a limit of its own; alone, it is the one token budget.
                separate = "input_tokens" in server or "output_tokens" in server
                if limit and (dimension != "tokens" or not separate):
                    self._learn(dimension, figures, now)
                continue
            if bucket.fallback and limit:
                self._replace_fallback(bucket, figures, now)
                continue
            # The same limit as the bucket's leaves nothing to follow (and was warned of).
            if limit and limit > 0 and limit != bucket.limit:
                self._follow(bucket, limit, now)
            # clamp(), without its refill: settle() has just refilled every bucket to now.
            remaining = figures.remaining
            if remaining is not None and remaining < bucket.level:
                bucket.level = remaining

    def _follow(self, bucket: Bucket, server_limit: float, now: float) -> None:
        """The limit in force: the server's, or the configured one when that is lower."""
        if bucket.configured is not None and server_limit < bucket.configured:
            self._warn_above(bucket, server_limit)
        target = server_limit if bucket.configured is None else min(server_limit, bucket.configured)
        if target != bucket.limit:
            self.buckets.rescale(bucket.dimension, target, self.ramp.burst, now)

    def _learn(self, dimension: str, figures: ServerLimit, now: float) -> None:
        """A dimension the server limits and we did not know of: a bucket for it."""
        assert figures.limit is not None
        if dimension == "requests" and self._seq <= 1:
            self.ramp.restart(figures.limit)
        level = self._starting_level(figures)
        self.buckets.add(Bucket(dimension, float(figures.limit), level, now))

    def _replace_fallback(self, bucket: Bucket, figures: ServerLimit, now: float) -> None:
        """The server tells at last: its limit replaces the stand-in, and the ramp
        starts over from it."""
        assert figures.limit is not None
        log.info("%s: the API now reports its limits; the fallback is replaced", self._label)
        if bucket.dimension == "requests":
            self.ramp.restart(figures.limit)
        bucket.limit, bucket.stamp, bucket.fallback = float(figures.limit), now, False
        bucket.level = self._starting_level(figures)

    def _starting_level(self, figures: ServerLimit) -> float:
        """A new bucket's level: the burst, or less if the server says less remains."""
        assert figures.limit is not None
        level = self.ramp.burst * figures.limit
        return level if figures.remaining is None else min(level, figures.remaining)

    def _warn_above(self, bucket: Bucket, server_limit: float) -> None:
        if bucket.dimension in self._warned:
            return
        self._warned.add(bucket.dimension)
        assert bucket.configured is not None
        log.warning(
            "%s: the configured %s limit of %s per minute (%s or --limits-file) is above "
            "the API's %s per minute; pacing to the API's",
            self._label,
            bucket.dimension.replace("_", " "),
            f"{bucket.configured:,.0f}",
            FLAGS[bucket.dimension],
            f"{server_limit:,.0f}",
        )

    def _discovered(self, step: Step, now: float) -> None:
        if step is not Step.FALL_BACK:
            return
        for dimension, limit in FALLBACK_LIMITS.items():
            if dimension in self.buckets:
                continue
            if dimension == "requests":
                self.ramp.restart(limit)
            level = self.ramp.burst * limit
            self.buckets.add(Bucket(dimension, limit, level, now, fallback=True))
        log.warning(
            "%s: the API sent no rate-limit headers in %d answers, so requests go at %s "
            "per minute; set --max-requests-per-minute (or this class in --limits-file) "
            "to the account's limit to go faster",
            self._label,
            self.discovery.misses,
            f"{FALLBACK_LIMITS['requests']:,.0f}",
        )

    def _rate_limited(self, reservation: Reservation, report: AttemptReport, now: float) -> None:
        """A 429: nothing left to draw, pause until retry-after, maybe narrow the burst."""
        self.buckets.empty(self.ramp.burst, now)
        if report.retry_after is not None and report.retry_after > 0:
            self._paused_until = max(self._paused_until, now + report.retry_after)
        if self.buckets.showed_room(reservation.cost, report.server):
            self.ramp.narrow(reservation.seq, self._seq, now)

    def _confirm(self, reservation: Reservation, now: float) -> None:
        """A success: widen the burst by what the server confirms it still has."""
        if not self.ramp.may_widen(reservation.seq, now):
            return
        burst = self.ramp.burst
        # The server's figures were stamped before it saw what was admitted after this
        # request (some of it may still be on the way): room it shows for that is none.
        since = Cost(*self._admitted).minus(Cost(*reservation.admitted))
        room = self.buckets.room(self._server, burst, now, of=self._binding, since=since)
        wider = self.ramp.widen(self.buckets.share(reservation.cost), room, self._seq)
        if wider > burst:
            self.buckets.widen(burst, wider, now)
            self._binding.clear()

    @property
    def _label(self) -> str:
        return f"class {self.name}" if self.name else "rate limits"
