"""The Anthropic Messages API: headers, answers, error classes, rate-limit headers.

    provider = AnthropicProvider(api_key=key, url="https://api.anthropic.com/v1/messages")
    problem = provider.validate(params)          # what the chosen anthropic-version refuses
    request = provider.request(params)           # url and body; session_headers on every one
    outcome = provider.classify(200, response_headers, response_bytes)
    decoder = provider.decoder(200, response_headers)  # for a text/event-stream answer

Retry decisions follow the HTTP status and the error's `type` and `x-should-retry` when
the server sends it; message text only for the user-set spend limit, which the API tells
apart in no other way. An `error` event inside a streamed 200 is judged as the status its
type stands for, so an `overloaded_error` is retried like a 529.

Which requests stream (`transport`): `plain` sends none, `stream` sends all, and `auto`
streams a line that asks for it (`"stream": true`) and one whose `max_tokens` could keep a
non-streaming answer past the timeout. That is the official SDK's rule with our timeout in
place of its ten minutes: it expects up to an hour per 128,000 output tokens, and some
models refuse long non-streaming answers outright (`MODEL_NONSTREAMING_TOKENS`).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

from apiproc.jsonio import dumps, loads
from apiproc.providers.anthropic_models import PRICES_AS_OF, model_facts, model_family
from apiproc.providers.anthropic_stream import MessageAssembler
from apiproc.providers.anthropic_versions import VERSION_2023, version_problem
from apiproc.providers.base import HttpRequest, ModelFacts, Outcome, ServerLimit, Usage, Verdict
from apiproc.providers.sse import SseParser

DEFAULT_URL = "https://api.anthropic.com/v1/messages"
# 2023-06-01 stays the default: it is still accepted, with no announced sunset, and
# it takes `temperature`, which many files carry; 2026-10-21 is one option away.
DEFAULT_VERSION = VERSION_2023
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
FATAL_STATUSES = frozenset({401, 402, 403})
# Error types of answers that may not recur later (the others answer the request itself).
TRANSIENT_ERROR_TYPES = frozenset(
    {"rate_limit_error", "overloaded_error", "api_error", "timeout_error", "conflict_error"}
)
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"
# The user-set (organisation or workspace) spend limit is a plain 400 invalid_request_error
# whose message is the only signal the API gives: "You have reached your specified API usage
# limits" or "... your specified workspace API usage limits".
USER_SPEND_LIMIT_START = "you have reached your specified"
USER_SPEND_LIMIT_WORDS = "api usage limits"
LONGEST_RETRY_AFTER = 600.0
DEFAULT_TIMEOUT = 600.0
# The SDK's worst case for a generation (`_calculate_nonstreaming_timeout`): an hour for
# 128,000 output tokens.
SECONDS_PER_OUTPUT_TOKEN = 3_600 / 128_000
# The SDK's MODEL_NONSTREAMING_TOKENS, by model family; it lists Opus 4.1 only under its
# cloud ids, but the model is the same, so it is capped here too.
NONSTREAMING_MAX_TOKENS = {"claude-opus-4": 8_192, "claude-opus-4-1": 8_192}
# The status an `error` event's type stands for, to judge it as that answer would be.
STATUS_OF_ERROR = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
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
        transport: str = "auto",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self.version = version
        self.transport = transport
        self.timeout = timeout
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
        if not self.streams(params):
            if "stream" in params:
                params = {key: value for key, value in params.items() if key != "stream"}
            return HttpRequest(self.url, self.body(params))
        return HttpRequest(
            self.url,
            self.body({**params, "stream": True}),
            headers={"accept": "text/event-stream"},
            stream=True,
            time_limit=max(self.timeout, _longest_generation(params)),
        )

    def streams(self, params: dict[str, Any]) -> bool:
        """Whether `params` are sent as a stream under this provider's transport."""
        if self.transport != "auto":
            return self.transport == "stream"
        if params.get("stream") is True:
            return True
        if _longest_generation(params) > self.timeout:
            return True
        cap = NONSTREAMING_MAX_TOKENS.get(model_family(str(params.get("model", ""))))
        return cap is not None and _max_tokens(params) > cap

    def body(self, params: dict[str, Any]) -> bytes:
        return dumps(params)

    def decoder(self, status: int, headers: Mapping[str, str]) -> AnthropicStreamDecoder | None:
        content_type = headers.get("content-type", "")
        if status != 200 or not content_type.startswith("text/event-stream"):
            return None
        return AnthropicStreamDecoder(headers)

    def model(self, model: str) -> ModelFacts:
        return model_facts(model)

    def transient_error(self, error_type: str) -> bool:
        return error_type in TRANSIENT_ERROR_TYPES

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


class AnthropicStreamDecoder:
    """One streamed answer: parses its events as they arrive and judges it at the end."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._server = server_limits(headers)
        self._request_id = headers.get("request-id")
        self._events = SseParser()
        self._message = MessageAssembler()

    def feed(self, chunk: bytes) -> Usage | None:
        reported = False
        for event in self._events.feed(chunk):
            if event.name == "ping":
                continue
            parsed = _json_or_none(event.data.encode())
            if parsed is None:
                self._message.broken = f"a {event.name} event whose data is not JSON"
                continue
            reported = self._message.apply(parsed) or reported
        message = self._message.message
        return parse_usage(message["usage"]) if reported and message is not None else None

    def finish(self) -> Outcome:
        assembled = self._message
        if assembled.error is not None:
            return self._failed(assembled.error)
        if assembled.broken is not None or not assembled.complete or assembled.message is None:
            reason = assembled.broken or "the stream ended before message_stop"
            return self._failed({"type": "api_error", "message": reason})
        message = assembled.message
        return Outcome(
            Verdict.SUCCESS,
            200,
            message=message,
            usage=parse_usage(message.get("usage")),
            request_id=self._request_id,
            server=self._server,
        )

    def _failed(self, error: dict[str, Any]) -> Outcome:
        status = STATUS_OF_ERROR.get(str(error.get("type")), 500)
        return Outcome(
            _verdict(status, {}, error),
            200,
            error=error,
            request_id=self._request_id,
            server=self._server,
        )


def _longest_generation(params: dict[str, Any]) -> float:
    """Seconds the SDK allows for generating `max_tokens` tokens in the worst case."""
    return _max_tokens(params) * SECONDS_PER_OUTPUT_TOKEN


def _max_tokens(params: dict[str, Any]) -> int:
    return _int(params.get("max_tokens"))


def _verdict(status: int, headers: Mapping[str, str], error: dict[str, Any]) -> Verdict:
    if status in FATAL_STATUSES:
        return Verdict.FATAL
    if status == 429 and _details_code(error) == SPEND_LIMIT_CODE:
        return Verdict.FATAL
    if status == 400 and _user_spend_limit(error):
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


def _user_spend_limit(error: dict[str, Any]) -> bool:
    """The 400 of a spend limit the user set: every further request would get it too."""
    message = str(error.get("message", "")).lower()
    return (
        error.get("type") == "invalid_request_error"
        and message.startswith(USER_SPEND_LIMIT_START)
        and USER_SPEND_LIMIT_WORDS in message
    )


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
