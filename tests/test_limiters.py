"""One limiter per model class behind `Limiters`, timed by a manual clock."""

from __future__ import annotations

import asyncio

import pytest
from limiter_helpers import answered, headers, request

from apiproc.clock import ManualClock
from apiproc.limiter import Limiters, Limits


def limiters(clock: ManualClock, **by_class: Limits) -> Limiters:
    return Limiters(Limits(requests_per_minute=60), by_class=by_class, clock=clock, ramp=False)


def test_an_empty_class_does_not_hold_up_another_class() -> None:
    clock = ManualClock()
    both = limiters(clock)

    async def scenario() -> None:
        for _ in range(60):
            await both.acquire("sonnet-4", request())
        await asyncio.wait_for(both.acquire("haiku-4-5", request()), timeout=5)

    asyncio.run(scenario())
    assert clock.now() == 0.0
    assert both.of("sonnet-4").wait_time(request(), 0.0) == pytest.approx(1.0)


def test_each_class_follows_only_its_own_headers() -> None:
    clock = ManualClock()
    both = limiters(clock)

    async def scenario() -> None:
        sonnet = await both.acquire("sonnet-4", request())
        both.finish(sonnet, answered(request(), headers(requests=(30, 0))))
        await asyncio.wait_for(both.acquire("haiku-4-5", request()), timeout=5)

    asyncio.run(scenario())
    assert clock.now() == 0.0
    assert both.of("sonnet-4").limit("requests") == 30
    assert both.of("haiku-4-5").limit("requests") == 60


class FrozenClock(ManualClock):
    """Time never moves: a waiter can only proceed if something wakes it."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


def test_within_a_class_first_come_first_served_while_others_flow() -> None:
    both = Limiters(
        Limits(input_tokens_per_minute=600), clock=FrozenClock(), ramp=False, discover=False
    )
    order: list[str] = []

    async def want(name: str, limit_class: str, tokens: float) -> None:
        await both.acquire(limit_class, request(input_tokens=tokens))
        order.append(name)

    async def scenario() -> None:
        held = await both.acquire("sonnet-4", request(input_tokens=600))
        big = asyncio.create_task(want("big", "sonnet-4", 500))
        await asyncio.sleep(0)
        small = asyncio.create_task(want("small", "sonnet-4", 10))
        haiku = asyncio.create_task(want("haiku", "haiku-4-5", 10))
        await asyncio.wait_for(haiku, timeout=5)
        assert not big.done() and not small.done()
        both.finish(held, answered(request(input_tokens=0)))  # all 600 come back
        await asyncio.wait_for(asyncio.gather(big, small), timeout=5)

    asyncio.run(scenario())
    assert order == ["haiku", "big", "small"]


def test_a_class_entry_sets_its_limits_and_the_flags_fill_the_rest() -> None:
    both = Limiters(
        Limits(requests_per_minute=60, output_tokens_per_minute=8_000),
        by_class={"haiku-4-5": Limits(requests_per_minute=240)},
        clock=ManualClock(),
    )
    assert both.of("haiku-4-5").limit("requests") == 240
    assert both.of("haiku-4-5").limit("output_tokens") == 8_000
    assert both.of("sonnet-4").limit("requests") == 60


def test_the_limit_shown_is_the_sum_over_classes() -> None:
    both = limiters(ManualClock(), **{"haiku-4-5": Limits(requests_per_minute=240)})
    both.of("haiku-4-5")
    both.of("sonnet-4")
    assert both.limit("requests") == 300
    assert both.limit("input_tokens") is None


def test_progress_and_finish_reach_the_reservations_own_class() -> None:
    clock = ManualClock()
    both = Limiters(Limits(output_tokens_per_minute=6_000), clock=clock, ramp=False)

    async def scenario() -> None:
        reservation = await both.acquire("haiku-4-5", request(output_tokens=100))
        both.progress(reservation, request(output_tokens=6_000))
        assert both.of("haiku-4-5").wait_time(request(output_tokens=1), 0.0) > 0
        assert both.of("sonnet-4").wait_time(request(output_tokens=6_000), 0.0) == 0
        both.finish(reservation, answered(request(output_tokens=50)))

    asyncio.run(scenario())
    assert both.of("haiku-4-5").wait_time(request(output_tokens=5_950), 0.0) == 0
