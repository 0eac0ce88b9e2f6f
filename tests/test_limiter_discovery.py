"""Learning a class's limits from the server's headers, and the fallback without them."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from limiter_helpers import answered, headers, request

from apiproc.clock import ManualClock
from apiproc.limiter import AttemptReport, Limits, RateLimiter
from apiproc.limiter.discovery import DISCOVERY_ATTEMPTS, FALLBACK_LIMITS, Discovery, Step
from apiproc.providers import AnthropicProvider


def discovering(clock: ManualClock) -> RateLimiter:
    return RateLimiter(Limits(), clock=clock, ramp=False, discover=True, name="sonnet-4")


def no_answer() -> AttemptReport:
    """A dropped connection, a bare 529 or a proxy's HTML page."""
    return AttemptReport(used=None, api_answer=False)


def test_without_known_limits_one_probe_goes_first_then_headers_set_the_pace() -> None:
    clock = ManualClock()
    lim = discovering(clock)

    async def scenario() -> None:
        probe = await lim.acquire(request())
        second = asyncio.create_task(lim.acquire(request()))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not second.done()  # held until the probe's headers arrive
        lim.finish(probe, answered(request(), headers(requests=(60, 0))))
        await asyncio.wait_for(second, timeout=5)

    asyncio.run(scenario())
    assert clock.now() == pytest.approx(1.0)
    assert lim.limit("requests") == 60


def test_real_answers_without_headers_lead_to_the_fallback_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lim = discovering(ManualClock())

    async def scenario() -> None:
        for _ in range(DISCOVERY_ATTEMPTS):
            assert lim.limit("requests") is None
            lim.finish(await lim.acquire(request()), answered(request()))

    with caplog.at_level(logging.WARNING, logger="apiproc"):
        asyncio.run(scenario())
    assert lim.limit("requests") == FALLBACK_LIMITS["requests"]
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "--max-requests-per-minute" in warning and "sonnet-4" in warning


def test_answers_that_are_not_the_apis_do_not_count_toward_the_fallback() -> None:
    discovery = Discovery(active=True)
    for _ in range(DISCOVERY_ATTEMPTS * 3):
        assert discovery.answered(told=False, api_answer=False) is Step.WAIT
    assert discovery.active
    assert discovery.answered(told=True, api_answer=True) is Step.LEARNED
    assert not discovery.active


def test_after_an_answer_that_is_not_the_apis_the_next_request_probes_alone() -> None:
    lim = discovering(ManualClock())

    async def scenario() -> None:
        lim.finish(await lim.acquire(request()), no_answer())
        probe = await lim.acquire(request())
        third = asyncio.create_task(lim.acquire(request()))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not third.done()
        lim.finish(probe, answered(request(), headers(requests=(600, 599))))
        await asyncio.wait_for(third, timeout=5)

    asyncio.run(scenario())
    assert lim.limit("requests") == 600


@pytest.mark.parametrize("server_limit", [4_000, 20])
def test_headers_after_the_fallback_replace_it_upward_and_downward(server_limit: int) -> None:
    clock = ManualClock()
    lim = discovering(clock)

    async def scenario() -> None:
        for _ in range(DISCOVERY_ATTEMPTS):
            lim.finish(await lim.acquire(request()), answered(request()))
        assert lim.limit("requests") == FALLBACK_LIMITS["requests"]
        later = await lim.acquire(request())
        remaining = server_limit - 1
        lim.finish(later, answered(request(), headers(requests=(server_limit, remaining))))

    asyncio.run(scenario())
    assert lim.limit("requests") == server_limit


def api_error(kind: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": "..."}}).encode()


MESSAGE = json.dumps(
    {"type": "message", "content": [], "usage": {"input_tokens": 1, "output_tokens": 1}}
).encode()


@pytest.mark.parametrize(
    ("status", "body", "counts"),
    [
        (200, MESSAGE, True),
        (400, api_error("invalid_request_error"), True),
        (429, api_error("rate_limit_error"), True),
        (413, api_error("request_too_large"), False),  # Cloudflare, before the API
        (500, api_error("api_error"), False),
        (529, api_error("overloaded_error"), False),
        (502, b"<html>Bad gateway</html>", False),
        (200, b"<html>captive portal</html>", False),
    ],
)
def test_only_the_apis_own_2xx_and_4xx_answers_count_toward_the_fallback(
    status: int, body: bytes, counts: bool
) -> None:
    outcome = AnthropicProvider("sk-test").classify(status, {}, body)
    assert outcome.api_answer is counts
