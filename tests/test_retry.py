"""Which answers are retried, which stop a request, which stop the run — and when."""

from __future__ import annotations

import json
import random

import pytest

from apiproc.providers import AnthropicProvider, Verdict
from apiproc.providers.http import retry_after
from apiproc.retry import backoff_delay

provider = AnthropicProvider(api_key="sk-test")


def error_body(kind: str, **extra: object) -> bytes:
    error = {"type": kind, "message": "the text is never consulted", **extra}
    return json.dumps({"type": "error", "error": error, "request_id": "req_1"}).encode()


@pytest.mark.parametrize(
    ("status", "kind", "verdict"),
    [
        (400, "invalid_request_error", Verdict.PERMANENT),
        (401, "authentication_error", Verdict.FATAL),
        (402, "billing_error", Verdict.FATAL),
        (403, "permission_error", Verdict.FATAL),
        (404, "not_found_error", Verdict.PERMANENT),
        (408, "timeout_error", Verdict.RETRY),
        (409, "conflict_error", Verdict.RETRY),
        (413, "request_too_large", Verdict.PERMANENT),
        (422, "invalid_request_error", Verdict.PERMANENT),
        (429, "rate_limit_error", Verdict.RETRY),
        (500, "api_error", Verdict.RETRY),
        (502, "api_error", Verdict.RETRY),
        (503, "api_error", Verdict.RETRY),
        (504, "timeout_error", Verdict.RETRY),
        (529, "overloaded_error", Verdict.RETRY),
    ],
)
def test_status_decides_the_verdict(status: int, kind: str, verdict: Verdict) -> None:
    outcome = provider.classify(status, {}, error_body(kind))
    assert outcome.verdict is verdict
    assert outcome.error is not None and outcome.error["type"] == kind
    assert outcome.request_id == "req_1"


def test_spend_limit_429_stops_the_run() -> None:
    body = error_body("rate_limit_error", details={"error_code": "enforced_spend_limit_reached"})
    assert provider.classify(429, {}, body).verdict is Verdict.FATAL


def user_spend_limit(message: str, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


@pytest.mark.parametrize(
    "message",
    [
        "You have reached your specified API usage limits. You will regain access on ...",
        "You have reached your specified workspace API usage limits. ...",
    ],
)
def test_the_user_set_spend_limit_400_stops_the_run(message: str) -> None:
    assert provider.classify(400, {}, user_spend_limit(message)).verdict is Verdict.FATAL


def test_other_400s_about_usage_stay_permanent() -> None:
    other = user_spend_limit("max_tokens: You have reached your specified maximum")
    assert provider.classify(400, {}, other).verdict is Verdict.PERMANENT


def test_rate_limit_message_text_does_not_change_the_verdict() -> None:
    body = json.dumps(
        {"type": "error", "error": {"type": "api_error", "message": "Rate limit exceeded"}}
    ).encode()
    assert provider.classify(400, {}, body).verdict is Verdict.PERMANENT


@pytest.mark.parametrize(
    ("header", "verdict"), [("true", Verdict.RETRY), ("false", Verdict.PERMANENT)]
)
def test_x_should_retry_overrides_the_status(header: str, verdict: Verdict) -> None:
    status = 400 if header == "true" else 500
    outcome = provider.classify(status, {"x-should-retry": header}, error_body("api_error"))
    assert outcome.verdict is verdict


def test_a_non_json_502_from_a_proxy_is_retried() -> None:
    outcome = provider.classify(502, {"content-type": "text/html"}, b"<html>Bad gateway</html>")
    assert outcome.verdict is Verdict.RETRY
    assert "text/html" in outcome.error["message"]


def test_a_200_that_is_not_a_message_is_retried() -> None:
    assert provider.classify(200, {}, b"<html>oops</html>").verdict is Verdict.RETRY


def test_only_a_retryable_429_counts_as_rate_limited() -> None:
    assert provider.classify(429, {}, error_body("rate_limit_error")).rate_limited
    assert not provider.classify(529, {}, error_body("overloaded_error")).rate_limited


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({}) is None
    assert retry_after({"retry-after": "soon"}) is None


def test_server_retry_after_is_used_as_the_delay() -> None:
    assert backoff_delay(3, retry_after=2.5, rng=random.Random(1)) == 2.5


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 60.0)]:
        draws = [backoff_delay(attempt, None, rng) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling  # spread over the whole range
        assert min(draws) < 0.2 * ceiling
