"""Bucket arithmetic: one continuously refilled token bucket per limited dimension.

    buckets = Buckets()
    buckets.add("requests", limit=3_000, level=50, now=0.0)
    if buckets.wait_time(cost, burst=1 / 60, now=clock.now()) == 0:
        buckets.take(cost)

Each bucket holds at most `burst` × its limit (the ramp decides the fraction) and refills
at limit / 60 per second, as the API's own buckets do. Nothing here knows about the
server, the ramp or discovery: the limiter tells the buckets when a limit changes, how
much was really used, and how much the server says remains.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from apiproc.limiter.cost import DIMENSIONS, NOTHING, Cost, RequestTooLarge
from apiproc.providers.base import ServerLimit

EPSILON = 1e-9


@dataclass(slots=True)
class Bucket:
    """One dimension's token bucket: its limit, its level and when it was last refilled."""

    dimension: str
    limit: float  # per minute, in force now
    level: float  # what may be drawn now; negative after usage beyond the reservation
    stamp: float  # clock time of the last refill
    configured: float | None = None  # the user's limit; None when learned from the server
    fallback: bool = False  # a stand-in limit, until the server tells its own
    index: int = field(init=False)  # of its dimension in DIMENSIONS, and in Cost.amounts()

    def __post_init__(self) -> None:
        self.index = DIMENSIONS.index(self.dimension)

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self, now: float, burst: float) -> None:
        elapsed = now - self.stamp
        if elapsed <= 0:
            return
        self.stamp = now
        capacity = burst * self.limit
        if self.level < capacity:
            self.level = min(capacity, self.level + elapsed * self.limit / 60.0)

    def clamp(self, remaining: float, burst: float, now: float) -> None:
        """Never more room than the server says remains."""
        self.refill(now, burst)
        if remaining < self.level:
            self.level = remaining

    def shortfall(self, needed: float, burst: float, now: float) -> float:
        """What the bucket lacks now to give `needed`; 0 when it has room. A need larger
        than the current burst but within the limit is admitted alone on a full bucket."""
        self.refill(now, burst)
        target = min(needed, burst * self.limit)
        return 0.0 if self.level + EPSILON >= target else target - self.level


class Buckets:
    """The buckets of one rate-limit class, by dimension."""

    def __init__(self) -> None:
        self._by_dimension: dict[str, Bucket] = {}
        self.get = self._by_dimension.get  # asked per answer: the dict's own, no frame

    def __iter__(self) -> Iterator[Bucket]:
        return iter(self._by_dimension.values())

    def __contains__(self, dimension: str) -> bool:
        return dimension in self._by_dimension

    def add(self, bucket: Bucket) -> None:
        self._by_dimension[bucket.dimension] = bucket

    def limit(self, dimension: str) -> float | None:
        bucket = self._by_dimension.get(dimension)
        return bucket.limit if bucket else None

    # ---- admission -------------------------------------------------------------------

    def check(self, cost: Cost) -> None:
        """Raise RequestTooLarge if `cost` could never fit."""
        for bucket in self._by_dimension.values():
            needed = cost.of(bucket.dimension)
            if needed > bucket.limit:
                raise RequestTooLarge(bucket.dimension, needed, bucket.limit)

    def wait_time(self, cost: Cost, burst: float, now: float) -> float:
        """Seconds until every bucket has room for `cost`; 0 if it fits now."""
        delay = 0.0
        for bucket in self._by_dimension.values():
            needed = cost.of(bucket.dimension)
            if needed > 0:
                delay = max(delay, bucket.shortfall(needed, burst, now) / bucket.rate)
        return delay

    def take_if_room(self, cost: Cost, burst: float, now: float) -> bool:
        """Take `cost` if every bucket has room for it now (`wait_time() == 0`); raise
        RequestTooLarge, as `check()` does, for a bucket it could never fit."""
        buckets = self._by_dimension.values()
        amounts = cost.amounts()
        for bucket in buckets:
            needed = amounts[bucket.index]
            if needed <= 0:
                continue
            limit = bucket.limit
            if needed > limit:
                raise RequestTooLarge(bucket.dimension, needed, limit)
            # shortfall() > 0, its refill() inlined: this runs for every request.
            capacity = burst * limit
            level = bucket.level
            elapsed = now - bucket.stamp
            if elapsed > 0:
                bucket.stamp = now
                if level < capacity:
                    refilled = level + elapsed * limit / 60.0
                    level = bucket.level = refilled if refilled < capacity else capacity
            if level + EPSILON < (capacity if capacity < needed else needed):
                return False
        for bucket in buckets:
            bucket.level -= amounts[bucket.index]
        return True

    def short(self, cost: Cost, burst: float, now: float) -> set[str]:
        """The dimensions whose buckets have no room for `cost` now."""
        missing = set()
        for bucket in self._by_dimension.values():
            needed = cost.of(bucket.dimension)
            if needed > 0 and bucket.shortfall(needed, burst, now) > 0:
                missing.add(bucket.dimension)
        return missing

    def below(self, dimensions: Iterable[str], fraction: float) -> bool:
        """True if a bucket of `dimensions` holds less than `fraction` of its limit."""
        for dimension in dimensions:
            bucket = self._by_dimension.get(dimension)
            if bucket is not None and bucket.level < fraction * bucket.limit:
                return True
        return False

    def take(self, cost: Cost) -> None:
        amounts = cost.amounts()
        for bucket in self._by_dimension.values():
            bucket.level -= amounts[bucket.index]

    # ---- what was really used ----------------------------------------------------------

    def settle(self, charged: Cost, used: Cost, burst: float, now: float) -> None:
        """Return what was charged but not used (up to a full bucket); charge usage beyond."""
        # Cost.amounts() of both, inlined: this runs for every answer.
        charged_amounts = (
            charged.requests,
            charged.input_tokens,
            charged.output_tokens,
            charged.input_tokens + charged.output_tokens,
        )
        used_amounts = (
            used.requests,
            used.input_tokens,
            used.output_tokens,
            used.input_tokens + used.output_tokens,
        )
        for bucket in self._by_dimension.values():
            # refill() inlined, as in take_if_room(): this runs for every answer.
            capacity = burst * bucket.limit
            level = bucket.level
            elapsed = now - bucket.stamp
            if elapsed > 0:
                bucket.stamp = now
                if level < capacity:
                    refilled = level + elapsed * bucket.limit / 60.0
                    level = refilled if refilled < capacity else capacity
            delta = charged_amounts[bucket.index] - used_amounts[bucket.index]
            if delta > 0:
                refunded = level + delta
                most = capacity if capacity > level else level
                bucket.level = most if most < refunded else refunded
            else:
                bucket.level = level + delta

    def charge(self, extra: Cost) -> None:
        """Take usage reported beyond what was charged so far (never a refund)."""
        for bucket in self._by_dimension.values():
            bucket.level -= max(0.0, extra.of(bucket.dimension))

    def empty(self, burst: float, now: float) -> None:
        """Nothing left to draw: a 429 said so."""
        for bucket in self._by_dimension.values():
            bucket.refill(now, burst)
            bucket.level = min(bucket.level, 0.0)

    def widen(self, burst: float, wider: float, now: float) -> None:
        """The burst grows: every bucket gets the extra room at once."""
        for bucket in self._by_dimension.values():
            bucket.refill(now, burst)
            bucket.level += (wider - burst) * bucket.limit

    # ---- the server's word -------------------------------------------------------------

    def rescale(self, dimension: str, limit: float, burst: float, now: float) -> None:
        """The limit in force changes. A lower one scales the bucket down with it (limit,
        level and so capacity), so the room the ramp sees stays in proportion; a higher
        one only lets the bucket refill faster and further."""
        bucket = self._by_dimension[dimension]
        bucket.refill(now, burst)
        if limit < bucket.limit and bucket.level > 0:
            bucket.level *= limit / bucket.limit
        bucket.limit = limit

    def share(self, cost: Cost) -> float:
        """The largest fraction of a bucket's limit that `cost` takes."""
        return max((cost.of(b.dimension) / b.limit for b in self), default=0.0)

    def room(
        self,
        server: Mapping[str, ServerLimit],
        burst: float,
        now: float,
        of: Iterable[str],
        since: Cost = NOTHING,
    ) -> float:
        """Room the server's latest figures show beyond what the buckets of dimensions `of`
        hold and what was admitted `since` the figures were stamped, as a fraction of the
        limit (the smallest over those the server reports)."""
        room = 1.0
        for dimension in of:
            bucket = self._by_dimension.get(dimension)
            figures = server.get(dimension)
            if bucket is None or figures is None or figures.remaining is None:
                continue
            bucket.refill(now, burst)
            unseen = since.of(dimension)
            room = min(room, (figures.remaining - max(bucket.level, 0.0) - unseen) / bucket.limit)
        return room

    def showed_room(self, cost: Cost, server: Mapping[str, ServerLimit]) -> bool:
        """True if `server` (a 429's own headers) says every bucket had room for `cost`."""
        if not server:
            return False
        for dimension, figures in server.items():
            if figures.remaining is None or dimension not in self:
                continue
            if figures.remaining < cost.of(dimension):
                return False
        return True
