"""One class's rate limiter and its buckets, timed by a manual clock: no test here sleeps."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limiter_helpers import answered, headers, limiter, rate_limited, request

from apiproc.clock import ManualClock
from apiproc.limiter import NOTHING, Cost, Limits, RateLimiter, RequestTooLarge
from apiproc.limiter.buckets import Bucket, Buckets
from apiproc.limiter.cost import DIMENSIONS

# ---- bucket arithmetic -------------------------------------------------------------------


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


def test_a_lower_limit_scales_the_bucket_level_and_capacity_with_it() -> None:
    buckets = Buckets()
    buckets.add(Bucket("tokens", limit=6_000, level=3_000, stamp=0.0))
    buckets.rescale("tokens", 600, burst=1.0, now=0.0)
    assert buckets.limit("tokens") == 600
    assert buckets.wait_time(Cost(input_tokens=300), burst=1.0, now=0.0) == 0
    assert buckets.wait_time(Cost(input_tokens=301), burst=1.0, now=0.0) > 0
    # Capacity follows the limit: ten seconds later the bucket is full at 400, not 1,300.
    assert buckets.wait_time(Cost(input_tokens=400), burst=1.0, now=10.0) == 0
    assert buckets.wait_time(Cost(input_tokens=401), burst=1.0, now=10.0) > 0


def test_a_higher_limit_refills_faster_but_adds_no_room_at_once() -> None:
    buckets = Buckets()
    buckets.add(Bucket("requests", limit=60, level=10, stamp=0.0))
    buckets.rescale("requests", 600, burst=1.0, now=0.0)
    assert buckets.wait_time(Cost(requests=11), burst=1.0, now=0.0) == pytest.approx(0.1)


# ---- finish(): settle, then the server's word ----------------------------------------------


def test_finish_returns_unused_output_tokens() -> None:
    lim = limiter(ManualClock(), output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=4_000))
    lim.finish(reservation, answered(request(output_tokens=1_000)))
    # 2,000 left + 3,000 returned: a 5,000-token request fits now, 5,001 does not.
    assert lim.wait_time(request(output_tokens=5_000), 0.0) == 0
    assert lim.wait_time(request(output_tokens=5_001), 0.0) > 0


def test_finish_charges_usage_beyond_the_estimate() -> None:
    lim = limiter(ManualClock(), input_tokens_per_minute=6_000)
    reservation = lim.take(request(input_tokens=1_000))
    lim.finish(reservation, answered(request(input_tokens=3_000)))
    assert lim.wait_time(request(input_tokens=3_000), 0.0) == 0
    assert lim.wait_time(request(input_tokens=3_001), 0.0) > 0


def test_finish_without_known_usage_keeps_the_reservation_charged() -> None:
    lim = limiter(ManualClock(), output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=4_000))
    lim.finish(reservation, answered(None, succeeded=False))
    assert lim.wait_time(request(output_tokens=2_000), 0.0) == 0
    assert lim.wait_time(request(output_tokens=2_001), 0.0) > 0


def test_finishing_twice_changes_nothing() -> None:
    lim = limiter(ManualClock(), output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=3_000))
    lim.finish(reservation, answered(NOTHING))
    lim.finish(reservation, answered(NOTHING))
    lim.take(request(output_tokens=6_000))
    assert lim.wait_time(request(output_tokens=1), 0.0) > 0


def test_a_refund_never_lifts_a_bucket_above_the_servers_remaining() -> None:
    lim = limiter(ManualClock(), output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=4_000))
    # 3,900 of the 4,000 come back, but the server says only 1,000 remain.
    server = headers(output_tokens=(6_000, 1_000))
    lim.finish(reservation, answered(request(output_tokens=100), server))
    assert lim.wait_time(request(output_tokens=1_000), 0.0) == 0
    assert lim.wait_time(request(output_tokens=1_001), 0.0) > 0


def test_server_headers_lower_the_room_never_raise_it() -> None:
    lim = limiter(ManualClock(), requests_per_minute=600)
    first = lim.take(request())
    lim.finish(first, answered(request(), headers(requests=(600, 10))))
    for _ in range(10):
        lim.take(request())
    assert lim.wait_time(request(), 0.0) > 0
    last = lim.take(request())
    lim.finish(last, answered(request(), headers(requests=(600, 600))))
    assert lim.wait_time(request(), 0.0) > 0


def test_a_lower_limit_from_the_server_replaces_the_configured_one() -> None:
    lim = limiter(ManualClock(), requests_per_minute=6_000)
    lim.finish(lim.take(request()), answered(request(), headers(requests=(60, 0))))
    assert lim.limit("requests") == 60
    assert lim.wait_time(request(), 0.0) == pytest.approx(1.0)


def test_a_configured_limit_above_the_servers_is_reported_once_naming_both(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lim = limiter(ManualClock(), tokens_per_minute=9_600_000)
    with caplog.at_level(logging.WARNING, logger="apiproc"):
        for _ in range(5):
            server = headers(tokens=(480_000, 480_000))
            lim.finish(lim.take(request(input_tokens=10)), answered(request(10), server))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "9,600,000" in warnings[0] and "480,000" in warnings[0]
    assert "haiku-4-5" in warnings[0] and "--max-tokens-per-minute" in warnings[0]


def test_a_configured_limit_below_the_servers_is_kept_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lim = limiter(ManualClock(), requests_per_minute=60)
    with caplog.at_level(logging.WARNING, logger="apiproc"):
        lim.finish(lim.take(request()), answered(request(), headers(requests=(4_000, 3_999))))
    assert lim.limit("requests") == 60
    assert not caplog.records


def test_unconfigured_dimensions_are_learned_from_headers() -> None:
    lim = limiter(ManualClock(), requests_per_minute=600)
    server = headers(output_tokens=(8_000, 100))
    lim.finish(lim.take(request()), answered(request(), server))
    assert lim.limit("output_tokens") == 8_000
    assert lim.wait_time(request(output_tokens=200), 0.0) == pytest.approx(0.75)


def test_learned_limits_follow_the_server_up_and_down() -> None:
    lim = limiter(ManualClock(), requests_per_minute=600)
    for server_limit in (8_000, 4_000, 16_000):
        server = headers(output_tokens=(server_limit, 0))
        lim.finish(lim.take(request()), answered(request(), server))
        assert lim.limit("output_tokens") == server_limit


def test_rate_limit_pauses_every_admission_until_retry_after() -> None:
    lim = limiter(ManualClock(), requests_per_minute=6_000)
    lim.finish(lim.take(request()), rate_limited(retry_after=7.0))
    assert lim.wait_time(request(), 0.0) == pytest.approx(7.0)
    assert lim.wait_time(request(), 7.0) == 0


# ---- progress(): usage while an answer streams in -------------------------------------------


def test_progress_charges_output_beyond_the_reservation_at_once() -> None:
    lim = limiter(ManualClock(), output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=100))
    lim.progress(reservation, request(output_tokens=2_000))
    assert lim.wait_time(request(output_tokens=4_000), 0.0) == 0
    assert lim.wait_time(request(output_tokens=4_001), 0.0) > 0


def test_progress_never_refunds_before_the_answer_ends() -> None:
    lim = limiter(ManualClock(), output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=3_000))
    lim.progress(reservation, request(output_tokens=10))
    lim.progress(reservation, request(output_tokens=2_000))
    assert lim.wait_time(request(output_tokens=3_000), 0.0) == 0
    assert lim.wait_time(request(output_tokens=3_001), 0.0) > 0


def test_finish_after_progress_settles_to_the_final_usage_once() -> None:
    lim = limiter(ManualClock(), output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=100))
    lim.progress(reservation, request(output_tokens=1_000))
    lim.progress(reservation, request(output_tokens=2_000))
    lim.finish(reservation, answered(request(output_tokens=2_500)))
    lim.progress(reservation, request(output_tokens=5_000))  # too late: ignored
    assert lim.wait_time(request(output_tokens=3_500), 0.0) == 0
    assert lim.wait_time(request(output_tokens=3_501), 0.0) > 0


# ---- waiting ------------------------------------------------------------------------------


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


class FrozenClock(ManualClock):
    """Time never moves: a waiter can only proceed if something wakes it."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


def test_a_refund_wakes_the_waiting_request_before_its_refill_time() -> None:
    lim = RateLimiter(Limits(output_tokens_per_minute=60), clock=FrozenClock(), ramp=False)
    held = lim.take(request(output_tokens=60))
    assert lim.wait_time(request(output_tokens=30), 0.0) == pytest.approx(30.0)

    async def scenario() -> None:
        waiter = asyncio.create_task(lim.acquire(request(output_tokens=30)))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiter.done()
        lim.finish(held, answered(request(output_tokens=0)))
        await asyncio.wait_for(waiter, timeout=5)

    asyncio.run(scenario())


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
        clock.time = now
        reservation = lim.take(request(input_tokens=cost))
        events.append((now, cost))
        actual = cost * used
        lim.finish(reservation, answered(request(input_tokens=actual)))
        events.append((now, actual - cost))  # the refund
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
    lim.finish(reservation, answered(request(output_tokens=3_500)))
    assert lim.wait_time(request(output_tokens=2_500), clock.now()) == 0
    assert lim.wait_time(request(output_tokens=2_501), clock.now()) > 0


def test_streamed_progress_below_the_reservation_refunds_nothing_before_it_settles() -> None:
    clock = ManualClock()
    lim = limiter(clock, output_tokens_per_minute=6_000)
    reservation = lim.take(request(output_tokens=4_000))
    lim.progress(reservation, request(output_tokens=500))
    assert lim.wait_time(request(output_tokens=2_001), clock.now()) > 0
    lim.finish(reservation, answered(request(output_tokens=500)))
    assert lim.wait_time(request(output_tokens=5_500), clock.now()) == 0


def test_input_estimates_matter_once_an_input_budget_is_drawn_a_quarter_down() -> None:
    clock = ManualClock()
    lim = limiter(
        clock, requests_per_minute=1_000, input_tokens_per_minute=8_000, output_tokens_per_minute=99
    )
    lim.take(request(input_tokens=1_000, output_tokens=99))  # the output budget is spent
    assert not lim.tokens_within_reach
    lim.take(request(input_tokens=1_000))  # 6,000 of 8,000 left: three quarters
    assert not lim.tokens_within_reach
    lim.take(request(input_tokens=1))
    assert lim.tokens_within_reach
    clock.advance(60.0)
    lim.take(request(input_tokens=1))  # refilled, and it stays so for the run
    assert lim.tokens_within_reach


def test_waiting_for_input_tokens_makes_estimates_matter() -> None:
    clock = ManualClock()
    lim = limiter(clock, requests_per_minute=1_000, tokens_per_minute=4_000)
    assert lim.wait_time(request(input_tokens=5_000), clock.now()) == 0  # alone, on a full bucket
    lim.waits(request(input_tokens=3_000, output_tokens=2_000), clock.now())
    assert not lim.tokens_within_reach  # a full bucket has room for it
    lim.take(request(input_tokens=500, output_tokens=400))  # 3,100 left: above 3,000
    assert not lim.tokens_within_reach
    lim.waits(request(input_tokens=2_000, output_tokens=1_500), clock.now())
    assert lim.tokens_within_reach


@given(
    levels=st.lists(st.floats(min_value=-500, max_value=2_000), min_size=4, max_size=4),
    needs=st.lists(st.integers(min_value=0, max_value=2_500), min_size=3, max_size=3),
    burst=st.floats(min_value=0.05, max_value=1.0),
    elapsed=st.floats(min_value=0, max_value=5.0),
)
@settings(max_examples=300, deadline=None)
def test_taking_at_once_agrees_with_the_wait_time_and_with_take(
    levels: list[float], needs: list[int], burst: float, elapsed: float
) -> None:
    def buckets() -> Buckets:
        made = Buckets()
        for dimension, level in zip(DIMENSIONS, levels, strict=True):
            made.add(Bucket(dimension, 2_000.0, level, 0.0))
        return made

    cost = Cost(*needs)
    fast, slow = buckets(), buckets()
    try:
        taken = fast.take_if_room(cost, burst, elapsed)
    except RequestTooLarge:
        with pytest.raises(RequestTooLarge):
            slow.check(cost)
        return
    fits = slow.wait_time(cost, burst, elapsed) == 0
    assert taken == fits
    if fits:
        slow.take(cost)
    for bucket in [*fast, *slow]:  # the same state, whichever buckets were refilled
        bucket.refill(elapsed, burst)
    assert [b.level for b in fast] == pytest.approx([b.level for b in slow])


@given(
    levels=st.lists(st.floats(min_value=-500, max_value=2_000), min_size=4, max_size=4),
    charged=st.lists(st.integers(min_value=0, max_value=2_500), min_size=3, max_size=3),
    used=st.lists(st.integers(min_value=0, max_value=2_500), min_size=3, max_size=3),
    burst=st.floats(min_value=0.05, max_value=1.0),
    elapsed=st.floats(min_value=-1.0, max_value=5.0),
)
@settings(max_examples=300, deadline=None)
def test_settling_is_a_refill_then_the_refund_up_to_a_full_bucket(
    levels: list[float], charged: list[int], used: list[int], burst: float, elapsed: float
) -> None:
    settled = Buckets()
    for dimension, level in zip(DIMENSIONS, levels, strict=True):
        settled.add(Bucket(dimension, 2_000.0, level, 0.0))
    settled.settle(Cost(*charged), Cost(*used), burst, elapsed)
    charged_amounts, used_amounts = Cost(*charged).amounts(), Cost(*used).amounts()
    for bucket, level in zip(settled, levels, strict=True):
        alone = Bucket(bucket.dimension, 2_000.0, level, 0.0)
        alone.refill(elapsed, burst)
        delta = charged_amounts[alone.index] - used_amounts[alone.index]
        if delta > 0:
            expected = min(alone.level + delta, max(alone.level, burst * alone.limit))
        else:
            expected = alone.level + delta
        assert (bucket.level, bucket.stamp) == (expected, alone.stamp)  # exactly
