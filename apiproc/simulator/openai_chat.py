"""The simulated OpenAI Chat Completions endpoint: ``POST /v1/chat/completions``.

    chat = ChatCompletions(simulator)
    router.add_post("/v1/chat/completions", chat.answer)

What it follows (shared/reference/anthropic-api.md §H):
* ``Authorization: Bearer`` keys; errors as ``{"error": {"message", "type", "param",
  "code"}}``; ``insufficient_quota`` (429) once the simulated spend limit is reached.
* Per model, a requests-per-minute and one tokens-per-minute budget (input and output
  together), continuously refilled; every answer carries the six ``x-ratelimit-*``
  headers, resets written as durations (``20ms``, ``1.5s``, ``6m0s``).
* The tokens budget is charged the prompt plus ``max_tokens`` (or
  ``max_completion_tokens``) when the request starts and settled to the real usage at
  the end (a guess from a secondary quote of the rate-limit guide).
* Usage as ``prompt_tokens``, ``completion_tokens``, ``total_tokens`` with their details.
* The simulator's faults: an injected 429, a 503 for the Messages API's 529, a 500, the
  proxy's HTML 502, dropped and stalled connections.

The message texts of the errors are modelled on OpenAI's; where the reference has none
they are guesses, and no client should read them.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from apiproc.simulator.errors import ApiError
from apiproc.simulator.exchange import Exchange, new_id
from apiproc.simulator.faults import PROXY_502_PAGE, draw_fault, hang_up
from apiproc.simulator.generation import Generation, generate
from apiproc.simulator.limits import Limit
from apiproc.simulator.tokens import (
    MEDIA_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    count_tokens,
)

if TYPE_CHECKING:
    from apiproc.simulator.server import Simulator

# Models the endpoint serves; any other name is answered with 404 model_not_found.
MODELS = frozenset(
    {"gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-5.1", "gpt-3.5-turbo-0125"}
)
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "seed",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stream",
        "stream_options",
        "metadata",
        "store",
        "reasoning_effort",
        "service_tier",
        "modalities",
        "prediction",
        "prompt_cache_key",
        "safety_identifier",
        "verbosity",
    }
)
MEDIA_PARTS = frozenset({"image_url", "input_audio", "file"})
RATE_LIMITS_URL = "https://platform.openai.com/account/rate-limits"


class ChatError(Exception):
    """An error answer of the Chat Completions API."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "type": error_type, "param": param, "code": code}


def key_problem(request: web.Request, expected: str | None) -> ChatError | None:
    """The 401 for a missing or wrong `Authorization: Bearer` key; None when it is good."""
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() != "bearer " or not authorization[7:].strip():
        return ChatError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    key = authorization[7:].strip()
    if expected is not None and key != expected:
        return ChatError(
            401, f"Incorrect API key provided: {key[:3]}...{key[-4:]}.", code="invalid_api_key"
        )
    return None


# ---- the budgets ------------------------------------------------------------------------


@dataclass(slots=True)
class ChatPool:
    """One model's requests-per-minute and tokens-per-minute budgets."""

    requests: Limit
    tokens: Limit

    @classmethod
    def create(cls, requests: float, tokens: float, window: float | None, now: float) -> ChatPool:
        return cls(
            Limit.create("requests", requests, window, now),
            Limit.create("tokens", tokens, window, now),
        )

    def refusal(self, tokens: int, now: float) -> Limit | None:
        """The budget without room for this request, or None after charging both."""
        for limit, need in ((self.requests, 1), (self.tokens, tokens)):
            if limit.seconds_until(need, now) > 0:
                return limit
        self.requests.add(-1, now)
        self.tokens.add(-tokens, now)
        return None

    def headers(self, now: float) -> dict[str, str]:
        """The six ``x-ratelimit-*`` headers of every answer."""
        headers: dict[str, str] = {}
        for name, limit in (("requests", self.requests), ("tokens", self.tokens)):
            bucket = limit.minute
            bucket.refill(now)
            headers[f"x-ratelimit-limit-{name}"] = str(round(limit.per_minute))
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{name}"] = duration(bucket.seconds_until_full(now))
        return headers


def duration(seconds: float) -> str:
    """A duration as OpenAI writes its resets: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return _seconds(seconds) + "s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{_seconds(rest)}s"


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


# ---- the request ------------------------------------------------------------------------


def check_body(raw: bytes) -> dict[str, Any]:
    """The request body if it is a valid chat completion request; ChatError otherwise."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ChatError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)",
        ) from None
    if not isinstance(body, dict):
        raise ChatError(400, "The request body must be a JSON object.")
    for name in body:
        if name not in FIELDS:
            raise ChatError(400, f"Unrecognized request argument supplied: {name}")
    if "model" not in body:
        raise ChatError(400, "you must provide a model parameter")
    if body["model"] not in MODELS:
        raise ChatError(
            404,
            f"The model `{body['model']}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    _check_messages(body.get("messages"))
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ChatError(
                400,
                f"Invalid type for '{name}': expected an integer, but got a "
                f"{type(value).__name__} instead.",
                param=name,
                code="invalid_type",
            )
        if value is not None and value < 1:
            raise ChatError(
                400,
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.",
                param=name,
                code="integer_below_min_value",
            )
    if body.get("stream"):
        raise ChatError(400, "stream: this simulator answers whole completions only.")
    return body


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise ChatError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise ChatError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            supported = ", ".join(f"'{name}'" for name in ROLES)
            raise ChatError(
                400,
                f"Invalid value: '{role}'. Supported values are: {supported}.",
                param=f"messages[{index}].role",
                code="invalid_value",
            )


def prompt_tokens(body: dict[str, Any]) -> int:
    """The simulator's count of everything the model reads."""
    total = REQUEST_OVERHEAD_TOKENS
    for tool in body.get("tools") or ():
        total += count_tokens(json.dumps(tool, sort_keys=True))
    for message in body["messages"]:
        total += MESSAGE_OVERHEAD_TOKENS
        for text, media in _message_texts(message):
            total += MEDIA_TOKENS if media else count_tokens(text)
    return total


def _message_texts(message: dict[str, Any]) -> Iterator[tuple[str, bool]]:
    content = message.get("content")
    if isinstance(content, str):
        yield content, False
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") in MEDIA_PARTS:
                yield "", True
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"], False
    if message.get("tool_calls"):
        yield json.dumps(message["tool_calls"], sort_keys=True), False


# ---- the endpoint -----------------------------------------------------------------------


class ChatCompletions:
    """``POST /v1/chat/completions`` of one simulator, with its own budgets per model."""

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        self._pools: dict[str, ChatPool] = {}
        self._org = "org-" + simulator.org_id.replace("-", "")[:24]

    async def answer(self, request: web.Request) -> web.StreamResponse:
        with self.sim.in_flight():
            try:
                return await self._answer(request)
            except ConnectionError:  # the client left mid-request; there is no one to answer
                return hang_up(request)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        exchange = self.sim.begin(request, counted=True)
        exchange.request_id = new_id("req_", 32)
        try:
            raw, body = await self._read(exchange)
        except ChatError as error:
            return self._error(exchange, error)
        if self.sim.spend_cap_reached():
            return self._error(exchange, _quota_error())
        fault = draw_fault(self.sim.config, self.sim.chance)
        if fault is not None:
            self.sim.stats.faults_injected += 1
            return await self._inject(exchange, fault)
        return await self._serve(exchange, raw, body)

    async def _read(self, exchange: Exchange) -> tuple[bytes, dict[str, Any]]:
        try:
            raw = await self.sim.read_body(exchange.request)
        except ApiError:
            raise ChatError(413, "Request body too large.") from None
        refusal = key_problem(exchange.request, self.sim.config.api_key)
        if refusal is not None:
            raise refusal
        body = check_body(raw)
        exchange.body = body
        exchange.pool = self._pool(body["model"])
        return raw, body

    def _pool(self, model: str) -> ChatPool:
        pool = self._pools.get(model)
        if pool is None:
            config = self.sim.config
            now = asyncio.get_running_loop().time()
            pool = ChatPool.create(
                config.requests_per_minute, config.tokens_per_minute, config.window_seconds, now
            )
            self._pools[model] = pool
        return pool

    async def _inject(self, exchange: Exchange, fault: str) -> web.StreamResponse:
        if fault == "429":
            return self._error(exchange, self._rate_limit_error(exchange, "requests", 1))
        if fault == "529":
            overloaded = "The engine is currently overloaded, please try again later."
            return self._error(exchange, ChatError(503, overloaded, "server_error"))
        if fault == "500":
            message = "The server had an error while processing your request. Sorry about that!"
            return self._error(exchange, ChatError(500, message, "server_error"))
        if fault == "502":
            self.sim.record(exchange, 502, None)
            return web.Response(status=502, text=PROXY_502_PAGE, content_type="text/html")
        self.sim.record(exchange, 0, None)
        if fault == "stall":
            await asyncio.sleep(self.sim.config.stall_seconds)
        return hang_up(exchange.request)

    async def _serve(
        self, exchange: Exchange, raw: bytes, body: dict[str, Any]
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        pool: ChatPool = exchange.pool
        prompt = prompt_tokens(body)
        most = ceiling(body)
        choices = body.get("n") or 1
        reserved = prompt + (most or 0) * choices
        refused = pool.refusal(reserved, loop.time())
        if refused is not None:
            self.sim.stats.rate_limited += 1
            need = 1 if refused is pool.requests else reserved
            return self._error(exchange, self._rate_limit_error(exchange, refused.unit, need))
        self.sim.accepted += 1
        generation = generate(self.sim.config, raw, most, self.sim.chance)
        await asyncio.sleep(generation.first_token_delay + generation.generation_time)
        completion = generation.output_tokens * choices
        pool.tokens.add(reserved - (prompt + completion), loop.time())
        return self._succeed(exchange, body, prompt, generation)

    def _succeed(
        self, exchange: Exchange, body: dict[str, Any], prompt: int, generation: Generation
    ) -> web.StreamResponse:
        completion = chat_completion(body, prompt, generation)
        usage = completion["usage"]
        stats = self.sim.stats
        stats.succeeded += 1
        stats.input_tokens += prompt
        stats.output_tokens += usage["completion_tokens"]
        return self.sim.respond(exchange, 200, completion, self._headers(exchange), usage)

    def _rate_limit_error(self, exchange: Exchange, unit: str, need: int) -> ChatError:
        model = (exchange.body or {}).get("model", "")
        pool: ChatPool | None = exchange.pool
        short = "RPM" if unit == "requests" else "TPM"
        limit = pool.requests if unit == "requests" or pool is None else pool.tokens
        if pool is not None and need > limit.per_minute:
            message = (
                f"Request too large for {model} in organization {self._org} on {unit} per min "
                f"({short}): Limit {round(limit.per_minute)}, Requested {need}. The input or "
                f"output tokens must be reduced in order to run successfully. Visit "
                f"{RATE_LIMITS_URL} to learn more."
            )
        else:
            level = max(0.0, limit.minute.level)
            used = max(0, round(limit.per_minute - level))
            wait = limit.seconds_until(need, asyncio.get_running_loop().time())
            message = (
                f"Rate limit reached for {model} in organization {self._org} on {unit} per min "
                f"({short}): Limit {round(limit.per_minute)}, Used {used}, Requested {need}. "
                f"Please try again in {duration(max(wait, 0.001))}. Visit {RATE_LIMITS_URL} "
                "to learn more."
            )
        return ChatError(429, message, unit, code="rate_limit_exceeded")

    def _error(self, exchange: Exchange, error: ChatError) -> web.StreamResponse:
        # Guess: rate-limit 429s carry no retry-after; the x-ratelimit-* resets say when.
        return self.sim.respond(
            exchange, error.status, {"error": error.body}, self._headers(exchange)
        )

    def _headers(self, exchange: Exchange) -> dict[str, str]:
        headers = {
            "x-request-id": exchange.request_id,
            "openai-organization": self._org,
            "openai-version": "2020-10-01",
            "openai-processing-ms": str(max(1, round((time.time() - exchange.received) * 1000))),
        }
        if exchange.pool is not None and self.sim.config.rate_limit_headers:
            headers.update(exchange.pool.headers(asyncio.get_running_loop().time()))
        return headers


def chat_completion(body: dict[str, Any], prompt: int, generation: Generation) -> dict[str, Any]:
    """The `chat.completion` object of a generated answer, with its usage."""
    choices = body.get("n") or 1
    completion = generation.output_tokens * choices
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    message = {"role": "assistant", "content": generation.text, "refusal": None, "annotations": []}
    return {
        "id": new_id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": "length" if generation.clipped else "stop",
            }
            for index in range(choices)
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_simulated",
    }


def ceiling(body: dict[str, Any]) -> int | None:
    """The request's output ceiling (`max_completion_tokens`, else `max_tokens`)."""
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) else None


def _quota_error() -> ChatError:
    return ChatError(
        429,
        "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
        code="insufficient_quota",
    )
