"""The rate limiter, timed by a manual clock: no test here sleeps."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiproc.clock import ManualClock
from apiproc.limiter import (
    INITIAL_BURST,
    NOTHING,
    Cost,
    Limits,
    RateLimiter,
    RequestTooLarge,
    ServerLimit,
)


def limiter(clock: ManualClock, ramp: bool = False, **limits: float) -> RateLimiter:
    return RateLimiter(Limits(**limits), clock=clock, ramp=ramp)


def request(input_tokens: float = 0, output_tokens: float = 0) -> Cost:
    return Cost(requests=1, input_tokens=input_tokens, output_tokens=output_tokens)


def test_full_bucket_admits_a_minute_of_requests_at_once_without_ramp() -> None:
    clock = ManualClock()
    lim = limiter(clock, requests_per_minute=600)
    for _ in range(600):
        assert lim.wait_time(request(), clock.now()) == 0
        lim.take(request())
    assert lim.wait_time(request(), clock.now()) == pytest.approx(0.1)


def test_wait_time_is_the_refill_time_of_the_scarcest_bucket() -> None:
    clock = ManualClock()
    lim = limiter(clock, requests_per_minute=60, input_tokens_per_minute=6_000)
    lim.take(Cost(requests=60, input_tokens=6_000))
    # 100 input tokens refill in 1 s; 1 request refills in 1 s; 300 tokens need 3 s.
    assert lim.wait_time(request(input_tokens=300), 0.0) == pytest.approx(3.0)


def test_request_larger_than_a_bucket_is_rejected_not_queued() -> None:
    lim = limiter(ManualClock(), requests_per_minute=60, input_tokens_per_minute=1_000)
    with pytest.raises(RequestTooLarge) as raised:
        asyncio.run(lim.acquire(request(input_tokens=1_001)))
    assert raised.value.dimension == "input_tokens"


def test_settle_returns_unused_output_tokens() -> None:
    clock = ManualClock()
    lim = limiter(clock, output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=4_000))
    lim.settle(reservation, request(output_tokens=1_000))
    # 2,000 left + 3,000 returned: a 5,000-token request fits now, 5,001 does not.
    assert lim.wait_time(request(output_tokens=5_000), 0.0) == 0
    assert lim.wait_time(request(output_tokens=5_001), 0.0) > 0


def test_settle_charges_usage_beyond_the_estimate() -> None:
    lim = limiter(ManualClock(), input_tokens_per_minute=6_000)
    reservation = lim.take(request(input_tokens=1_000))
    lim.settle(reservation, request(input_tokens=3_000))
    assert lim.wait_time(request(input_tokens=3_000), 0.0) == 0
    assert lim.wait_time(request(input_tokens=3_001), 0.0) > 0


def test_settling_twice_changes_nothing() -> None:
    lim = limiter(ManualClock(), output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=3_000))
    lim.settle(reservation, NOTHING)
    lim.settle(reservation, NOTHING)
    lim.take(request(output_tokens=6_000))
    assert lim.wait_time(request(output_tokens=1), 0.0) > 0


def test_server_headers_lower_the_room_never_raise_it() -> None:
    clock = ManualClock()
    lim = limiter(clock, requests_per_minute=600)
    lim.observe({"requests": ServerLimit(limit=600, remaining=10)})
    for _ in range(10):
        lim.take(request())
    assert lim.wait_time(request(), 0.0) > 0
    lim.observe({"requests": ServerLimit(limit=600, remaining=600)})
    assert lim.wait_time(request(), 0.0) > 0


def test_a_lower_limit_from_the_server_replaces_the_configured_one() -> None:
    lim = limiter(ManualClock(), requests_per_minute=6_000)
    lim.observe({"requests": ServerLimit(limit=60, remaining=0)})
    assert lim.limit("requests") == 60
    assert lim.wait_time(request(), 0.0) == pytest.approx(1.0)


def test_unconfigured_dimensions_are_learned_from_headers() -> None:
    lim = limiter(ManualClock(), requests_per_minute=600)
    lim.observe({"output_tokens": ServerLimit(limit=8_000, remaining=100)})
    assert lim.limit("output_tokens") == 8_000
    assert lim.wait_time(request(output_tokens=200), 0.0) == pytest.approx(0.75)


def test_rate_limit_pauses_every_admission_until_retry_after() -> None:
    clock = ManualClock()
    lim = limiter(clock, requests_per_minute=6_000)
    reservation = lim.take(request())
    lim.settle(reservation, NOTHING)
    lim.rate_limited(reservation, retry_after=7.0, server={})
    assert lim.wait_time(request(), 0.0) == pytest.approx(7.0)
    assert lim.wait_time(request(), 7.0) == 0


def test_admission_is_in_arrival_order_so_large_requests_are_not_starved() -> None:
    clock = ManualClock()
    lim = limiter(clock, input_tokens_per_minute=600)
    lim.take(request(input_tokens=600))
    order: list[str] = []

    async def want(name: str, tokens: float) -> None:
        await lim.acquire(request(input_tokens=tokens))
        order.append(name)

    async def scenario() -> None:
        big = asyncio.create_task(want("big", 500))
        await asyncio.sleep(0)
        small = [asyncio.create_task(want(f"small{i}", 10)) for i in range(5)]
        await asyncio.wait_for(asyncio.gather(big, *small), timeout=5)

    asyncio.run(scenario())
    assert order[0] == "big"
    assert clock.now() == pytest.approx(500 / 10 + 5 * 10 / 10)


def test_a_refund_wakes_the_waiting_request_before_its_refill_time() -> None:
    lim = RateLimiter(Limits(output_tokens_per_minute=60), clock=_FrozenClock(), ramp=False)
    held = lim.take(request(output_tokens=60))
    assert lim.wait_time(request(output_tokens=30), 0.0) == pytest.approx(30.0)

    async def scenario() -> None:
        waiter = asyncio.create_task(lim.acquire(request(output_tokens=30)))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiter.done()
        lim.settle(held, request(output_tokens=0))
        await asyncio.wait_for(waiter, timeout=5)

    asyncio.run(scenario())


class _FrozenClock(ManualClock):
    """Time never moves: a waiter can only proceed if something wakes it."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


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


def test_ramp_widens_once_per_confirmed_round_trip_while_binding() -> None:
    clock = ManualClock()
    lim = limiter(clock, ramp=True, requests_per_minute=6_000)
    first = [lim.take(request()) for _ in range(100)]
    lim.wait_time(request(), 0.0)
    lim._ramp.binding = True  # a waiter found the burst exhausted
    start = lim.burst
    for reservation in first:
        lim.settle(reservation, request())
        lim.confirm(reservation)
    assert lim.burst == pytest.approx(start * 1.05)  # one widening, not a hundred


def test_429_despite_room_in_headers_narrows_the_burst() -> None:
    lim = limiter(ManualClock(), ramp=True, requests_per_minute=6_000)
    reservations = [lim.take(request()) for _ in range(20)]
    before = lim.burst
    room = {"requests": ServerLimit(limit=6_000, remaining=5_000)}
    for reservation in reservations:
        lim.settle(reservation, NOTHING)
        lim.rate_limited(reservation, retry_after=1.0, server=room)
    assert lim.burst < before
    assert lim.stats.narrowings == 1  # the other 19 were sent before the cut


def test_429_when_headers_show_no_room_keeps_the_burst() -> None:
    lim = limiter(ManualClock(), ramp=True, requests_per_minute=6_000)
    reservation = lim.take(request())
    before = lim.burst
    lim.rate_limited(
        reservation, retry_after=1.0, server={"requests": ServerLimit(limit=6_000, remaining=0)}
    )
    assert lim.burst == before


def test_without_known_limits_one_probe_goes_first_then_headers_set_the_pace() -> None:
    clock = ManualClock()
    lim = RateLimiter(Limits(), clock=clock, ramp=False, discover=True)

    async def scenario() -> list[float]:
        probe = await lim.acquire(request())
        second = asyncio.create_task(lim.acquire(request()))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not second.done()  # held until the probe's headers arrive
        lim.settle(probe, request())
        lim.observe({"requests": ServerLimit(limit=60, remaining=0)})
        await asyncio.wait_for(second, timeout=5)
        return [clock.now()]

    assert asyncio.run(scenario()) == [pytest.approx(1.0)]
    assert lim.limit("requests") == 60


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(min_value=60, max_value=5_000),
    ramp=st.booleans(),
    arrivals=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=3.0),  # gap before this request arrives
            st.integers(min_value=1, max_value=400),  # its cost in tokens
            st.floats(min_value=0, max_value=1.0),  # fraction of the cost really used
        ),
        min_size=1,
        max_size=120,
    ),
)
def test_net_admissions_in_any_window_never_exceed_capacity_plus_rate_times_window(
    limit: int, ramp: bool, arrivals: list[tuple[float, int, float]]
) -> None:
    clock = ManualClock()
    lim = limiter(clock, ramp=ramp, input_tokens_per_minute=limit)
    rate = limit / 60.0
    events: list[tuple[float, float]] = []  # (time, net tokens taken)
    now = 0.0
    for gap, cost, used in arrivals:
        cost = min(cost, limit)
        now += gap
        now += lim.wait_time(request(input_tokens=cost), now)
        reservation = lim.take(request(input_tokens=cost))
        events.append((now, cost))
        actual = cost * used
        lim.settle(reservation, request(input_tokens=actual))
        events.append((now, actual - cost))  # the refund
        lim.confirm(reservation)
    times = sorted({t for t, _ in events})
    for i, start in enumerate(times):
        for end in times[i:]:
            taken = sum(amount for t, amount in events if start <= t <= end)
            assert taken <= limit + rate * (end - start) + 1e-6 * limit


def test_streamed_progress_charges_beyond_the_reservation_as_reported() -> None:
    clock = ManualClock()
    lim = limiter(clock, output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=1_000))
    lim.progress(reservation, request(output_tokens=3_000))
    # 6,000 - 3,000 used so far: 3,000 fit now, 3,001 do not.
    assert lim.wait_time(request(output_tokens=3_000), clock.now()) == 0
    assert lim.wait_time(request(output_tokens=3_001), clock.now()) > 0
    lim.progress(reservation, request(output_tokens=3_500))
    lim.settle(reservation, request(output_tokens=3_500))
    assert lim.wait_time(request(output_tokens=2_500), clock.now()) == 0
    assert lim.wait_time(request(output_tokens=2_501), clock.now()) > 0


def test_streamed_progress_below_the_reservation_refunds_nothing_before_it_settles() -> None:
    clock = ManualClock()
    lim = limiter(clock, output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=4_000))
    lim.progress(reservation, request(output_tokens=500))
    assert lim.wait_time(request(output_tokens=2_001), clock.now()) > 0
    lim.settle(reservation, request(output_tokens=500))
    assert lim.wait_time(request(output_tokens=5_500), clock.now()) == 0
