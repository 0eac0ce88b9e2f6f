"""Request validation: headers, JSON, and the Messages body, per ``anthropic-version``.

    dialect = read_dialect(request.headers.getall("anthropic-version", []),
                           request.headers.getall("anthropic-beta", []))
    checked = validate(parse_json(raw), dialect, counting=False, today=today)  # or ApiError

Problems are reported the way the API reports them (shared/reference/anthropic-api.md §A):
the field path, then the pydantic-style message. The body rules are looked up by the
request's ``anthropic-version`` in ``_RULES_BY_VERSION``, so a version whose rules differ
gets its own ``VersionRules`` instead of conditions threaded through every check.
2026-10-21 (anthropic-api-2026.md §1.2) drops ``temperature``, ``top_p`` and ``top_k``, and
refuses a ``document`` block directly in an assistant turn and citations on user text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any

from apiproc.simulator.cache import CACHE_TTL_SECONDS
from apiproc.simulator.errors import ApiError, invalid
from apiproc.simulator.models import MODELS, ModelSpec
from apiproc.simulator.tokens import Prompt, build_prompt

MAX_MESSAGES = 100_000
LONG_CONTEXT_WINDOW = 1_000_000
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
SAMPLING_FIELDS = frozenset({"temperature", "top_p", "top_k"})
TOOL_CHOICE_TYPES = frozenset({"auto", "any", "tool", "none"})
THINKING_TYPES = frozenset({"enabled", "disabled", "adaptive"})
MIN_THINKING_BUDGET = 1_024
SERVICE_TIERS = frozenset({"auto", "standard_only"})


@dataclass(frozen=True, slots=True)
class Dialect:
    """Which API a request speaks: its ``anthropic-version`` and ``anthropic-beta`` names."""

    version: str
    betas: frozenset[str]


@dataclass(slots=True)
class Checked:
    """A request body that passed validation, with what the later steps need."""

    body: dict[str, Any]
    spec: ModelSpec
    prompt: Prompt
    max_tokens: int
    raw: bytes = b""  # the body as sent, which seeds the generated answer


def read_dialect(versions: list[str], betas: list[str]) -> Dialect:
    """Check the ``anthropic-version`` and ``anthropic-beta`` header values, in that order."""
    return Dialect(_check_version(versions), _check_betas(betas))


def _check_version(values: list[str]) -> str:
    if not values:
        raise invalid("anthropic-version: header is required")
    version = ", ".join(values)
    if version not in API_VERSIONS:
        raise invalid(f'anthropic-version: "{version}" is not a valid version')
    return version


def _check_betas(values: list[str]) -> frozenset[str]:
    """Beta names, comma-separated and/or in repeated headers; unknown names are refused."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    for name in names:
        if name not in KNOWN_BETAS:
            raise invalid(f"Unsupported beta header: {name}")
    return frozenset(names)


def parse_json(raw: bytes) -> object:
    """The body as JSON, or the API's 400 for a body that is not JSON."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise invalid(f"The request body is not valid JSON: {error}") from None


MessageRule = Callable[[Mapping[str, Any], str], None]


@dataclass(frozen=True, slots=True)
class VersionRules:
    """What one ``anthropic-version`` accepts, beyond the checks every version shares."""

    create_fields: frozenset[str]
    count_fields: frozenset[str]
    message_rules: tuple[MessageRule, ...] = ()  # each called with (message, its path)


def validate(
    body: object, dialect: Dialect, *, counting: bool, today: date, in_batch: bool = False
) -> Checked:
    """Validate a Messages (or count_tokens) body the way the API reports problems;
    `in_batch` for a request of a Message Batch, which may allow a longer output."""
    rules = _RULES_BY_VERSION[dialect.version]
    return _check_body(body, dialect, counting, today, rules, in_batch)


def _check_body(
    body: object,
    dialect: Dialect,
    counting: bool,
    today: date,
    rules: VersionRules,
    in_batch: bool = False,
) -> Checked:
    fields = _require_object(body, "body")
    spec = _resolve_model(fields, today)
    _reject_extra(fields, rules.count_fields if counting else rules.create_fields, "")
    max_tokens = 0 if counting else _check_max_tokens(fields, spec, dialect.betas, in_batch)
    _check_messages(fields, spec)
    for index, message in enumerate(fields["messages"]):
        for rule in rules.message_rules:
            rule(message, f"messages.{index}")
    _check_system(fields)
    _check_metadata(fields)
    _check_tools(fields)
    _check_tool_choice(fields)
    _check_thinking(fields, None if counting else max_tokens)
    _check_options(fields)
    prompt = build_prompt(fields, spec)
    _check_context(prompt, spec, dialect.betas)
    return Checked(fields, spec, prompt, max_tokens)


def _blocks(message: Mapping[str, Any]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    content = message["content"]
    return enumerate(content) if isinstance(content, list) else iter(())


def _has_citations(block: object) -> bool:
    return (
        isinstance(block, dict)
        and isinstance(block.get("citations"), list)
        and bool(block["citations"])
    )


def _no_document_in_assistant_turn(message: Mapping[str, Any], path: str) -> None:
    """2026-10-21: a document directly in an assistant message is a 400 (nested ones pass)."""
    if message["role"] != "assistant":
        return
    for number, block in _blocks(message):
        if block["type"] == "document":
            # The docs give the rule and the status, not the wording: this message is a guess.
            raise invalid(
                f"{path}.content.{number}: document blocks are not permitted in assistant "
                "messages; send documents in user messages"
            )


def _no_citations_on_user_text(message: Mapping[str, Any], path: str) -> None:
    """2026-10-21: non-empty citations on user text, directly or in a search_result, are a 400."""
    if message["role"] != "user":
        return
    for number, block in _blocks(message):
        inner = block.get("content") if block["type"] == "search_result" else None
        nested = enumerate(inner) if isinstance(inner, list) else iter(())
        cited = [(f"{path}.content.{number}", block)] if block["type"] == "text" else []
        cited += [
            (f"{path}.content.{number}.content.{index}", item)
            for index, item in nested
            if isinstance(item, dict) and item.get("type") == "text"
        ]
        for where, text in cited:
            if _has_citations(text):
                # The docs give the rule and the status, not the wording: this message is a guess.
                raise invalid(
                    f"{where}.citations: citations are not permitted on text in user messages"
                )


RULES_2023 = VersionRules(CREATE_FIELDS, COUNT_FIELDS)
RULES_2026_10_21 = VersionRules(
    CREATE_FIELDS - SAMPLING_FIELDS,
    COUNT_FIELDS,
    (_no_document_in_assistant_turn, _no_citations_on_user_text),
)
_RULES_BY_VERSION: Mapping[str, VersionRules] = MappingProxyType(
    {"2023-01-01": RULES_2023, "2023-06-01": RULES_2023, "2026-10-21": RULES_2026_10_21}
)
API_VERSIONS = frozenset(_RULES_BY_VERSION)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{path}: Input should be a valid dictionary")
    return value


def _reject_extra(fields: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in fields:
        if key not in allowed:
            raise invalid(f"{prefix}{key}: Extra inputs are not permitted")


def _resolve_model(fields: Mapping[str, Any], today: date) -> ModelSpec:
    """The model's spec; an unknown or retired model is a 404, answered alike (2026 §0)."""
    if "model" not in fields:
        raise invalid("model: Field required")
    name = fields["model"]
    if not isinstance(name, str):
        raise invalid("model: Input should be a valid string")
    spec = MODELS.get(name)
    if spec is None or spec.retired_on(today):
        raise ApiError(404, "not_found_error", f"model: {name}")
    return spec


def _check_max_tokens(
    fields: Mapping[str, Any], spec: ModelSpec, betas: frozenset[str], in_batch: bool = False
) -> int:
    if "max_tokens" not in fields:
        raise invalid("max_tokens: Field required")
    value = fields["max_tokens"]
    if not _is_int(value):
        raise invalid("max_tokens: Input should be a valid integer")
    if value < 1:
        raise invalid("max_tokens: Input should be greater than or equal to 1")
    limit = 128_000 if spec.output_128k and "output-128k-2025-02-19" in betas else spec.max_output
    if in_batch and spec.output_300k_batch and "output-300k-2026-03-24" in betas:
        limit = 300_000  # "Max output (Batch API, beta): 300K tokens" (2026 §3.4)
    if value > limit:
        raise invalid(
            f"max_tokens: {value} > {limit}, which is the maximum allowed number of "
            f"output tokens for {spec.id}"
        )
    return value


def _check_range(fields: Mapping[str, Any], key: str, low: float, high: float | None) -> None:
    if key not in fields or fields[key] is None:
        return
    value = fields[key]
    if not _is_number(value):
        raise invalid(f"{key}: Input should be a valid number")
    if value < low:
        raise invalid(f"{key}: Input should be greater than or equal to {low:g}")
    if high is not None and value > high:
        raise invalid(f"{key}: Input should be less than or equal to {high:g}")


def _check_cache_control(value: object, path: str) -> None:
    control = _require_object(value, path)
    _reject_extra(control, frozenset({"type", "ttl"}), f"{path}.")
    if control.get("type") != "ephemeral":
        raise invalid(f"{path}.type: Input should be 'ephemeral'")
    if "ttl" in control and control["ttl"] not in CACHE_TTL_SECONDS:
        raise invalid(f"{path}.ttl: Input should be '5m' or '1h'")


def _check_block(value: object, path: str) -> None:
    block = _require_object(value, path)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise invalid(f"{path}.type: Field required")
    if kind not in BLOCK_TYPES:
        raise invalid(
            f"{path}: Input tag '{kind}' found using 'type' does not match any of the "
            f"expected tags: {', '.join(sorted(BLOCK_TYPES))}"
        )
    if kind == "text" and not isinstance(block.get("text"), str):
        raise invalid(f"{path}.text: Field required")
    if "cache_control" in block and block["cache_control"] is not None:
        _check_cache_control(block["cache_control"], f"{path}.cache_control")


def _check_message(value: object, index: int, is_last: bool) -> None:
    path = f"messages.{index}"
    message = _require_object(value, path)
    _reject_extra(message, frozenset({"role", "content"}), f"{path}.")
    if message.get("role") not in ("user", "assistant"):
        raise invalid(f"{path}.role: Input should be 'user' or 'assistant'")
    if "content" not in message:
        raise invalid(f"{path}.content: Field required")
    content = message["content"]
    if isinstance(content, list):
        for number, block in enumerate(content):
            _check_block(block, f"{path}.content.{number}")
    elif not isinstance(content, str):
        raise invalid(f"{path}.content: Input should be a valid string or list")
    if not content and not (is_last and message["role"] == "assistant"):
        raise invalid(
            f"{path}: all messages must have non-empty content except for the optional "
            "final assistant message"
        )


def _check_messages(fields: Mapping[str, Any], spec: ModelSpec) -> None:
    if "messages" not in fields:
        raise invalid("messages: Field required")
    messages = fields["messages"]
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    if len(messages) > MAX_MESSAGES:
        raise invalid(f"messages: at most {MAX_MESSAGES} messages are allowed in one request")
    for index, message in enumerate(messages):
        _check_message(message, index, index == len(messages) - 1)
    if messages[-1]["role"] == "assistant" and not spec.allows_prefill:
        raise invalid(
            "This model does not support assistant message prefill. "
            "The conversation must end with a user message."
        )


def _check_system(fields: Mapping[str, Any]) -> None:
    system = fields.get("system")
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise invalid("system: Input should be a valid string or list")
    for index, block in enumerate(system):
        _check_block(block, f"system.{index}")
        if block["type"] != "text":
            raise invalid(f"system.{index}.type: Input should be 'text'")


def _check_metadata(fields: Mapping[str, Any]) -> None:
    if fields.get("metadata") is None:
        return
    metadata = _require_object(fields["metadata"], "metadata")
    _reject_extra(metadata, frozenset({"user_id"}), "metadata.")
    user_id = metadata.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise invalid("metadata.user_id: Input should be a valid string")
    if user_id is not None and len(user_id) > 256:
        raise invalid("metadata.user_id: String should have at most 256 characters")


def _check_tools(fields: Mapping[str, Any]) -> None:
    tools = fields.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    names: set[str] = set()
    for index, value in enumerate(tools):
        tool = _require_object(value, f"tools.{index}")
        if tool.get("type") in (None, "custom") and not isinstance(tool.get("name"), str):
            raise invalid(f"tools.{index}.name: Field required")
        if "cache_control" in tool and tool["cache_control"] is not None:
            _check_cache_control(tool["cache_control"], f"tools.{index}.cache_control")
        name = tool.get("name")
        if name in names:
            raise invalid("tools: Tool names must be unique.")
        if isinstance(name, str):
            names.add(name)


def _check_tool_choice(fields: Mapping[str, Any]) -> None:
    if fields.get("tool_choice") is None:
        return
    choice = _require_object(fields["tool_choice"], "tool_choice")
    if choice.get("type") not in TOOL_CHOICE_TYPES:
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
        raise invalid("tool_choice.name: Field required")


def _check_thinking(fields: Mapping[str, Any], max_tokens: int | None) -> None:
    if fields.get("thinking") is None:
        return
    thinking = _require_object(fields["thinking"], "thinking")
    if thinking.get("type") not in THINKING_TYPES:
        raise invalid("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
    if thinking["type"] != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not _is_int(budget):
        raise invalid("thinking.enabled.budget_tokens: Field required")
    if budget < MIN_THINKING_BUDGET:
        raise invalid(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if max_tokens is not None and max_tokens <= budget:
        raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")


def _check_options(fields: Mapping[str, Any]) -> None:
    _check_range(fields, "temperature", 0.0, 1.0)
    _check_range(fields, "top_p", 0.0, 1.0)
    if fields.get("top_k") is not None and not _is_int(fields["top_k"]):
        raise invalid("top_k: Input should be a valid integer")
    _check_range(fields, "top_k", 0, None)
    stops = fields.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise invalid("stop_sequences: Input should be a valid list of strings")
    if "stream" in fields and not isinstance(fields["stream"], bool):
        raise invalid("stream: Input should be a valid boolean")
    tier = fields.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        raise invalid("service_tier: Input should be 'auto' or 'standard_only'")
    if fields.get("cache_control") is not None:
        _check_cache_control(fields["cache_control"], "cache_control")


def _check_context(prompt: Prompt, spec: ModelSpec, betas: frozenset[str]) -> None:
    long_context = spec.long_context and "context-1m-2025-08-07" in betas
    window = LONG_CONTEXT_WINDOW if long_context else spec.context_window
    if prompt.total_tokens > window:
        raise invalid(f"prompt is too long: {prompt.total_tokens} tokens > {window} maximum")
