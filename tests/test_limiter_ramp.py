"""The burst ramp, alone and inside the limiter, timed by a manual clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from limiter_helpers import answered, headers, limiter, rate_limited, request

from apiproc.clock import ManualClock
from apiproc.limiter import Cost, RateLimiter, ServerLimit
from apiproc.limiter.ramp import INITIAL_BURST, Ramp


def test_ramp_starts_with_a_few_requests_when_one_second_is_less() -> None:
    lim = limiter(ManualClock(), ramp=True, requests_per_minute=40)
    for _ in range(8):
        assert lim.wait_time(request(), 0.0) == 0
        lim.take(request())
    assert lim.wait_time(request(), 0.0) > 0


def test_ramp_starts_with_one_second_of_burst() -> None:
    lim = limiter(ManualClock(), ramp=True, requests_per_minute=6_000)
    assert lim.burst == pytest.approx(INITIAL_BURST)
    for _ in range(100):
        assert lim.wait_time(request(), 0.0) == 0
        lim.take(request())
    assert lim.wait_time(request(), 0.0) > 0


def test_ramp_widens_once_per_round_trip_and_only_while_requests_wait() -> None:
    ramp = Ramp.starting(requests_per_minute=6_000)
    assert not ramp.may_widen(seq=1, now=0.0)  # nobody waited for the burst
    ramp.binding = True
    assert ramp.may_widen(seq=1, now=0.0)
    start = ramp.burst
    ramp.widen(share=0.0, room=1.0, latest=100)
    assert ramp.burst == pytest.approx(start * 1.05)
    ramp.binding = True
    assert not ramp.may_widen(seq=100, now=0.0)  # sent before the widening
    assert ramp.may_widen(seq=101, now=0.0)


def test_ramp_widens_no_further_than_the_server_confirms() -> None:
    ramp = Ramp.starting(requests_per_minute=6_000)
    start = ramp.burst
    assert ramp.widen(share=0.0, room=0.0, latest=1) == start


def test_limiter_widens_once_per_confirmed_round_trip_while_binding() -> None:
    clock = ManualClock()
    lim = limiter(clock, ramp=True, requests_per_minute=6_000)
    first = [lim.take(request()) for _ in range(100)]
    lim.waits(request(), 0.0)  # a waiter found the burst exhausted
    start = lim.burst
    for reservation in first:
        lim.finish(reservation, answered(request()))
    assert lim.burst == pytest.approx(start * 1.05)  # one widening, not a hundred


def test_429_despite_room_in_headers_narrows_the_burst() -> None:
    lim = limiter(ManualClock(), ramp=True, requests_per_minute=6_000)
    reservations = [lim.take(request()) for _ in range(20)]
    before = lim.burst
    room = headers(requests=(6_000, 5_000))
    for reservation in reservations:
        lim.finish(reservation, rate_limited(room, retry_after=1.0))
    assert lim.burst < before
    assert lim.ramp.narrowings == 1  # the other 19 were sent before the cut


def test_429_when_headers_show_no_room_keeps_the_burst() -> None:
    lim = limiter(ManualClock(), ramp=True, requests_per_minute=6_000)
    before = lim.burst
    lim.finish(lim.take(request()), rate_limited(headers(requests=(6_000, 0)), retry_after=1.0))
    assert lim.burst == before


# ---- the ramp against a server whose limits are lower than the configured ones ---------------


@dataclass
class ServerBucket:
    limit: float
    level: float
    others: float = 0.0  # per minute used by other clients of the same account

    def refill(self, seconds: float) -> None:
        self.level = min(self.limit, self.level + seconds * (self.limit - self.others) / 60)


def run_against_server(
    lim: RateLimiter,
    clock: ManualClock,
    server: dict[str, ServerBucket],
    cost: Cost,
    rounds: int,
    round_trip: float = 0.2,
) -> int:
    """Admit what the limiter allows, let the server count it and answer with its headers
    one round trip later; repeat. Returns the requests the server accepted."""
    accepted = 0
    for _ in range(rounds):
        sent = []
        while len(sent) < 20_000 and lim.wait_time(cost, clock.now()) == 0:
            sent.append(lim.take(cost))
        if len(sent) < 20_000:
            lim.waits(cost, clock.now())  # the next request waits for the burst
        clock.advance(round_trip)
        for bucket in server.values():
            bucket.refill(round_trip)
        for reservation in sent:
            fits = all(bucket.level >= cost.of(name) for name, bucket in server.items())
            if fits:
                for name, bucket in server.items():
                    bucket.level -= cost.of(name)
                accepted += 1
            figures = {n: ServerLimit(b.limit, max(0.0, b.level)) for n, b in server.items()}
            report = answered(cost, figures) if fits else rate_limited(figures, retry_after=1.0)
            lim.finish(reservation, report)
    return accepted


def test_after_a_lower_server_limit_the_ramp_reaches_the_servers_full_bucket() -> None:
    clock = ManualClock()
    lim = limiter(
        clock,
        ramp=True,
        requests_per_minute=3_000,
        input_tokens_per_minute=2_000_000,
        output_tokens_per_minute=400_000,
        tokens_per_minute=48_000_000,  # twenty times what the server allows
    )
    server = {
        "requests": ServerBucket(3_000, 3_000),
        "input_tokens": ServerBucket(2_000_000, 2_000_000),
        "output_tokens": ServerBucket(400_000, 400_000),
        "tokens": ServerBucket(2_400_000, 2_400_000),
    }
    run_against_server(lim, clock, server, request(20, 60), rounds=150)
    assert lim.limit("tokens") == 2_400_000
    assert lim.burst > 0.99  # before rescaling, the ramp stalled near 0.85


def test_a_bucket_nobody_waits_for_does_not_hold_the_ramp_back() -> None:
    # Requests bind. The combined tokens never do, but other use keeps the server's
    # figure at 90 % of the limit, below the ramped bucket, which is clamped to it.
    clock = ManualClock()
    lim = limiter(clock, ramp=True, requests_per_minute=3_000, tokens_per_minute=2_400_000)
    server = {
        "requests": ServerBucket(3_000, 3_000),
        "tokens": ServerBucket(2_400_000, 2_160_000, others=2_400_000),
    }
    run_against_server(lim, clock, server, request(20, 60), rounds=150)
    assert lim.burst > 0.99


def test_the_ramp_takes_no_room_that_requests_sent_after_the_answer_already_took() -> None:
    # The server stamped its headers having seen only the first request of the burst: the
    # 99 sent after it will take 99 of the 100 it says remain.
    lim = limiter(ManualClock(), ramp=True, requests_per_minute=6_000)
    burst = [lim.take(request()) for _ in range(100)]
    lim.waits(request(), 0.0)  # the next request finds the burst used up
    lim.finish(burst[0], answered(request(), headers(requests=(6_000, 100))))
    admitted = 0
    while lim.wait_time(request(), 0.0) == 0 and admitted < 10:
        lim.take(request())
        admitted += 1
    assert admitted == 1  # the one request of room left, not the burst's 5 % growth
