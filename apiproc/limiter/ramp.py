"""The burst ramp: how much of each bucket may be drawn at once, growing with success.

    ramp = Ramp.starting(requests_per_minute=3_000)
    if ramp.may_widen(seq, now):                   # request `seq` succeeded
        wider = ramp.widen(share, room, latest_seq)
    ramp.narrow(seq, latest_seq, now)              # a 429 although the headers showed room

The API's bucket starts full, but it may also enforce over shorter intervals and punish
sharp ramps, so each bucket may only be drawn down to a fraction of its capacity: the
burst. It starts at one second of the rate (but at least a few requests), grows by a few
per cent (at least the confirmed request's own share) each round trip while responses
confirm room the server still has, and is cut when a 429 arrives although the headers
showed room; after such a cut it grows only slowly, up to a ceiling that recovers over
minutes. The ramp is one fraction for every bucket of a class, so the buckets stay in
proportion to their limits.
"""

from __future__ import annotations

from dataclasses import dataclass

# Fractions of a bucket's capacity (one minute of its rate).
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


@dataclass(slots=True)
class Ramp:
    """The burst one class's buckets may be drawn down to, and how it has moved."""

    burst: float = INITIAL_BURST
    enabled: bool = True
    ceiling: float = 1.0
    cautious: bool = False  # cut once: grow slowly from now on
    binding: bool = False  # a request waited for the burst since the last widening
    widen_seq: int = 0  # requests admitted up to the last widening
    narrow_seq: int = 0  # requests admitted up to the last cut
    narrowed_at: float = 0.0
    narrowings: int = 0

    @classmethod
    def starting(cls, requests_per_minute: float | None = None, enabled: bool = True) -> Ramp:
        ramp = cls(enabled=enabled)
        ramp.restart(requests_per_minute)
        return ramp

    def restart(self, requests_per_minute: float | None) -> None:
        """Start over, as for limits just learned."""
        if not self.enabled:
            self.burst = 1.0
            return
        self.burst = INITIAL_BURST
        if requests_per_minute:
            self.burst = max(INITIAL_BURST, min(1.0, INITIAL_BURST_REQUESTS / requests_per_minute))
        self.ceiling, self.cautious, self.binding = 1.0, False, False

    def may_widen(self, seq: int, now: float) -> bool:
        """Whether request `seq`'s success may widen the burst: once per round trip (a
        request admitted after the last widening), and only while requests wait for it."""
        self._recover_ceiling(now)
        return seq > self.widen_seq and self.binding and self.burst < self.ceiling

    def widen(self, share: float, room: float, latest: int) -> float:
        """Widen by a step no larger than the `room` the server confirms beyond our own
        view; `share` is the confirmed request's own fraction of a bucket, `latest` the
        last request admitted so far. Returns the new burst."""
        growth = CAUTIOUS_GROWTH if self.cautious else SLOW_START_GROWTH
        # At least the request's own share: large requests would otherwise need many
        # round trips to fit even a few of them in the burst.
        step = max(self.burst * (growth - 1.0), share)
        step = min(step, self.ceiling - self.burst, room)
        if step <= 0:
            return self.burst
        self.burst += step
        self.widen_seq = latest
        self.binding = False
        return self.burst

    def narrow(self, seq: int, latest: int, now: float) -> bool:
        """A 429 although the headers showed room: cut the burst, unless request `seq`
        was sent before the last cut (its 429 tells nothing new)."""
        if seq <= self.narrow_seq:
            return False
        self.ceiling = max(MIN_BURST, self.burst * NARROWING)
        self.burst = self.ceiling
        self.cautious = True
        self.narrow_seq = latest
        self.widen_seq = latest
        self.narrowed_at = now
        self.narrowings += 1
        return True

    def _recover_ceiling(self, now: float) -> None:
        if (
            self.cautious
            and self.ceiling < 1.0
            and now - self.narrowed_at >= CEILING_RECOVERY_SECONDS
        ):
            self.ceiling = min(1.0, self.ceiling * CEILING_RECOVERY)
            self.narrowed_at = now
