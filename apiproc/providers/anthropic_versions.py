"""What each `anthropic-version` refuses, found in a line before anything is sent.

    problem = version_problem(params, "2026-10-21")  # None, or why the API would answer 400
    version_problem({"temperature": 0, ...}, "2026-10-21")
    # "temperature: anthropic-version 2026-10-21 refuses it at any value (...)"

The API has two current versions (anthropic-api-2026.md §1-§2): `2023-06-01`, still
accepted with no announced sunset, and `2026-10-21`, which the SDK 2.x sends. Under
2026-10-21 three things are always a 400 `invalid_request_error`, on every model, in
Messages, count_tokens and batches: the sampling parameters `temperature`, `top_p` and
`top_k` at any value; a `document` block directly in an assistant message; and non-empty
`citations` on a `text` block in a user message, directly or inside a `search_result`.
A line the API would certainly refuse is a bad line, so it costs no request and its
record says what to change.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

VERSION_2023 = "2023-06-01"
VERSION_2026 = "2026-10-21"
# Newest first after the default; 2023-01-01 is the initial version, still accepted.
API_VERSIONS = (VERSION_2023, VERSION_2026, "2023-01-01")
SAMPLING_PARAMETERS = ("temperature", "top_p", "top_k")
FALLBACK = f"or run with --anthropic-version {VERSION_2023}"


def version_problem(params: Mapping[str, Any], version: str) -> str | None:
    """Why `version` of the API would refuse `params`, with what to do; None if it would not."""
    if version != VERSION_2026:
        return None
    return _sampling_problem(params) or _content_problem(params.get("messages"))


def _sampling_problem(params: Mapping[str, Any]) -> str | None:
    sent = [name for name in SAMPLING_PARAMETERS if name in params]
    if not sent:
        return None
    names = ", ".join(sent)
    return (
        f"{names}: anthropic-version {VERSION_2026} refuses "
        f"{'them' if len(sent) > 1 else 'it'} at any value (the API answers 400); "
        f"remove {names} from the line, {FALLBACK}"
    )


def _content_problem(messages: object) -> str | None:
    if not isinstance(messages, list):
        return None
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        for path, block in _blocks(message, f"messages.{index}"):
            if message.get("role") == "assistant" and block.get("type") == "document":
                return (
                    f"{path}: anthropic-version {VERSION_2026} refuses a document block "
                    f"directly in an assistant message; move it to a user message, {FALLBACK}"
                )
            if message.get("role") == "user":
                problem = _citations_problem(block, path)
                if problem:
                    return problem
    return None


def _citations_problem(block: Mapping[str, Any], path: str) -> str | None:
    cited = [(path, block)] if block.get("type") == "text" else []
    if block.get("type") == "search_result" and isinstance(block.get("content"), list):
        cited += [
            (f"{path}.content.{number}", item)
            for number, item in enumerate(block["content"])
            if isinstance(item, dict) and item.get("type") == "text"
        ]
    for where, text in cited:
        citations = text.get("citations")
        if isinstance(citations, list) and citations:
            return (
                f"{where}.citations: anthropic-version {VERSION_2026} refuses citations on "
                f"text in a user message; remove them, {FALLBACK}"
            )
    return None


def _blocks(message: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    content = message.get("content")
    if not isinstance(content, list):
        return
    for number, block in enumerate(content):
        if isinstance(block, dict):
            yield f"{path}.content.{number}", block
