"""The Anthropic Messages API: headers, answers, error classes, rate-limit headers.

    provider = AnthropicProvider(api_key=key, url="https://api.anthropic.com/v1/messages")
    problem = provider.validate(params)          # what the chosen anthropic-version refuses
    request = provider.request(params)           # url and body; session_headers on every one
    outcome = provider.classify(200, response_headers, response_bytes)
    decoder = provider.decoder(200, response_headers)  # for a text/event-stream answer

Retry decisions follow the HTTP status and the error's `type` and `x-should-retry` when
the server sends it; message text only for the user-set spend limit, which the API tells
apart in no other way. An `error` event inside a streamed 200 is judged as the status its
type stands for, so an `overloaded_error` is retried like a 529. The rules here for a body
(`validate_messages`) and an answer (`message_outcome`, `messages_verdict`, `parse_usage`)
also serve Claude on Bedrock and Vertex, which take the same body and answer with the same
message and, for model errors, the same error body.

Which requests stream (`transport`): `plain` sends none, `stream` sends all, and `auto`
streams a line that asks for it (`"stream": true`) and one whose `max_tokens` could keep a
non-streaming answer past the timeout. That is the official SDK's rule with our timeout in
place of its ten minutes: it expects up to an hour per 128,000 output tokens, and some
models refuse long non-streaming answers outright (`MODEL_NONSTREAMING_TOKENS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apiproc.jsonio import dumps
from apiproc.providers.anthropic_models import PRICES_AS_OF, model_facts, model_family
from apiproc.providers.anthropic_stream import MessageAssembler
from apiproc.providers.anthropic_versions import VERSION_2023, VERSION_2026, version_problem
from apiproc.providers.base import HttpRequest, ModelFacts, Outcome, ServerLimit, Usage, Verdict
from apiproc.providers.http import (
    count,
    from_the_api,
    json_or_none,
    messages_problem,
    not_json_error,
    number,
    retry_after,
    retry_verdict,
)
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
ROLES = ("user", "assistant")
# The user-set (organisation or workspace) spend limit is a plain 400 invalid_request_error
# whose message is the only signal the API gives: "You have reached your specified API usage
# limits" or "... your specified workspace API usage limits".
USER_SPEND_LIMIT_START = "you have reached your specified"
USER_SPEND_LIMIT_WORDS = "api usage limits"
DEFAULT_TIMEOUT = 600.0
# The SDK's worst case for a generation (`_calculate_nonstreaming_timeout`): an hour for
# 128,000 output tokens.
SECONDS_PER_OUTPUT_TOKEN = 3_600 / 128_000
# The SDK's MODEL_NONSTREAMING_TOKENS, by model family; it lists Opus 4.1 only under its
# cloud ids, but the model is the same, so it is capped here too.
NONSTREAMING_MAX_TOKENS = {"claude-opus-4": 8_192, "claude-opus-4-1": 8_192}
SMALLEST_NONSTREAMING_CAP = min(NONSTREAMING_MAX_TOKENS.values())
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
    output_accounting = "generated"  # the 2026 rate-limit docs: generated tokens only
    cache_breakpoints = True

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
        problem = validate_messages(params)
        if problem is None and self.version == VERSION_2026:  # the one version refusing more
            return version_problem(params, self.version)
        return problem

    def request(self, params: dict[str, Any]) -> HttpRequest:
        if not self.streams(params):
            if "stream" in params:
                params = {key: value for key, value in params.items() if key != "stream"}
            return HttpRequest(self.url, dumps(params))
        return HttpRequest(
            self.url,
            dumps({**params, "stream": True}),
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
        max_tokens = _max_tokens(params)
        if max_tokens * SECONDS_PER_OUTPUT_TOKEN > self.timeout:
            return True
        if max_tokens <= SMALLEST_NONSTREAMING_CAP:
            return False  # within every model's cap, without looking the model up
        cap = NONSTREAMING_MAX_TOKENS.get(model_family(str(params.get("model", ""))))
        return cap is not None and max_tokens > cap

    def decoder(self, status: int, headers: Mapping[str, str]) -> AnthropicStreamDecoder | None:
        if status != 200 or not headers.get("content-type", "").startswith("text/event-stream"):
            return None
        return AnthropicStreamDecoder(headers)

    def model(self, model: str) -> ModelFacts:
        return model_facts(model)

    def transient_error(self, error_type: str) -> bool:
        return error_type in TRANSIENT_ERROR_TYPES

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, figures: bool = True
    ) -> Outcome:
        """Turn one HTTP answer into an Outcome (a success's rate-limit figures only if
        `figures`; an error's always)."""
        parsed = json_or_none(body)
        request_id = headers.get("request-id")
        if status == 200:
            server = server_limits(headers) if figures else {}
            return message_outcome(parsed, headers, request_id, server)
        server = server_limits(headers)
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
            api_answer=_from_the_api(status, parsed),
        )
        outcome.rate_limited = status == 429 and outcome.verdict is Verdict.RETRY
        return outcome


def _from_the_api(status: int, parsed: Any) -> bool:
    """A 4xx JSON error the API itself sent (a 413 comes from Cloudflare, before the API)."""
    return from_the_api(status, api_error(parsed))


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
            parsed = json_or_none(event.data.encode())
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
            api_answer=True,
        )

    def _failed(self, error: dict[str, Any]) -> Outcome:
        status = STATUS_OF_ERROR.get(str(error.get("type")), 500)
        return Outcome(
            messages_verdict(status, {}, error),
            200,
            error=error,
            request_id=self._request_id,
            server=self._server,
        )


def _longest_generation(params: dict[str, Any]) -> float:
    """Seconds the SDK allows for generating `max_tokens` tokens in the worst case."""
    return _max_tokens(params) * SECONDS_PER_OUTPUT_TOKEN


def _max_tokens(params: dict[str, Any]) -> int:
    return count(params.get("max_tokens"))


def validate_messages(params: dict[str, Any]) -> str | None:
    """Why `params` cannot be a Messages request (max_tokens, roles, content), or None."""
    return None if _plainly_sound(params) else _messages_refusal(params)


def _messages_refusal(params: dict[str, Any]) -> str | None:
    """`validate_messages` the long way, which says what is wrong."""
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        return "max_tokens: must be a non-negative integer"
    return messages_problem(params.get("messages"), _message_problem)


def _plainly_sound(params: dict[str, Any]) -> bool:
    """The usual request, in one pass and by exact types: True only where
    `validate_messages` finds nothing; anything else is left to it to explain."""
    max_tokens = params.get("max_tokens")
    messages = params.get("messages")
    if type(max_tokens) is not int or max_tokens < 0 or type(messages) is not list:
        return False
    for message in messages:
        if (
            type(message) is not dict
            or message.get("role") not in ROLES
            or type(message.get("content")) not in (str, list)
        ):
            return False
    return bool(messages)


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, dict):
        return "must be an object with role and content"
    if message.get("role") not in ROLES:
        return "role must be 'user' or 'assistant'"
    content = message.get("content")
    if not isinstance(content, (str, list)):
        return "content must be a string or a list of content blocks"
    return None


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
        api_answer=True,
    )


def messages_verdict(status: int, headers: Mapping[str, str], error: dict[str, Any]) -> Verdict:
    """What an error answer of the Messages API means for the request and the run."""
    if status in FATAL_STATUSES:
        return Verdict.FATAL
    if status == 429 and _details_code(error) == SPEND_LIMIT_CODE:
        return Verdict.FATAL
    if status == 400 and _user_spend_limit(error):
        return Verdict.FATAL
    return retry_verdict(status, headers, RETRYABLE_STATUSES)


def parse_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    get = usage.get
    # A token count is an int (not a bool, which is an int too); anything else counts 0.
    # Inline rather than `count()`: five calls per answer.
    creation = get("cache_creation")
    write_1h = creation.get("ephemeral_1h_input_tokens") if type(creation) is dict else 0
    input_tokens = get("input_tokens")
    output_tokens = get("output_tokens")
    written = get("cache_creation_input_tokens")
    read = get("cache_read_input_tokens")
    return Usage(
        input_tokens if type(input_tokens) is int else 0,
        output_tokens if type(output_tokens) is int else 0,
        written if type(written) is int else 0,
        read if type(read) is int else 0,
        write_1h if type(write_1h) is int else 0,
    )


def server_limits(headers: Mapping[str, str]) -> dict[str, ServerLimit]:
    """The `anthropic-ratelimit-*-limit/-remaining` headers, by limiter dimension."""
    found: dict[str, ServerLimit] = {}
    get = headers.get
    for dimension, limit_header, remaining_header in RATE_LIMIT_HEADERS:
        limit_text = get(limit_header)
        remaining_text = get(remaining_header)
        if limit_text is None and remaining_text is None:
            continue  # most answers lack some dimensions: no parsing for them
        try:  # both figures, as they usually are
            found[dimension] = ServerLimit(float(limit_text), float(remaining_text))  # type: ignore[arg-type]
            continue
        except (TypeError, ValueError):
            pass
        limit, remaining = number(limit_text), number(remaining_text)
        if limit is not None or remaining is not None:
            found[dimension] = ServerLimit(limit, remaining)
    return found


def api_error(parsed: Any) -> dict[str, Any] | None:
    """The `error` object of a Messages API error body, if that is what `parsed` is."""
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        if "type" in error:
            return error
    return None


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
