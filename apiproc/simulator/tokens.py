"""The simulator's own tokenizer, and the prompt as a chain of hashed prefixes.

    count_tokens("Hello, world")  # 5: "Hello" 2, "," 1, "world" 2
    prompt = build_prompt(body, MODELS["claude-sonnet-4-6"])
    prompt.total_tokens, [segment.ttl for segment in prompt.segments]

The tokenizer is deliberately not cl100k, so a client's estimate has to learn from the real
usage: text is split by the regex ``\\w+|[^\\w\\s]`` and each piece counts
``ceil(len(piece) / 3)`` tokens. A request adds 3 tokens per message and 5 per request;
images and documents are 1,500 tokens each; tools, tool_use and other non-text blocks count
as their canonical JSON. Each block's segment carries the hash of the whole prefix up to it,
which is what the prompt cache keys on, and its cache breakpoint if it is one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from apiproc.simulator.errors import invalid
from apiproc.simulator.models import ModelSpec

MAX_CACHE_BREAKPOINTS = 4
MEDIA_TOKENS = 1_500
MESSAGE_OVERHEAD_TOKENS = 3
REQUEST_OVERHEAD_TOKENS = 5

_TOKEN_PIECE = re.compile(r"\w+|[^\w\s]")


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
class Segment:
    """One block of the prompt, in cache order (tools, system, messages)."""

    digest: bytes  # hash of the whole prefix up to and including this block
    tokens: int  # prefix length in tokens up to and including this block
    ttl: str | None  # the block's cache_control ttl when it is a breakpoint


@dataclass(slots=True)
class Prompt:
    segments: list[Segment]
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


def build_prompt(body: Mapping[str, Any], spec: ModelSpec) -> Prompt:
    """Token-count the request and hash every prefix, marking the cache breakpoints."""
    digest = hashlib.sha256(spec.id.encode()).digest()
    tokens = 0
    segments: list[Segment] = []
    for tag, block, overhead in _prompt_blocks(body):
        tokens += overhead + _block_tokens(block)
        payload = f"{tag}\n{_canonical(_without_cache_control(block))}".encode()
        digest = hashlib.sha256(digest + payload).digest()
        control = block.get("cache_control")
        ttl = control.get("ttl", "5m") if isinstance(control, dict) else None
        segments.append(Segment(digest, tokens, ttl))
    empty_messages = sum(1 for m in body["messages"] if not m["content"])
    total = tokens + MESSAGE_OVERHEAD_TOKENS * empty_messages + REQUEST_OVERHEAD_TOKENS
    _apply_top_level_cache_control(body, segments)
    _check_breakpoints(segments)
    return Prompt(segments, total)


def _apply_top_level_cache_control(body: Mapping[str, Any], segments: list[Segment]) -> None:
    control = body.get("cache_control")
    if not isinstance(control, dict) or not segments:
        return
    if segments[-1].ttl is None:
        segments[-1].ttl = control.get("ttl", "5m")
    elif sum(1 for s in segments if s.ttl) >= MAX_CACHE_BREAKPOINTS:
        # The docs say the automatic marker is a fifth breakpoint when four exist.
        raise invalid(_too_many_breakpoints(MAX_CACHE_BREAKPOINTS + 1))


def _too_many_breakpoints(found: int) -> str:
    return (
        f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
        f"Found {found}."
    )


def _check_breakpoints(segments: list[Segment]) -> None:
    ttls = [segment.ttl for segment in segments if segment.ttl]
    if len(ttls) > MAX_CACHE_BREAKPOINTS:
        raise invalid(_too_many_breakpoints(len(ttls)))
    if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
        raise invalid(
            "cache_control: a ttl='1h' cache_control block must not come after a "
            "ttl='5m' cache_control block; longer TTLs must come first."
        )
