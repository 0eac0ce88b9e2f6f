"""The Anthropic Messages API: headers, answers, error classes, rate-limit headers.

    provider = AnthropicProvider(api_key=key, url="https://api.anthropic.com/v1/messages")
    problem = provider.validate(params)          # what the chosen anthropic-version refuses
    request = provider.request(params)           # url and body; session_headers on every one
    outcome = provider.classify(200, response_headers, response_bytes)

Retry decisions follow the HTTP status and the error's `type`, never its message text,
and `x-should-retry` when the server sends it.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

from apiproc.jsonio import dumps, loads
from apiproc.providers.anthropic_models import PRICES_AS_OF, model_facts
from apiproc.providers.anthropic_versions import VERSION_2023, version_problem
from apiproc.providers.base import HttpRequest, ModelFacts, Outcome, ServerLimit, Usage, Verdict

DEFAULT_URL = "https://api.anthropic.com/v1/messages"
# 2023-06-01 stays the default: it is still accepted, with no announced sunset, and
# it takes `temperature`, which many files carry; 2026-10-21 is one option away.
DEFAULT_VERSION = VERSION_2023
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
FATAL_STATUSES = frozenset({401, 402, 403})
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"
LONGEST_RETRY_AFTER = 600.0
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

    def __init__(
        self,
        api_key: str,
        url: str = DEFAULT_URL,
        version: str = DEFAULT_VERSION,
        betas: tuple[str, ...] = (),
    ) -> None:
        self.url = url
        self.version = version
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

    def validate(self, params: dict[str, Any]) -> str | None:
        return version_problem(params, self.version)

    def request(self, params: dict[str, Any]) -> HttpRequest:
        return HttpRequest(self.url, self.body(params))

    def body(self, params: dict[str, Any]) -> bytes:
        return dumps(params)

    def model(self, model: str) -> ModelFacts:
        return model_facts(model)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        """Turn one HTTP answer into an Outcome."""
        parsed = _json_or_none(body)
        server = server_limits(headers)
        request_id = headers.get("request-id")
        if status == 200:
            if not isinstance(parsed, dict) or parsed.get("type") != "message":
                return Outcome(
                    Verdict.RETRY,
                    status,
                    error=_not_json_error(status, headers),
                    request_id=request_id,
                    server=server,
                )
            return Outcome(
                Verdict.SUCCESS,
                status,
                message=parsed,
                usage=parse_usage(parsed.get("usage")),
                request_id=request_id,
                server=server,
            )
        error = _api_error(parsed) or _not_json_error(status, headers)
        if isinstance(parsed, dict) and isinstance(parsed.get("request_id"), str):
            request_id = parsed["request_id"]
        outcome = Outcome(
            _verdict(status, headers, error),
            status,
            error=error,
            request_id=request_id,
            retry_after=retry_after(headers),
            server=server,
        )
        outcome.rate_limited = status == 429 and outcome.verdict is Verdict.RETRY
        return outcome


def _verdict(status: int, headers: Mapping[str, str], error: dict[str, Any]) -> Verdict:
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
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        cache_creation_input_tokens=_int(usage.get("cache_creation_input_tokens")),
        cache_read_input_tokens=_int(usage.get("cache_read_input_tokens")),
        cache_write_1h_tokens=_int(write_1h),
    )


def server_limits(headers: Mapping[str, str]) -> dict[str, ServerLimit]:
    """The `anthropic-ratelimit-*-limit/-remaining` headers, by limiter dimension."""
    found: dict[str, ServerLimit] = {}
    for dimension, limit_header, remaining_header in RATE_LIMIT_HEADERS:
        limit = _float(headers.get(limit_header))
        remaining = _float(headers.get(remaining_header))
        if limit is not None or remaining is not None:
            found[dimension] = ServerLimit(limit=limit, remaining=remaining)
    return found


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, else `retry-after`."""
    milliseconds = _float(headers.get("retry-after-ms"))
    if milliseconds is not None:
        seconds: float | None = milliseconds / 1000.0
    else:
        seconds = _retry_after_seconds(headers.get("retry-after"))
    if seconds is None or seconds <= 0:
        return None
    return min(seconds, LONGEST_RETRY_AFTER)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    number = _float(value)
    if number is not None:
        return number
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _api_error(parsed: Any) -> dict[str, Any] | None:
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        if "type" in error:
            return error
    return None


def _not_json_error(status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    kind = headers.get("content-type", "unknown content type").split(";")[0]
    return {
        "type": "api_error",
        "message": f"HTTP {status} with a body that is not an API answer ({kind})",
    }


def _details_code(error: dict[str, Any]) -> str | None:
    details = error.get("details")
    return details.get("error_code") if isinstance(details, dict) else None


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return loads(body)
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
