"""OpenAI Chat Completions, at api.openai.com or any compatible server (vLLM, llama-stack, ...).

    provider = OpenAIProvider(api_key=key, url="http://localhost:8000/v1")
    request = provider.request(params)     # POST {base}/chat/completions, Authorization: Bearer
    outcome = provider.classify(429, response_headers, response_bytes)

Facts from shared/reference/anthropic-api.md §H. Rate limits come as `x-ratelimit-*`
headers: requests per minute and one combined tokens-per-minute budget, with resets as
durations such as `6m0s` or `20ms`. Errors are `{"error": {"message", "type", "param",
"code"}}`; the retry rules are those of the official SDK (408, 409, 429 and 5xx are
transient, `x-should-retry` decides first), except that `insufficient_quota` ends the run:
no request will succeed until someone pays. Usage is `prompt_tokens`, of which
`prompt_tokens_details.cached_tokens` were read from the prompt cache.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from apiproc.jsonio import dumps
from apiproc.providers.base import HttpRequest, ModelFacts, Outcome, ServerLimit, Usage, Verdict
from apiproc.providers.http import (
    capped_wait,
    count,
    from_the_api,
    json_or_none,
    messages_problem,
    not_json_error,
    number,
    retry_verdict,
)
from apiproc.providers.http import retry_after as retry_after_header

DEFAULT_BASE_URL = "https://api.openai.com/v1"
CHAT_PATH = "/chat/completions"
RETRYABLE_STATUSES = frozenset({408, 409, 429})
FATAL_STATUSES = frozenset({401, 403})
# 429 "You exceeded your current quota": not retryable (§H.4).
FATAL_CODES = frozenset({"insufficient_quota"})
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Error types of answers that may not recur later: rate limits (by budget) and the server's
# own failures; the others answer the request itself.
TRANSIENT_ERROR_TYPES = frozenset({"requests", "tokens", "server_error", "api_error"})
# (limiter dimension, header suffix)
RATE_LIMIT_DIMENSIONS = (("requests", "requests"), ("tokens", "tokens"))
# A per-minute budget is whole again within a minute; a longer reset is a longer budget
# (per day) that ran out, and nothing will pass before it.
MINUTE = 60.0
# Model ids whose tokenizer is OpenAI's (cl100k or o200k), which count about as tiktoken's
# cl100k does; other models served this way have tokenizers of their own.
OPENAI_TOKENIZER_PREFIXES = ("gpt-", "chatgpt-", "o1", "o3", "o4", "text-", "davinci", "babbage")
OPENAI_TOKEN_RATIO = 1.0
UNKNOWN_TOKEN_RATIO = 1.2

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def chat_url(url: str | None) -> str:
    """The Chat Completions URL for a base URL (`.../v1`) or the endpoint itself."""
    url = (url or DEFAULT_BASE_URL).rstrip("/")
    if urlsplit(url).path.endswith(CHAT_PATH):
        return url
    return url + CHAT_PATH


def base_url(url: str | None) -> str:
    """The API's base URL (`.../v1`), for its other endpoints (files, batches)."""
    chat = chat_url(url)
    return chat[: -len(CHAT_PATH)]


class OpenAIProvider:
    """Chat Completions at an OpenAI-compatible base URL."""

    name = "openai"
    prices_as_of = ""
    # Guess from a secondary quote of the rate-limit guide (§H.1): the tokens budget is
    # charged with max_tokens when the request starts.
    output_accounting = "max_tokens"
    cache_breakpoints = False

    def __init__(self, api_key: str, url: str | None = None) -> None:
        self.url = chat_url(url)
        self._headers = {
            "authorization": f"Bearer {api_key}",
            "content-type": "application/json",
            "accept": "application/json",
        }

    @property
    def session_headers(self) -> Mapping[str, str]:
        return self._headers

    def request(self, params: dict[str, Any]) -> HttpRequest:
        return HttpRequest(self.url, dumps(params))

    def decoder(self, status: int, headers: Mapping[str, str]) -> None:
        return None  # whole answers only

    def transient_error(self, error_type: str) -> bool:
        return error_type in TRANSIENT_ERROR_TYPES

    def model(self, model: str) -> ModelFacts:
        return model_facts(model)

    def validate(self, params: dict[str, Any]) -> str | None:
        return validate_chat(params)

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, figures: bool = True
    ) -> Outcome:
        parsed = json_or_none(body)
        server = server_limits(headers) if figures or status != 200 else {}
        request_id = headers.get("x-request-id")
        if status == 200:
            if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
                error = not_json_error(status, headers)
                return Outcome(Verdict.RETRY, status, error=error, request_id=request_id)
            return Outcome(
                Verdict.SUCCESS,
                status,
                message=parsed,
                usage=parse_usage(parsed.get("usage")),
                request_id=request_id,
                server=server,
                api_answer=True,
            )
        known = api_error(parsed)
        error = known or not_json_error(status, headers)
        verdict = _verdict(status, headers, error)
        rate_limited = status == 429 and verdict is Verdict.RETRY
        return Outcome(
            verdict,
            status,
            error=error,
            request_id=request_id,
            retry_after=retry_after(headers, error)
            if rate_limited
            else retry_after_header(headers),
            rate_limited=rate_limited,
            server=server,
            api_answer=from_the_api(status, known),
        )


def _verdict(status: int, headers: Mapping[str, str], error: dict[str, Any]) -> Verdict:
    if status in FATAL_STATUSES or error.get("code") in FATAL_CODES:
        return Verdict.FATAL
    return retry_verdict(status, headers, RETRYABLE_STATUSES)


def api_error(parsed: Any) -> dict[str, Any] | None:
    """The error object of an error body, read as the SDK reads it (`body.get("error",
    body)`), with a `type` always set so the result record can name it."""
    if not isinstance(parsed, dict):
        return None
    error = parsed.get("error", parsed)
    if not isinstance(error, dict) or "message" not in error:
        return None
    if not error.get("type"):
        error = {**error, "type": str(error.get("code") or "api_error")}
    return error


def parse_usage(usage: Any) -> Usage:
    """`prompt_tokens` includes the cached ones; apiproc counts those apart."""
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = count(details.get("cached_tokens"))
    written = count(details.get("cache_write_tokens"))
    return Usage(
        input_tokens=max(0, count(usage.get("prompt_tokens")) - cached - written),
        output_tokens=count(usage.get("completion_tokens")),
        cache_creation_input_tokens=written,
        cache_read_input_tokens=cached,
    )


def server_limits(headers: Mapping[str, str]) -> dict[str, ServerLimit]:
    """`x-ratelimit-limit-*` and `x-ratelimit-remaining-*`, by limiter dimension.

    Negative figures (some proxies send -1 for "unknown") count as not sent.
    """
    found: dict[str, ServerLimit] = {}
    for dimension, suffix in RATE_LIMIT_DIMENSIONS:
        limit = _figure(headers.get(f"x-ratelimit-limit-{suffix}"))
        remaining = _figure(headers.get(f"x-ratelimit-remaining-{suffix}"))
        if limit is not None or remaining is not None:
            found[dimension] = ServerLimit(limit=limit, remaining=remaining)
    return found


def retry_after(headers: Mapping[str, str], error: dict[str, Any]) -> float | None:
    """How long a rate-limited request should wait.

    `retry-after-ms`/`retry-after` when sent. Otherwise the reset of the budget that ran
    out (the one the error names, or any at zero), but only when it is longer than a
    minute: a per-minute budget refills continuously, which the limiter already waits
    for, while a longer reset means a longer budget that nothing will pass before.
    """
    told = retry_after_header(headers)
    if told is not None:
        return told
    exhausted = {str(error.get("type"))}
    for dimension, suffix in RATE_LIMIT_DIMENSIONS:
        if _figure(headers.get(f"x-ratelimit-remaining-{suffix}")) == 0:
            exhausted.add(dimension)
    resets = [
        duration_seconds(headers.get(f"x-ratelimit-reset-{suffix}"))
        for dimension, suffix in RATE_LIMIT_DIMENSIONS
        if dimension in exhausted
    ]
    longest = max((reset for reset in resets if reset is not None), default=None)
    return capped_wait(longest) if longest is not None and longest > MINUTE else None


def duration_seconds(value: str | None) -> float | None:
    """Seconds in a duration such as `1s`, `6m0s`, `20ms`, `2s81ms` or `1.5s`; None if
    `value` is not one (a plain number is read as seconds)."""
    if value is None:
        return None
    text = value.strip()
    plain = number(text)
    if plain is not None:
        return plain
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(amount + unit for amount, unit in parts) != text:
        return None
    return sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in parts)


def validate_chat(params: dict[str, Any]) -> str | None:
    """Why `params` cannot be a Chat Completions request, or None if it looks sound."""
    model = params.get("model")
    if model is None:
        return "model: Field required"
    if not isinstance(model, str) or not model:
        return "model: must be a non-empty string"
    problem = messages_problem(params.get("messages"), _message_problem)
    if problem:
        return problem
    for name in ("max_tokens", "max_completion_tokens"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{name}: must be an integer"
        if isinstance(value, int) and value < 1:
            return f"{name}: must be at least 1"
    if params.get("stream") is True:
        return "stream: apiproc reads whole answers; remove stream or set it to false"
    return None


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, dict):
        return "must be an object with role and content"
    role = message.get("role")
    if role not in ROLES:
        return f"role must be one of {', '.join(sorted(ROLES))}"
    content = message.get("content")
    if content is None and role == "assistant":
        return None  # an assistant turn that only calls tools
    if not isinstance(content, (str, list)):
        return "content must be a string or a list of content parts"
    return None


@lru_cache(maxsize=256)
def model_facts(model: str) -> ModelFacts:
    """Limits apply per model (§H.1); no prices are in the reference, so none here: the
    summary says "cost unknown" rather than guess."""
    known = model.startswith(OPENAI_TOKENIZER_PREFIXES)
    return ModelFacts(
        limit_class=model,
        token_ratio=OPENAI_TOKEN_RATIO if known else UNKNOWN_TOKEN_RATIO,
        # Guess: cached prompt tokens still count toward the tokens-per-minute budget.
        cache_reads_count=True,
    )


def _figure(value: str | None) -> float | None:
    figure = number(value)
    return figure if figure is not None and figure >= 0 else None
