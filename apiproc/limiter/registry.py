"""One rate limiter per model class, behind the one object the engine asks.

    limiters = Limiters(Limits(requests_per_minute=1_000), by_class={"haiku-4-5": haiku})
    reservation = await limiters.acquire("haiku-4-5", cost)
    limiters.progress(reservation, used_so_far)      # while an answer streams in
    limiters.finish(reservation, report)             # once per attempt

The API limits each model class on its own, so each class gets its own buckets, ramp
and discovery, synced only to its own answers' headers. A class's limiter is made when
its first request arrives. Its configured limits are its entry in `by_class` (from
`--limits-file`), with the flags (`limits`) for the dimensions that entry leaves unset;
without an entry, the flags apply to every class.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from apiproc.clock import Clock, MonotonicClock
from apiproc.limiter.cost import AttemptReport, Cost, Limits, Reservation
from apiproc.limiter.limiter import RateLimiter

log = logging.getLogger("apiproc")


class Limiters:
    def __init__(
        self,
        limits: Limits | None = None,
        by_class: Mapping[str, Limits] | None = None,
        clock: Clock | None = None,
        ramp: bool = True,
        discover: bool = True,
    ) -> None:
        self.limits = limits or Limits()
        self.by_class = dict(by_class or {})
        self.clock = clock or MonotonicClock()
        self.ramp = ramp
        self.discover = discover
        self._limiters: dict[str, RateLimiter] = {}

    async def acquire(self, limit_class: str, cost: Cost) -> Reservation:
        """Wait until `limit_class` has room for `cost`, first come first served within
        the class; other classes are not held up. Raises RequestTooLarge."""
        return await self.of(limit_class).acquire(cost)

    def progress(self, reservation: Reservation, used_so_far: Cost) -> None:
        """Charge usage reported beyond the reservation while the answer streams in."""
        self._limiters[reservation.limit_class].progress(reservation, used_so_far)

    def finish(self, reservation: Reservation, report: AttemptReport) -> None:
        """What the attempt came back with: settle, follow the server, pause or widen."""
        self._limiters[reservation.limit_class].finish(reservation, report)

    def of(self, limit_class: str) -> RateLimiter:
        """The limiter of `limit_class`, made on first use."""
        limiter = self._limiters.get(limit_class)
        if limiter is None:
            limiter = RateLimiter(
                self._configured(limit_class),
                clock=self.clock,
                ramp=self.ramp,
                discover=self.discover,
                name=limit_class,
            )
            self._limiters[limit_class] = limiter
        return limiter

    def limit(self, dimension: str) -> float | None:
        """The limit of `dimension` summed over the classes that have one."""
        limits = [lim.limit(dimension) for lim in self._limiters.values()]
        known = [limit for limit in limits if limit is not None]
        return sum(known) if known else None

    @property
    def classes(self) -> list[str]:
        return list(self._limiters)

    def _configured(self, limit_class: str) -> Limits:
        own = self.by_class.get(limit_class)
        if own is None:
            if self.by_class:
                log.info("the limits file has no entry for class %s", limit_class)
            return self.limits
        return own.over(self.limits)
