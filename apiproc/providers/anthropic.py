"""The Anthropic Messages API: headers, answers, error classes, rate-limit headers.

    provider = AnthropicProvider(api_key=key, url="https://api.anthropic.com/v1/messages")
    request = provider.request(params)           # url and body; session_headers on every one
    outcome = provider.classify(200, response_headers, response_bytes)

Retry decisions follow the HTTP status and the error's `type`, never its message text,
and `x-should-retry` when the server sends it. The answer rules here (`message_outcome`,
`messages_verdict`, `parse_usage`) also serve Claude on Bedrock and Vertex, which answer
with the same message and, for model errors, the same error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apiproc.jsonio import dumps
from apiproc.providers.anthropic_models import PRICES_AS_OF, model_facts
from apiproc.providers.base import HttpRequest, ModelFacts, Outcome, ServerLimit, Usage, Verdict
from apiproc.providers.http import count, json_or_none, not_json_error, number, retry_after

DEFAULT_URL = "https://api.anthropic.com/v1/messages"
DEFAULT_VERSION = "2023-06-01"
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
FATAL_STATUSES = frozenset({401, 402, 403})
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"
# (limiter dimension, limit header, remaining header)
RATE_LIMIT_HEADERS = tuple(
    (dimension, f"anthropic-ratelimit-{name}-limit", f"anthropic-ratelimit-{name}-remaining")
    for name, dimension in (
        ("requests", "requests"),
        ("input-tokens", "input_tokens"),
        ("output-tokens", "output_tokens"),
        ("tokens", "tokens"),
    )
)


class AnthropicProvider:
    """The Messages API at api.anthropic.com (or the bundled simulator)."""

    name = "anthropic"
    prices_as_of = PRICES_AS_OF
    output_accounting = "generated"  # the 2026 rate-limit docs: generated tokens only
    cache_breakpoints = True

    def __init__(
        self,
        api_key: str,
        url: str = DEFAULT_URL,
        version: str = DEFAULT_VERSION,
        betas: tuple[str, ...] = (),
    ) -> None:
        self.url = url
        self._headers = {
            "x-api-key": api_key,
            "anthropic-version": version,
            "content-type": "application/json",
            "accept": "application/json",
        }
        if betas:
            self._headers["anthropic-beta"] = ",".join(betas)

    @property
    def session_headers(self) -> Mapping[str, str]:
        return self._headers

    def request(self, params: dict[str, Any]) -> HttpRequest:
        return HttpRequest(self.url, self.body(params))

    def body(self, params: dict[str, Any]) -> bytes:
        return dumps(params)

    def model(self, model: str) -> ModelFacts:
        return model_facts(model)

    def validate(self, params: dict[str, Any]) -> str | None:
        return validate_messages(params)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        """Turn one HTTP answer into an Outcome."""
        parsed = json_or_none(body)
        server = server_limits(headers)
        request_id = headers.get("request-id")
        if status == 200:
            return message_outcome(parsed, headers, request_id, server)
        error = api_error(parsed) or not_json_error(status, headers)
        if isinstance(parsed, dict) and isinstance(parsed.get("request_id"), str):
            request_id = parsed["request_id"]
        outcome = Outcome(
            messages_verdict(status, headers, error),
            status,
            error=error,
            request_id=request_id,
            retry_after=retry_after(headers),
            server=server,
        )
        outcome.rate_limited = status == 429 and outcome.verdict is Verdict.RETRY
        return outcome


def validate_messages(params: dict[str, Any]) -> str | None:
    """Why `params` cannot be a Messages request, or None if it looks sound."""
    from apiproc.jobs import validate_params  # imported late: jobs reads its types from here

    return validate_params(params)


def message_outcome(
    parsed: Any,
    headers: Mapping[str, str],
    request_id: str | None,
    server: dict[str, ServerLimit] | None = None,
) -> Outcome:
    """A 200 answer, which should hold a Messages API `message`."""
    if not isinstance(parsed, dict) or parsed.get("type") != "message":
        return Outcome(
            Verdict.RETRY,
            200,
            error=not_json_error(200, headers),
            request_id=request_id,
            server=server or {},
        )
    return Outcome(
        Verdict.SUCCESS,
        200,
        message=parsed,
        usage=parse_usage(parsed.get("usage")),
        request_id=request_id,
        server=server or {},
    )


def messages_verdict(status: int, headers: Mapping[str, str], error: dict[str, Any]) -> Verdict:
    """What an error answer of the Messages API means for the request and the run."""
    if status in FATAL_STATUSES:
        return Verdict.FATAL
    if status == 429 and _details_code(error) == SPEND_LIMIT_CODE:
        return Verdict.FATAL
    should_retry = headers.get("x-should-retry")
    if should_retry == "true":
        return Verdict.RETRY
    if should_retry == "false":
        return Verdict.PERMANENT
    if status in RETRYABLE_STATUSES or status >= 500:
        return Verdict.RETRY
    return Verdict.PERMANENT


def parse_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    creation = usage.get("cache_creation")
    write_1h = creation.get("ephemeral_1h_input_tokens") if isinstance(creation, dict) else 0
    return Usage(
        input_tokens=count(usage.get("input_tokens")),
        output_tokens=count(usage.get("output_tokens")),
        cache_creation_input_tokens=count(usage.get("cache_creation_input_tokens")),
        cache_read_input_tokens=count(usage.get("cache_read_input_tokens")),
        cache_write_1h_tokens=count(write_1h),
    )


def server_limits(headers: Mapping[str, str]) -> dict[str, ServerLimit]:
    """The `anthropic-ratelimit-*-limit/-remaining` headers, by limiter dimension."""
    found: dict[str, ServerLimit] = {}
    for dimension, limit_header, remaining_header in RATE_LIMIT_HEADERS:
        limit = number(headers.get(limit_header))
        remaining = number(headers.get(remaining_header))
        if limit is not None or remaining is not None:
            found[dimension] = ServerLimit(limit=limit, remaining=remaining)
    return found


def api_error(parsed: Any) -> dict[str, Any] | None:
    """The `error` object of a Messages API error body, if that is what `parsed` is."""
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        if "type" in error:
            return error
    return None


def _details_code(error: dict[str, Any]) -> str | None:
    details = error.get("details")
    return details.get("error_code") if isinstance(details, dict) else None
