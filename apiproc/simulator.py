"""A local fake of the Anthropic Messages API, on a real HTTP server bound to 127.0.0.1.

    async with Simulator(SimulatorConfig(requests_per_minute=60)) as sim:
        async with aiohttp.ClientSession() as session:
            await session.post(sim.messages_url, json=body, headers=headers)

Used by ``--simulate``, the examples, the tests and the benchmarks. It follows the
documented API (shared/reference/anthropic-api.md, sections A-C), not what would be
convenient for a client:

* ``POST /v1/messages`` (non-streaming) and ``POST /v1/messages/count_tokens`` (free,
  outside the Messages limits), with the documented headers, validation and error shape.
* Rate limits are continuously refilled token buckets (requests, input tokens, output
  tokens), one set per model class, as the docs say limits apply per model. Input tokens
  are ``input_tokens + cache_creation_input_tokens``; cache reads count only for the
  models the docs mark with a dagger (Claude Haiku 3.5 in 2026; Claude Haiku 3 in 2025,
  which the 2026 tables no longer list). Output tokens are either
  charged as generated (2026 docs) or reserved from ``max_tokens`` (2025 docs).
* Prompt caching writes a prefix once the writing response begins, so concurrent identical
  prefixes all pay the write, as the docs warn.
* Faults (429, 529, 500, an HTML 502, dropped and stalled connections) are injected from a
  seeded random generator.

The simulator's tokenizer is deliberately not cl100k, so a client's estimate has to learn
from the real usage: text is split by the regex ``\\w+|[^\\w\\s]`` and each piece counts
``ceil(len(piece) / 3)`` tokens. A request adds 3 tokens per message and 5 per request;
images and documents are 1,500 tokens each; tools, tool_use and other non-text blocks count
as their canonical JSON.

Benchmarks in another process read ``GET /_sim/stats`` and reset with ``POST /_sim/reset``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from aiohttp import web

__all__ = [
    "SeenRequest",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "SimulatorThread",
    "count_tokens",
    "serve_forever",
]

MAX_BODY_BYTES = 32 * 1024 * 1024  # "32 MB" for Messages and Token Counting (§A.1)
MAX_MESSAGES = 100_000
MAX_CACHE_BREAKPOINTS = 4
CACHE_LOOKBACK_BLOCKS = 20
MEDIA_TOKENS = 1_500
MESSAGE_OVERHEAD_TOKENS = 3
REQUEST_OVERHEAD_TOKENS = 5
CONTEXT_WINDOW = 200_000
LONG_CONTEXT_WINDOW = 1_000_000
CACHE_TTL_SECONDS = MappingProxyType({"5m": 300.0, "1h": 3600.0})
INJECTED_RETRY_AFTER = 1
SHUTDOWN_GRACE_SECONDS = 0.25

API_VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
KNOWN_BETAS = frozenset(
    {
        "message-batches-2024-09-24",
        "prompt-caching-2024-07-31",
        "token-counting-2024-11-01",
        "max-tokens-3-5-sonnet-2024-07-15",
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "pdfs-2024-09-25",
        "output-128k-2025-02-19",
        "token-efficient-tools-2025-02-19",
        "mcp-client-2025-04-04",
        "files-api-2025-04-14",
        "extended-cache-ttl-2025-04-11",
        "interleaved-thinking-2025-05-14",
        "fine-grained-tool-streaming-2025-05-14",
        "code-execution-2025-05-22",
        "context-management-2025-06-27",
        "context-1m-2025-08-07",
        "output-300k-2026-03-24",
    }
)
CREATE_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "cache_control",
        "container",
        "inference_geo",
        "output_config",
    }
)
COUNT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "cache_control",
        "output_config",
    }
)
BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "container_upload",
    }
)
TOOL_CHOICE_TYPES = frozenset({"auto", "any", "tool", "none"})
THINKING_TYPES = frozenset({"enabled", "disabled", "adaptive"})
MIN_THINKING_BUDGET = 1_024
SERVICE_TIERS = frozenset({"auto", "standard_only"})
FILLER_WORDS = ("the", "sim", "ran", "a", "new", "day", "so", "it", "is", "ok", "and", "we")

_TOKEN_PIECE = re.compile(r"\w+|[^\w\s]")
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

PROXY_502_PAGE = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the simulator needs to know about one model."""

    id: str  # the dated id, used in error messages and the cache key
    rate_pool: str  # models sharing one set of rate limits (§B.1 "combined pools")
    max_output: int
    min_cacheable: int  # shortest cacheable prefix in tokens (§C)
    cache_reads_count_toward_itpm: bool = False  # the dagger models of §B.2
    allows_prefill: bool = True  # Claude 4.6+ reject a final assistant message (§A.2)
    long_context: bool = False  # context-1m-2025-08-07 lifts the window to 1M (§B.5)
    output_128k: bool = False  # output-128k-2025-02-19 lifts max output to 128K


def _model_table() -> Mapping[str, ModelSpec]:
    """Aliases and dated ids of the models the simulator serves.

    Max output and minimum cacheable length are from §C and §F; where the reference has no
    figure (Opus 4, Sonnet 4, Sonnet 3.7, the 4.6 models) the value is Anthropic's model
    overview as remembered, and unconfirmed.
    """
    opus_4_6 = ModelSpec("claude-opus-4-6", "opus-4", 128_000, 4_096, allows_prefill=False)
    sonnet_4_6 = ModelSpec("claude-sonnet-4-6", "sonnet-4", 64_000, 1_024, allows_prefill=False)
    specs = {
        "claude-opus-4-6": opus_4_6,
        "claude-sonnet-4-6": sonnet_4_6,
        "claude-opus-4-5": ModelSpec("claude-opus-4-5-20251101", "opus-4", 64_000, 4_096),
        "claude-opus-4-1": ModelSpec("claude-opus-4-1-20250805", "opus-4", 32_000, 1_024),
        "claude-opus-4-0": ModelSpec("claude-opus-4-20250514", "opus-4", 32_000, 1_024),
        "claude-sonnet-4-5": ModelSpec(
            "claude-sonnet-4-5-20250929", "sonnet-4", 64_000, 1_024, long_context=True
        ),
        "claude-sonnet-4-0": ModelSpec(
            "claude-sonnet-4-20250514", "sonnet-4", 64_000, 1_024, long_context=True
        ),
        "claude-3-7-sonnet-latest": ModelSpec(
            "claude-3-7-sonnet-20250219", "sonnet-3-7", 64_000, 1_024, output_128k=True
        ),
        "claude-haiku-4-5": ModelSpec("claude-haiku-4-5-20251001", "haiku-4-5", 64_000, 4_096),
        "claude-3-5-haiku-latest": ModelSpec(
            "claude-3-5-haiku-20241022",
            "haiku-3-5",
            8_192,
            2_048,
            cache_reads_count_toward_itpm=True,
        ),
        # Marked with the dagger in the 2025 tables; the 2026 tables no longer list it.
        "claude-3-haiku-20240307": ModelSpec(
            "claude-3-haiku-20240307", "haiku-3", 4_096, 2_048, cache_reads_count_toward_itpm=True
        ),
    }
    by_dated_id = {spec.id: spec for spec in specs.values()}
    return MappingProxyType({**specs, **by_dated_id})


MODELS = _model_table()


# --------------------------------------------------------------------------- tokens


def count_tokens(text: str) -> int:
    """Count tokens the simulator's way: ``\\w+|[^\\w\\s]`` pieces, ceil(len/3) each."""
    return sum((len(piece) + 2) // 3 for piece in _TOKEN_PIECE.findall(text))


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _without_cache_control(block: Mapping[str, Any]) -> dict[str, Any]:
    # A breakpoint marker must not change the identity of the prefix it marks.
    return {key: value for key, value in block.items() if key != "cache_control"}


def _block_tokens(block: Mapping[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return count_tokens(text) if isinstance(text, str) else 0
    if kind in ("image", "document"):
        return MEDIA_TOKENS
    content = block.get("content")
    if kind == "tool_result" and isinstance(content, list):
        nested = sum(_block_tokens(item) for item in content if isinstance(item, dict))
        return count_tokens(str(block.get("tool_use_id", ""))) + nested
    return count_tokens(_canonical(_without_cache_control(block)))


@dataclass(slots=True)
class _Segment:
    """One block of the prompt, in cache order (tools, system, messages)."""

    digest: bytes  # hash of the whole prefix up to and including this block
    tokens: int  # prefix length in tokens up to and including this block
    ttl: str | None  # the block's cache_control ttl when it is a breakpoint


@dataclass(slots=True)
class _Prompt:
    segments: list[_Segment]
    total_tokens: int


def _prompt_blocks(body: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], int]]:
    """Yield (section tag, block, overhead tokens) in the tools → system → messages order."""
    for tool in body.get("tools") or ():
        yield "tool", tool, 0
    system = body.get("system")
    if isinstance(system, str) and system:
        yield "system", {"type": "text", "text": system}, 0
    elif isinstance(system, list):
        for block in system:
            yield "system", block, 0
    # tool_choice and thinking changes invalidate the messages cache only (§C hierarchy).
    message_tag = _canonical([body.get("tool_choice"), body.get("thinking")])
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for index, block in enumerate(blocks):
            overhead = MESSAGE_OVERHEAD_TOKENS if index == 0 else 0
            yield f"{message['role']}|{message_tag}", block, overhead


def _build_prompt(body: Mapping[str, Any], spec: ModelSpec) -> _Prompt:
    """Token-count the request and hash every prefix, marking the cache breakpoints."""
    digest = hashlib.sha256(spec.id.encode()).digest()
    tokens = 0
    segments: list[_Segment] = []
    for tag, block, overhead in _prompt_blocks(body):
        tokens += overhead + _block_tokens(block)
        payload = f"{tag}\n{_canonical(_without_cache_control(block))}".encode()
        digest = hashlib.sha256(digest + payload).digest()
        control = block.get("cache_control")
        ttl = control.get("ttl", "5m") if isinstance(control, dict) else None
        segments.append(_Segment(digest, tokens, ttl))
    empty_messages = sum(1 for m in body["messages"] if not m["content"])
    total = tokens + MESSAGE_OVERHEAD_TOKENS * empty_messages + REQUEST_OVERHEAD_TOKENS
    _apply_top_level_cache_control(body, segments)
    _check_breakpoints(segments)
    return _Prompt(segments, total)


def _apply_top_level_cache_control(body: Mapping[str, Any], segments: list[_Segment]) -> None:
    control = body.get("cache_control")
    if not isinstance(control, dict) or not segments:
        return
    if segments[-1].ttl is None:
        segments[-1].ttl = control.get("ttl", "5m")
    elif sum(1 for s in segments if s.ttl) >= MAX_CACHE_BREAKPOINTS:
        # The docs say the automatic marker is a fifth breakpoint when four exist.
        raise _invalid(_too_many_breakpoints(MAX_CACHE_BREAKPOINTS + 1))


def _too_many_breakpoints(found: int) -> str:
    return (
        f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
        f"Found {found}."
    )


def _check_breakpoints(segments: list[_Segment]) -> None:
    ttls = [segment.ttl for segment in segments if segment.ttl]
    if len(ttls) > MAX_CACHE_BREAKPOINTS:
        raise _invalid(_too_many_breakpoints(len(ttls)))
    if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
        raise _invalid(
            "cache_control: a ttl='1h' cache_control block must not come after a "
            "ttl='5m' cache_control block; longer TTLs must come first."
        )


# --------------------------------------------------------------------------- validation


class _ApiError(Exception):
    """A request the API refuses; carries what the error response needs."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _invalid(message: str) -> _ApiError:
    return _ApiError(400, "invalid_request_error", message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{path}: Input should be a valid dictionary")
    return value


def _reject_extra(fields: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in fields:
        if key not in allowed:
            raise _invalid(f"{prefix}{key}: Extra inputs are not permitted")


def _resolve_model(fields: Mapping[str, Any]) -> ModelSpec:
    if "model" not in fields:
        raise _invalid("model: Field required")
    name = fields["model"]
    if not isinstance(name, str):
        raise _invalid("model: Input should be a valid string")
    spec = MODELS.get(name)
    if spec is None:
        raise _ApiError(404, "not_found_error", f"model: {name}")
    return spec


def _check_max_tokens(fields: Mapping[str, Any], spec: ModelSpec, betas: frozenset[str]) -> int:
    if "max_tokens" not in fields:
        raise _invalid("max_tokens: Field required")
    value = fields["max_tokens"]
    if not _is_int(value):
        raise _invalid("max_tokens: Input should be a valid integer")
    if value < 1:
        raise _invalid("max_tokens: Input should be greater than or equal to 1")
    limit = 128_000 if spec.output_128k and "output-128k-2025-02-19" in betas else spec.max_output
    if value > limit:
        raise _invalid(
            f"max_tokens: {value} > {limit}, which is the maximum allowed number of "
            f"output tokens for {spec.id}"
        )
    return value


def _check_range(fields: Mapping[str, Any], key: str, low: float, high: float | None) -> None:
    if key not in fields or fields[key] is None:
        return
    value = fields[key]
    if not _is_number(value):
        raise _invalid(f"{key}: Input should be a valid number")
    if value < low:
        raise _invalid(f"{key}: Input should be greater than or equal to {low:g}")
    if high is not None and value > high:
        raise _invalid(f"{key}: Input should be less than or equal to {high:g}")


def _check_cache_control(value: object, path: str) -> None:
    control = _require_object(value, path)
    _reject_extra(control, frozenset({"type", "ttl"}), f"{path}.")
    if control.get("type") != "ephemeral":
        raise _invalid(f"{path}.type: Input should be 'ephemeral'")
    if "ttl" in control and control["ttl"] not in CACHE_TTL_SECONDS:
        raise _invalid(f"{path}.ttl: Input should be '5m' or '1h'")


def _check_block(value: object, path: str) -> None:
    block = _require_object(value, path)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{path}.type: Field required")
    if kind not in BLOCK_TYPES:
        raise _invalid(
            f"{path}: Input tag '{kind}' found using 'type' does not match any of the "
            f"expected tags: {', '.join(sorted(BLOCK_TYPES))}"
        )
    if kind == "text" and not isinstance(block.get("text"), str):
        raise _invalid(f"{path}.text: Field required")
    if "cache_control" in block and block["cache_control"] is not None:
        _check_cache_control(block["cache_control"], f"{path}.cache_control")


def _check_message(value: object, index: int, is_last: bool) -> None:
    path = f"messages.{index}"
    message = _require_object(value, path)
    _reject_extra(message, frozenset({"role", "content"}), f"{path}.")
    if message.get("role") not in ("user", "assistant"):
        raise _invalid(f"{path}.role: Input should be 'user' or 'assistant'")
    if "content" not in message:
        raise _invalid(f"{path}.content: Field required")
    content = message["content"]
    if isinstance(content, list):
        for number, block in enumerate(content):
            _check_block(block, f"{path}.content.{number}")
    elif not isinstance(content, str):
        raise _invalid(f"{path}.content: Input should be a valid string or list")
    if not content and not (is_last and message["role"] == "assistant"):
        raise _invalid(
            f"{path}: all messages must have non-empty content except for the optional "
            "final assistant message"
        )


def _check_messages(fields: Mapping[str, Any], spec: ModelSpec) -> None:
    if "messages" not in fields:
        raise _invalid("messages: Field required")
    messages = fields["messages"]
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    if len(messages) > MAX_MESSAGES:
        raise _invalid(f"messages: at most {MAX_MESSAGES} messages are allowed in one request")
    for index, message in enumerate(messages):
        _check_message(message, index, index == len(messages) - 1)
    if messages[-1]["role"] == "assistant" and not spec.allows_prefill:
        raise _invalid(
            "This model does not support assistant message prefill. "
            "The conversation must end with a user message."
        )


def _check_system(fields: Mapping[str, Any]) -> None:
    system = fields.get("system")
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _invalid("system: Input should be a valid string or list")
    for index, block in enumerate(system):
        _check_block(block, f"system.{index}")
        if block["type"] != "text":
            raise _invalid(f"system.{index}.type: Input should be 'text'")


def _check_metadata(fields: Mapping[str, Any]) -> None:
    if fields.get("metadata") is None:
        return
    metadata = _require_object(fields["metadata"], "metadata")
    _reject_extra(metadata, frozenset({"user_id"}), "metadata.")
    user_id = metadata.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise _invalid("metadata.user_id: Input should be a valid string")
    if user_id is not None and len(user_id) > 256:
        raise _invalid("metadata.user_id: String should have at most 256 characters")


def _check_tools(fields: Mapping[str, Any]) -> None:
    tools = fields.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    names: set[str] = set()
    for index, value in enumerate(tools):
        tool = _require_object(value, f"tools.{index}")
        if tool.get("type") in (None, "custom") and not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{index}.name: Field required")
        if "cache_control" in tool and tool["cache_control"] is not None:
            _check_cache_control(tool["cache_control"], f"tools.{index}.cache_control")
        name = tool.get("name")
        if name in names:
            raise _invalid("tools: Tool names must be unique.")
        if isinstance(name, str):
            names.add(name)


def _check_tool_choice(fields: Mapping[str, Any]) -> None:
    if fields.get("tool_choice") is None:
        return
    choice = _require_object(fields["tool_choice"], "tool_choice")
    if choice.get("type") not in TOOL_CHOICE_TYPES:
        raise _invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
        raise _invalid("tool_choice.name: Field required")


def _check_thinking(fields: Mapping[str, Any], max_tokens: int | None) -> None:
    if fields.get("thinking") is None:
        return
    thinking = _require_object(fields["thinking"], "thinking")
    if thinking.get("type") not in THINKING_TYPES:
        raise _invalid("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
    if thinking["type"] != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not _is_int(budget):
        raise _invalid("thinking.enabled.budget_tokens: Field required")
    if budget < MIN_THINKING_BUDGET:
        raise _invalid(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if max_tokens is not None and max_tokens <= budget:
        raise _invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")


def _check_options(fields: Mapping[str, Any]) -> None:
    _check_range(fields, "temperature", 0.0, 1.0)
    _check_range(fields, "top_p", 0.0, 1.0)
    if fields.get("top_k") is not None and not _is_int(fields["top_k"]):
        raise _invalid("top_k: Input should be a valid integer")
    _check_range(fields, "top_k", 0, None)
    stops = fields.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise _invalid("stop_sequences: Input should be a valid list of strings")
    if "stream" in fields and not isinstance(fields["stream"], bool):
        raise _invalid("stream: Input should be a valid boolean")
    tier = fields.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        raise _invalid("service_tier: Input should be 'auto' or 'standard_only'")
    if fields.get("cache_control") is not None:
        _check_cache_control(fields["cache_control"], "cache_control")


def _check_context(prompt: _Prompt, spec: ModelSpec, betas: frozenset[str]) -> None:
    long_context = spec.long_context and "context-1m-2025-08-07" in betas
    window = LONG_CONTEXT_WINDOW if long_context else CONTEXT_WINDOW
    if prompt.total_tokens > window:
        raise _invalid(f"prompt is too long: {prompt.total_tokens} tokens > {window} maximum")


@dataclass(slots=True)
class _Checked:
    """A request body that passed validation, with what the later steps need."""

    body: dict[str, Any]
    spec: ModelSpec
    prompt: _Prompt
    max_tokens: int
    raw: bytes = b""  # the body as sent, which seeds the generated answer


def _validate(body: object, betas: frozenset[str], *, counting: bool) -> _Checked:
    """Validate a Messages (or count_tokens) body the way the API reports problems."""
    fields = _require_object(body, "body")
    spec = _resolve_model(fields)
    _reject_extra(fields, COUNT_FIELDS if counting else CREATE_FIELDS, "")
    max_tokens = 0 if counting else _check_max_tokens(fields, spec, betas)
    _check_messages(fields, spec)
    _check_system(fields)
    _check_metadata(fields)
    _check_tools(fields)
    _check_tool_choice(fields)
    _check_thinking(fields, None if counting else max_tokens)
    _check_options(fields)
    if fields.get("stream") is True:
        raise _invalid("stream: streaming is not supported by this simulator; send stream=false")
    prompt = _build_prompt(fields, spec)
    _check_context(prompt, spec, betas)
    return _Checked(fields, spec, prompt, max_tokens)


# --------------------------------------------------------------------------- rate limits


@dataclass(slots=True)
class _TokenBucket:
    """A continuously refilled bucket; its level goes negative when usage is settled late."""

    capacity: float
    rate: float  # units per second
    level: float
    updated: float  # event-loop time of the last refill

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def seconds_until(self, amount: float, now: float) -> float:
        """Seconds until the level reaches ``amount``; infinite if it never can."""
        self.refill(now)
        if amount > self.capacity:
            return math.inf
        return max(0.0, (amount - self.level) / self.rate)

    def seconds_until_full(self, now: float) -> float:
        self.refill(now)
        return (self.capacity - self.level) / self.rate

    def add(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)


@dataclass(slots=True)
class _Limit:
    """One documented limit (RPM, ITPM or OTPM), optionally also enforced over a short window."""

    unit: str  # as the 429 message names it: "requests", "input tokens", "output tokens"
    per_minute: float
    minute: _TokenBucket
    window: _TokenBucket | None

    @classmethod
    def create(cls, unit: str, per_minute: float, window: float | None, now: float) -> _Limit:
        rate = per_minute / 60.0
        short = None if window is None else _TokenBucket(rate * window, rate, rate * window, now)
        return cls(unit, per_minute, _TokenBucket(per_minute, rate, per_minute, now), short)

    def seconds_until(self, amount: float, now: float) -> float:
        wait = self.minute.seconds_until(amount, now)
        if self.window is not None:
            # A request bigger than the short window waits for a full window, so a
            # sub-minute interval shapes bursts without banning large requests.
            short_need = min(amount, self.window.capacity)
            wait = max(wait, self.window.seconds_until(short_need, now))
        return wait

    def retry_after(self, amount: float, now: float) -> int:
        wait = self.seconds_until(amount, now)
        if math.isinf(wait):
            # More than a minute's limit can never be admitted; a full bucket is the best hope.
            wait = self.minute.seconds_until_full(now)
        return max(1, math.ceil(wait))

    def add(self, amount: float, now: float) -> None:
        self.minute.add(amount, now)
        if self.window is not None:
            self.window.add(amount, now)


@dataclass(slots=True)
class _Rejection:
    limit: _Limit
    retry_after: int


@dataclass(slots=True)
class _RatePool:
    """The three limits one model class shares (§B.1)."""

    requests: _Limit
    input: _Limit
    output: _Limit

    @classmethod
    def create(cls, config: SimulatorConfig, now: float) -> _RatePool:
        window = config.window_seconds
        return cls(
            _Limit.create("requests", config.requests_per_minute, window, now),
            _Limit.create("input tokens", config.input_tokens_per_minute, window, now),
            _Limit.create("output tokens", config.output_tokens_per_minute, window, now),
        )

    def admit(self, input_tokens: int, output_need: int, now: float) -> _Rejection | None:
        """Charge a request if every limit has room; otherwise say which limit refused it."""
        needs = ((self.requests, 1), (self.input, input_tokens), (self.output, output_need))
        waits = [(limit.seconds_until(need, now), limit, need) for limit, need in needs]
        wait, limit, need = max(waits, key=lambda item: item[0])
        if wait > 0:
            return _Rejection(limit, limit.retry_after(need, now))
        self.requests.add(-1, now)
        self.input.add(-input_tokens, now)
        return None

    def headers(self, now: float) -> dict[str, str]:
        """The 12 ``anthropic-ratelimit-*`` headers, from the per-minute buckets."""
        wall = time.time()
        headers: dict[str, str] = {}
        for name, limit in (
            ("requests", self.requests),
            ("input-tokens", self.input),
            ("output-tokens", self.output),
        ):
            bucket = limit.minute
            bucket.refill(now)
            remaining = _floor(bucket.level) if name == "requests" else _thousands(bucket.level)
            headers[f"anthropic-ratelimit-{name}-limit"] = str(round(limit.per_minute))
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = _reset_time(bucket, now, wall)
        tokens_limit = round(self.input.per_minute + self.output.per_minute)
        tokens_left = max(0.0, self.input.minute.level) + max(0.0, self.output.minute.level)
        buckets = (self.input.minute, self.output.minute)
        later = max(buckets, key=lambda bucket: bucket.seconds_until_full(now))
        headers["anthropic-ratelimit-tokens-limit"] = str(tokens_limit)
        headers["anthropic-ratelimit-tokens-remaining"] = str(_thousands(tokens_left))
        headers["anthropic-ratelimit-tokens-reset"] = _reset_time(later, now, wall)
        return headers


def _floor(level: float) -> int:
    return max(0, math.floor(level))


def _thousands(level: float) -> int:
    """Round to the nearest thousand, as the docs say token ``remaining`` values are."""
    return max(0, math.floor(level / 1000 + 0.5) * 1000)


def _reset_time(bucket: _TokenBucket, now: float, wall: float) -> str:
    """RFC 3339 UTC time, whole seconds, at which the bucket will be full again."""
    deficit_seconds = bucket.seconds_until_full(now)
    # Round up a pending refill so a client waiting until then is never early.
    moment = math.ceil(wall + deficit_seconds) if deficit_seconds > 0 else math.floor(wall)
    return datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- prompt cache


@dataclass(slots=True)
class _CacheEntry:
    tokens: int
    ttl_seconds: float
    expires_at: float  # event-loop time


@dataclass(slots=True)
class _CachePlan:
    """How one request's prompt splits into cache reads, cache writes and plain input."""

    read_tokens: int = 0
    write_5m: int = 0
    write_1h: int = 0
    input_tokens: int = 0
    hit: bytes | None = None
    writes: list[tuple[bytes, int, str]] = field(default_factory=list)  # (digest, tokens, ttl)

    @property
    def creation_tokens(self) -> int:
        return self.write_5m + self.write_1h


class _PromptCache:
    """Prefix cache of one simulated organisation, on the event-loop clock (§C)."""

    def __init__(self) -> None:
        self._entries: dict[bytes, _CacheEntry] = {}
        self._size_after_sweep = 0

    def plan(self, prompt: _Prompt, spec: ModelSpec, now: float) -> _CachePlan:
        """Split the prompt without changing the cache (the request may still be refused)."""
        segments = prompt.segments
        hit = self._longest_hit(segments, now)
        read = segments[hit].tokens if hit is not None else 0
        start = -1 if hit is None else hit
        eligible = [
            i
            for i, s in enumerate(segments)
            if s.ttl and i > start and s.tokens >= spec.min_cacheable
        ]
        plan = _CachePlan(read_tokens=read, hit=segments[hit].digest if hit is not None else None)
        if eligible:
            # Mixed-TTL billing (§C): 1h writes up to the last 1h breakpoint, 5m after it.
            last_1h = max((i for i in eligible if segments[i].ttl == "1h"), default=None)
            one_hour_end = segments[last_1h].tokens if last_1h is not None else read
            plan.write_1h = one_hour_end - read
            plan.write_5m = segments[eligible[-1]].tokens - one_hour_end
            plan.writes = [
                (segments[i].digest, segments[i].tokens, segments[i].ttl or "5m") for i in eligible
            ]
        plan.input_tokens = prompt.total_tokens - read - plan.creation_tokens
        return plan

    def _longest_hit(self, segments: list[_Segment], now: float) -> int | None:
        """The furthest live prefix within the lookback window of any breakpoint."""
        candidates: set[int] = set()
        for index, segment in enumerate(segments):
            if segment.ttl:
                candidates.update(range(max(0, index - CACHE_LOOKBACK_BLOCKS + 1), index + 1))
        for index in sorted(candidates, reverse=True):
            entry = self._entries.get(segments[index].digest)
            if entry is not None and entry.expires_at > now:
                return index
        return None

    def refresh(self, plan: _CachePlan, now: float) -> None:
        entry = self._entries.get(plan.hit) if plan.hit is not None else None
        if entry is not None:
            entry.expires_at = max(entry.expires_at, now + entry.ttl_seconds)

    def store(self, plan: _CachePlan, started_at: float, now: float) -> None:
        """Make the written prefixes readable; their lifetime runs from the request's start."""
        for digest, tokens, ttl in plan.writes:
            ttl_seconds = CACHE_TTL_SECONDS[ttl]
            self._entries[digest] = _CacheEntry(tokens, ttl_seconds, started_at + ttl_seconds)
        if len(self._entries) > 2 * self._size_after_sweep + 1_000:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._entries = {k: e for k, e in self._entries.items() if e.expires_at > now}
        self._size_after_sweep = len(self._entries)


# --------------------------------------------------------------------------- public records


@dataclass(slots=True)
class SimulatorConfig:
    """How the simulated API behaves; defaults are a generous, fault-free org."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    requests_per_minute: float = 4_000
    input_tokens_per_minute: float = 2_000_000
    output_tokens_per_minute: float = 400_000
    # "generated": OTPM counts generated tokens only, charged when generation ends (2026
    # docs). "max_tokens": max_tokens reserved at the start, corrected at the end (2025 docs).
    output_accounting: str = "generated"
    # Also enforce every limit over this interval: buckets of rate * window_seconds.
    window_seconds: float | None = None
    latency: float = 0.0  # seconds before the response begins (time to first token)
    latency_jitter: float = 0.0  # uniform extra 0..jitter seconds
    output_tokens_per_second: float = 0.0  # 0: generation takes no extra time
    output_tokens: tuple[int, int] = (16, 128)  # drawn per request, clipped to max_tokens
    rate_429: float = 0.0  # injected faults: probability per request
    rate_529: float = 0.0
    rate_500: float = 0.0
    rate_502_html: float = 0.0  # non-JSON 502 page, as a proxy would send
    rate_drop: float = 0.0  # close the connection without any response
    rate_stall: float = 0.0  # hold the connection stall_seconds, then close it
    stall_seconds: float = 30.0
    seed: int = 0
    api_key: str | None = None  # None: any non-empty key is accepted
    spend_limit_after: int | None = None  # accepted requests before the spend-cap 429
    record: bool = True  # keep a SeenRequest per request


@dataclass(slots=True)
class SeenRequest:
    """One request as the simulator saw and answered it; status 0 means no response."""

    time: float  # wall-clock arrival time
    path: str
    status: int
    headers: dict[str, str]  # request headers, lower-cased names
    body: dict[str, Any] | None
    response_usage: dict[str, Any] | None
    request_id: str | None


@dataclass(slots=True)
class SimulatorStats:
    """Counters over ``POST /v1/messages``; status 0 counts requests left without a response.

    ``rate_limited`` counts rate-limit 429s only; injected faults (including injected 429s)
    are in ``faults_injected``; spend-cap 429s only in ``by_status``. Token sums are over
    successful responses. Times are wall-clock seconds.
    """

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    faults_injected: int = 0
    succeeded: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_writes: int = 0  # successful responses that wrote to the prompt cache
    cache_reads: int = 0  # successful responses that read from it
    max_in_flight: int = 0
    first_request_at: float | None = None
    last_response_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters (``by_status`` keys become strings)."""
        data = dataclasses.asdict(self)
        data["by_status"] = {str(status): n for status, n in sorted(self.by_status.items())}
        return data


def _check_config(config: SimulatorConfig) -> None:
    limits = (
        config.requests_per_minute,
        config.input_tokens_per_minute,
        config.output_tokens_per_minute,
    )
    if min(limits) <= 0:
        raise ValueError("simulator rate limits must be positive numbers per minute")
    if config.output_accounting not in ("generated", "max_tokens"):
        raise ValueError("output_accounting must be 'generated' or 'max_tokens'")
    if config.window_seconds is not None and config.window_seconds <= 0:
        raise ValueError("window_seconds must be positive (or None)")
    low, high = config.output_tokens
    if not 0 <= low <= high:
        raise ValueError("output_tokens must be a (low, high) range with 0 <= low <= high")


# --------------------------------------------------------------------------- responses


def _new_id(prefix: str, length: int) -> str:
    value = secrets.randbits(6 * length)
    chars = []
    for _ in range(length):
        value, digit = divmod(value, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return prefix + "".join(chars)


def _filler_text(tokens: int, rng: random.Random) -> str:
    # Every filler word is at most 3 characters, so each is exactly one token.
    return " ".join(rng.choice(FILLER_WORDS) for _ in range(tokens))


def _rate_limit_message(limit: _Limit, org_id: str, model: str) -> str:
    amount = f"{round(limit.per_minute):,}"
    return (
        f"This request would exceed your organization's rate limit of {amount} {limit.unit} "
        f"per minute (org: {org_id}, model: {model}). For details, refer to: "
        "https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
        "current usage. Please reduce the prompt length or the maximum tokens requested, or "
        "try again later. You may also contact sales at https://www.anthropic.com/contact-sales "
        "to discuss your options for a rate limit increase."
    )


def _spend_cap_message() -> str:
    today = datetime.now(timezone.utc).date()
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return (
        "You have reached your API usage limits: your organization has crossed its monthly "
        "API usage threshold, set based on your organization's API tier. You will regain "
        f"access on {year:04d}-{month:02d}-01 at 00:00 UTC."
    )


def _usage(plan: _CachePlan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": plan.input_tokens,
        "cache_creation_input_tokens": plan.creation_tokens,
        "cache_read_input_tokens": plan.read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": plan.write_5m,
            "ephemeral_1h_input_tokens": plan.write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


@dataclass(slots=True)
class _Exchange:
    """One request while it is being answered."""

    request: web.Request
    received: float  # wall clock
    request_id: str
    counted: bool  # part of SimulatorStats (the Messages endpoint)
    body: dict[str, Any] | None = None
    pool: _RatePool | None = None


@dataclass(slots=True)
class _Generation:
    """What the model "writes" for one accepted request."""

    output_tokens: int
    stop_reason: str
    text: str
    first_token_delay: float
    generation_time: float


# --------------------------------------------------------------------------- the server


class Simulator:
    """The fake API server; start it, point a client at ``messages_url``, read ``stats``.

    All state lives on one event loop; ``stats`` and ``seen`` may be read from another
    thread (see SimulatorThread) but not changed.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        _check_config(self.config)
        self.stats = SimulatorStats()
        self.seen: list[SeenRequest] = []
        self._chance = random.Random(self.config.seed)  # faults and latency jitter
        self._org_id = str(uuid.UUID(int=random.Random(self.config.seed).getrandbits(128)))
        self._pools: dict[str, _RatePool] = {}
        self._cache = _PromptCache()
        self._accepted = 0
        self._in_flight = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_post("/_sim/reset", self._reset)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, backlog=1024)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening; requests still held (latency, stalls) are cut off shortly after."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the simulator is not started; call start() first")
        return f"http://{self.config.host}:{self._port}"

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/v1/messages"

    # -- endpoints

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        try:
            return await self._answer_messages(request)
        finally:
            self._in_flight -= 1

    async def _answer_messages(self, request: web.Request) -> web.StreamResponse:
        exchange = self._begin(request, counted=True)
        try:
            checked = await self._read_checked(exchange, counting=False)
        except _ApiError as error:
            return self._error(exchange, error)
        if self._spend_cap_reached():
            cap = _ApiError(429, "rate_limit_error", _spend_cap_message())
            return self._error(
                exchange, cap, details={"error_code": "enforced_spend_limit_reached"}
            )
        fault = self._draw_fault()
        if fault is not None:
            self.stats.faults_injected += 1
            return await self._inject(exchange, fault, checked.spec)
        return await self._serve(exchange, checked)

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        exchange = self._begin(request, counted=False)
        try:
            checked = await self._read_checked(exchange, counting=True)
        except _ApiError as error:
            return self._error(exchange, error)
        return self._reply(exchange, 200, {"input_tokens": checked.prompt.total_tokens})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats.as_dict())

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self.stats = SimulatorStats(max_in_flight=self._in_flight)
        return web.json_response(self.stats.as_dict())

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        exchange = self._begin(request, counted=False)
        missing = _ApiError(404, "not_found_error", "The requested resource could not be found.")
        return self._error(exchange, missing)

    # -- request intake

    def _begin(self, request: web.Request, *, counted: bool) -> _Exchange:
        received = time.time()
        if counted:
            self.stats.requests += 1
            if self.stats.first_request_at is None:
                self.stats.first_request_at = received
        return _Exchange(request, received, _new_id("req_011C", 20), counted)

    async def _read_checked(self, exchange: _Exchange, *, counting: bool) -> _Checked:
        """Steps 1-2: size, headers, JSON, body; raises _ApiError for the error response."""
        raw = await self._read_body(exchange.request)
        self._check_auth(exchange.request)
        _check_version(exchange.request)
        betas = _betas(exchange.request)
        body = _parse_json(raw)
        exchange.body = body if isinstance(body, dict) else None
        model = exchange.body.get("model") if exchange.body is not None else None
        spec = MODELS.get(model) if isinstance(model, str) else None
        # Token counting has its own limits, so only Messages answers report the buckets.
        if spec is not None and not counting:
            exchange.pool = self._pool(spec)
        checked = _validate(body, betas, counting=counting)
        checked.raw = raw
        return checked

    async def _read_body(self, request: web.Request) -> bytes:
        too_large = _ApiError(
            413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
        )
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise too_large
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None

    def _check_auth(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if key is None and authorization[:7].lower() == "bearer ":
            key = authorization[7:].strip()
        expected = self.config.api_key
        if not key or (expected is not None and key != expected):
            raise _ApiError(401, "authentication_error", "invalid x-api-key")

    def _pool(self, spec: ModelSpec) -> _RatePool:
        pool = self._pools.get(spec.rate_pool)
        if pool is None:
            pool = _RatePool.create(self.config, asyncio.get_running_loop().time())
            self._pools[spec.rate_pool] = pool
        return pool

    def _spend_cap_reached(self) -> bool:
        limit = self.config.spend_limit_after
        return limit is not None and self._accepted >= limit

    # -- faults

    def _draw_fault(self) -> str | None:
        """Pick at most one injected fault, before any bucket is charged."""
        c = self.config
        draw = self._chance.random()
        edge = 0.0
        for kind, rate in (
            ("429", c.rate_429),
            ("529", c.rate_529),
            ("500", c.rate_500),
            ("502", c.rate_502_html),
            ("drop", c.rate_drop),
            ("stall", c.rate_stall),
        ):
            edge += rate
            if draw < edge:
                return kind
        return None

    async def _inject(self, exchange: _Exchange, fault: str, spec: ModelSpec) -> web.StreamResponse:
        if fault == "429":
            message = _rate_limit_message(self._pool(spec).requests, self._org_id, spec.id)
            error = _ApiError(429, "rate_limit_error", message)
            return self._error(exchange, error, retry_after=INJECTED_RETRY_AFTER)
        if fault == "529":
            return self._error(exchange, _ApiError(529, "overloaded_error", "Overloaded"))
        if fault == "500":
            return self._error(exchange, _ApiError(500, "api_error", "Internal server error"))
        if fault == "502":
            self._record(exchange, 502, None)
            return web.Response(status=502, text=PROXY_502_PAGE, content_type="text/html")
        self._record(exchange, 0, None)
        if fault == "stall":
            await asyncio.sleep(self.config.stall_seconds)
        return _hang_up(exchange.request)

    # -- success path

    async def _serve(self, exchange: _Exchange, checked: _Checked) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        pool, spec = self._pool(checked.spec), checked.spec
        plan = self._cache.plan(checked.prompt, spec, started)
        charged_input = plan.input_tokens + plan.creation_tokens
        if spec.cache_reads_count_toward_itpm:
            charged_input += plan.read_tokens
        reserve = self.config.output_accounting == "max_tokens"
        output_need = checked.max_tokens if reserve else 1
        rejection = pool.admit(charged_input, output_need, started)
        if rejection is not None:
            return self._rate_limited(exchange, rejection, spec)
        if reserve:
            pool.output.add(-checked.max_tokens, started)
        self._accepted += 1
        self._cache.refresh(plan, started)
        generation = self._generate(checked)
        await asyncio.sleep(generation.first_token_delay)
        self._cache.store(plan, started, loop.time())
        await asyncio.sleep(generation.generation_time)
        settled = generation.output_tokens - (checked.max_tokens if reserve else 0)
        pool.output.add(-settled, loop.time())
        return self._succeed(exchange, checked, plan, generation)

    def _generate(self, checked: _Checked) -> _Generation:
        # Seeded from the body so that the same request always gets the same answer.
        seed = hashlib.sha256(f"{self.config.seed}|".encode() + checked.raw).digest()
        rng = random.Random(seed)
        low, high = self.config.output_tokens
        drawn = max(1, rng.randint(low, high))  # output_tokens is never zero (§A.3)
        clipped = drawn > checked.max_tokens
        tokens = checked.max_tokens if clipped else drawn
        speed = self.config.output_tokens_per_second
        return _Generation(
            output_tokens=tokens,
            stop_reason="max_tokens" if clipped else "end_turn",
            text=_filler_text(tokens, rng),
            first_token_delay=self.config.latency
            + self._chance.uniform(0.0, self.config.latency_jitter),
            generation_time=tokens / speed if speed > 0 else 0.0,
        )

    def _succeed(
        self, exchange: _Exchange, checked: _Checked, plan: _CachePlan, generation: _Generation
    ) -> web.StreamResponse:
        usage = _usage(plan, generation.output_tokens)
        message = {
            "id": _new_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": checked.body["model"],
            "content": [{"type": "text", "text": generation.text}],
            "stop_reason": generation.stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        stats = self.stats
        stats.succeeded += 1
        stats.input_tokens += plan.input_tokens
        stats.output_tokens += generation.output_tokens
        stats.cache_creation_input_tokens += plan.creation_tokens
        stats.cache_read_input_tokens += plan.read_tokens
        stats.cache_writes += plan.creation_tokens > 0
        stats.cache_reads += plan.read_tokens > 0
        return self._reply(exchange, 200, message, usage=usage)

    def _rate_limited(
        self, exchange: _Exchange, rejection: _Rejection, spec: ModelSpec
    ) -> web.StreamResponse:
        self.stats.rate_limited += 1
        message = _rate_limit_message(rejection.limit, self._org_id, spec.id)
        error = _ApiError(429, "rate_limit_error", message)
        return self._error(exchange, error, retry_after=rejection.retry_after)

    # -- responses

    def _error(
        self,
        exchange: _Exchange,
        error: _ApiError,
        *,
        retry_after: int | None = None,
        details: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        body: dict[str, Any] = {"type": error.error_type, "message": error.message}
        if details is not None:
            body["details"] = details
        if error.status == 413:
            # Cloudflare answers this before the API: no request id, no rate-limit headers.
            self._record(exchange, 413, None, with_request_id=False)
            return web.json_response({"type": "error", "error": body}, status=413)
        payload = {"type": "error", "error": body, "request_id": exchange.request_id}
        extra = {"retry-after": str(retry_after)} if retry_after is not None else {}
        return self._reply(exchange, error.status, payload, extra=extra)

    def _reply(
        self,
        exchange: _Exchange,
        status: int,
        payload: dict[str, Any],
        *,
        extra: dict[str, str] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> web.StreamResponse:
        headers = {
            "request-id": exchange.request_id,
            "anthropic-organization-id": self._org_id,
        }
        if exchange.pool is not None:
            headers.update(exchange.pool.headers(asyncio.get_running_loop().time()))
        headers.update(extra or {})
        self._record(exchange, status, usage)
        return web.json_response(payload, status=status, headers=headers)

    def _record(
        self,
        exchange: _Exchange,
        status: int,
        usage: dict[str, Any] | None,
        *,
        with_request_id: bool = True,
    ) -> None:
        if exchange.counted:
            by_status = self.stats.by_status
            by_status[status] = by_status.get(status, 0) + 1
            if status:
                self.stats.last_response_at = time.time()
        if not self.config.record:
            return
        request = exchange.request
        names = {name.lower() for name in request.headers}
        headers = {name: ", ".join(request.headers.getall(name)) for name in names}
        rid = exchange.request_id if with_request_id else None
        seen = SeenRequest(
            exchange.received, request.path, status, headers, exchange.body, usage, rid
        )
        self.seen.append(seen)


def _check_version(request: web.Request) -> None:
    values = request.headers.getall("anthropic-version", [])
    if not values:
        raise _invalid("anthropic-version: header is required")
    version = ", ".join(values)
    if version not in API_VERSIONS:
        raise _invalid(f'anthropic-version: "{version}" is not a valid version')


def _betas(request: web.Request) -> frozenset[str]:
    """Beta names, comma-separated and/or in repeated headers; unknown names are refused."""
    names = [
        name.strip()
        for value in request.headers.getall("anthropic-beta", [])
        for name in value.split(",")
        if name.strip()
    ]
    for name in names:
        if name not in KNOWN_BETAS:
            raise _invalid(f"Unsupported beta header: {name}")
    return frozenset(names)


def _parse_json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _invalid(f"The request body is not valid JSON: {error}") from None


def _hang_up(request: web.Request) -> web.StreamResponse:
    """Close the connection without a response, as a dropped connection looks to a client."""
    if request.transport is not None:
        request.transport.close()
    # aiohttp finds the transport closed and discards this response quietly.
    return web.Response(status=500)


# --------------------------------------------------------------------------- runners


async def serve_forever(
    config: SimulatorConfig, ready: Callable[[Simulator], None] | None = None
) -> None:
    """Run a simulator until cancelled; ``ready(sim)`` is called once it is listening."""
    async with Simulator(config) as simulator:
        if ready is not None:
            ready(simulator)
        await asyncio.Event().wait()


class SimulatorThread:
    """A Simulator on its own event loop in a background thread, for subprocess tests.

    with SimulatorThread(SimulatorConfig(latency=0.01)) as sim:
        subprocess.run(["apiproc", "run", "in.jsonl", "--request-url", sim.messages_url,
                        "--api-key", "test"], timeout=30)
        assert sim.stats.succeeded == 10
    """

    def __init__(self, config: SimulatorConfig | None = None, *, timeout: float = 10.0) -> None:
        self._config = config if config is not None else SimulatorConfig()
        self._timeout = timeout
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apiproc-simulator", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._simulator: Simulator | None = None
        self._failure: BaseException | None = None

    def __enter__(self) -> Simulator:
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise RuntimeError(f"the simulator did not start within {self._timeout} s")
        if self._failure is not None or self._simulator is None:
            raise RuntimeError("the simulator failed to start") from self._failure
        return self._simulator

    def __exit__(self, *exc_info: object) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(self._timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # handed to __enter__, which re-raises it
            self._failure = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Simulator(self._config) as simulator:
            self._simulator = simulator
            self._ready.set()
            await self._stop.wait()
