"""When an answer's rate-limit figures are read: every answer near a limit, and otherwise
once every FIGURES_EVERY seconds. Timed by a manual clock: no test here sleeps."""

from __future__ import annotations

import json

from limiter_helpers import answered, headers, limiter, request

from apiproc.clock import ManualClock
from apiproc.limiter import Limits, RateLimiter
from apiproc.limiter.discovery import DISCOVERY_ATTEMPTS
from apiproc.limiter.limiter import FIGURES_EVERY
from apiproc.providers.anthropic import AnthropicProvider

FAR = {"requests_per_minute": 1e9, "input_tokens_per_minute": 1e12}


def test_far_from_every_limit_the_figures_are_read_once_every_interval() -> None:
    clock = ManualClock()
    lim = limiter(clock, **FAR)
    assert lim.wants_figures()  # nothing read yet
    lim.finish(lim.take(request(10)), answered(request(10), headers(requests=(1e9, 1e9 - 1))))
    clock.advance(FIGURES_EVERY / 2)
    assert not lim.wants_figures()
    lim.finish(lim.take(request(10)), answered(request(10)))  # an answer read without them
    clock.advance(FIGURES_EVERY / 2)
    assert lim.wants_figures()


def test_every_answers_figures_are_read_while_a_request_waits_for_the_burst() -> None:
    clock = ManualClock()
    lim = limiter(clock, ramp=True, requests_per_minute=600)
    lim.finish(lim.take(request()), answered(request(), headers(requests=(600, 599))))
    assert not lim.wants_figures()
    lim.waits(request(), clock.now())  # the burst binds: the next success may widen it
    assert lim.wants_figures()


def test_every_answers_figures_are_read_once_an_input_budget_comes_within_reach() -> None:
    clock = ManualClock()
    lim = limiter(clock, requests_per_minute=1e9, input_tokens_per_minute=8_000)
    lim.finish(lim.take(request(100)), answered(request(100), headers(requests=(1e9, 1e9))))
    assert not lim.wants_figures()
    lim.take(request(2_500))  # 5,400 of 8,000 left: below three quarters
    assert lim.wants_figures()


def test_answers_are_read_until_the_server_tells_its_figures_even_after_a_fallback() -> None:
    clock = ManualClock()
    lim = RateLimiter(Limits(), clock=clock, discover=True)
    for _ in range(DISCOVERY_ATTEMPTS):  # real answers without rate-limit headers
        assert lim.wants_figures()
        lim.finish(lim.take(request()), answered(request()))
        clock.advance(FIGURES_EVERY / 10)
    assert not lim.discovery.active  # fallen back to the stand-in limits
    assert lim.wants_figures()  # so that figures sent later are seen at once
    lim.finish(lim.take(request()), answered(request(), headers(requests=(600, 599))))
    assert lim.limit("requests") == 600
    assert not lim.wants_figures()


def test_a_success_read_without_figures_reports_none_and_an_error_always_does() -> None:
    provider = AnthropicProvider("sk-test")
    figures = {
        "anthropic-ratelimit-requests-limit": "600",
        "anthropic-ratelimit-requests-remaining": "0",
    }
    message = {"type": "message", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}
    success = provider.classify(200, figures, json.dumps(message).encode(), figures=False)
    assert success.server == {} and success.usage is not None
    assert provider.classify(200, figures, json.dumps(message).encode()).server != {}
    refusal = json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "x"}})
    limited = provider.classify(429, figures, refusal.encode(), figures=False)
    assert limited.server["requests"].remaining == 0
