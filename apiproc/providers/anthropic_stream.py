"""A streamed Messages answer, assembled into the message a non-streaming call returns.

    assembler = MessageAssembler()
    for event in events:                  # the parsed `data` of each server-sent event
        usage_changed = assembler.apply(event)
    assembler.message, assembler.error, assembler.complete

The events (shared/reference/anthropic-api.md §A.4): `message_start` carries the message
with empty content and the input usage; each content block opens with
`content_block_start`, grows by `content_block_delta`s and closes with
`content_block_stop`; `message_delta` sets the stop reason and carries the usage so far
(cumulative figures, so they replace rather than add); `message_stop` ends the answer. An
`error` event may come after the 200. `ping` and event types not known here are skipped,
as the docs ask of clients. The official SDK's accumulator is the reference for how the
deltas apply.
"""

from __future__ import annotations

import json
from typing import Any


class MessageAssembler:
    """Applies one stream's events, in order, to the message they describe."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.complete = False  # message_stop arrived
        self.broken: str | None = None  # why the events cannot be trusted, if they cannot
        self._tool_input: dict[int, str] = {}

    def apply(self, event: Any) -> bool:
        """Apply one event; True when it reported new usage figures."""
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "error":
            error = event.get("error")
            self.error = error if isinstance(error, dict) else {"type": "api_error"}
            return False
        if kind == "message_start":
            return self._start(event.get("message"))
        if self.message is None:
            if kind not in (None, "ping"):
                self.broken = f"a {kind} event came before message_start"
            return False
        if kind == "content_block_start":
            self.message["content"].append(dict(event.get("content_block") or {}))
        elif kind == "content_block_delta":
            self._delta(event.get("index"), event.get("delta") or {})
        elif kind == "content_block_stop":
            self._close_block(event.get("index"))
        elif kind == "message_delta":
            return self._message_delta(event)
        elif kind == "message_stop":
            self.complete = True
        return False

    def _start(self, message: Any) -> bool:
        if not isinstance(message, dict):
            self.broken = "message_start carried no message"
            return False
        self.message = {**message, "content": list(message.get("content") or [])}
        self.message["usage"] = dict(message.get("usage") or {})
        return True

    def _block(self, index: Any) -> dict[str, Any] | None:
        assert self.message is not None
        content = self.message["content"]
        if isinstance(index, int) and 0 <= index < len(content):
            return content[index]
        self.broken = f"an event for content block {index!r}, which was never started"
        return None

    def _delta(self, index: Any, delta: dict[str, Any]) -> None:
        block = self._block(index)
        if block is None:
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "input_json_delta":
            self._tool_input[index] = self._tool_input.get(index, "") + delta.get(
                "partial_json", ""
            )
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature", "")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _close_block(self, index: Any) -> None:
        block = self._block(index)
        text = self._tool_input.pop(index, "") if isinstance(index, int) else ""
        if block is None or not text:
            return
        try:
            block["input"] = json.loads(text)
        except ValueError:
            self.broken = f"the input of content block {index} is not JSON"

    def _message_delta(self, event: dict[str, Any]) -> bool:
        assert self.message is not None
        self.message.update(event.get("delta") or {})
        usage = event.get("usage")
        if not isinstance(usage, dict):
            return False
        figures = self.message["usage"]
        # Cumulative: each figure replaces the last; one left out keeps its earlier value.
        figures.update({name: value for name, value in usage.items() if value is not None})
        return True
