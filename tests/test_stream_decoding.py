"""Streamed answers: which requests stream, and how their events become one Outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apiproc.jsonio import loads
from apiproc.providers import AnthropicProvider, Verdict
from apiproc.providers.sse import ServerSentEvent, SseParser

STREAM_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "request-id": "req_1"}


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def message_start(input_tokens: int = 12) -> bytes:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "cache_read_input_tokens": 0, "output_tokens": 1},
    }
    return sse("message_start", {"type": "message_start", "message": message})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def block_stop(index: int) -> bytes:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def message_end(output_tokens: int, stop_reason: str = "end_turn") -> bytes:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    usage = {"output_tokens": output_tokens}
    return sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}) + sse(
        "message_stop", {"type": "message_stop"}
    )


def decode(*chunks: bytes) -> Any:
    decoder = AnthropicProvider(api_key="k").decoder(200, STREAM_HEADERS)
    assert decoder is not None
    for chunk in chunks:
        decoder.feed(chunk)
    return decoder.finish()


# --------------------------------------------------------------------------- SSE


def test_events_split_anywhere_across_chunks_come_out_whole() -> None:
    wire = b"event: ping\r\ndata: {}\r\n\r\n: a comment\nevent: a\ndata: 1\ndata: 2\n\n"
    for size in range(1, len(wire) + 1):
        parser = SseParser()
        got = [
            e
            for start in range(0, len(wire), size)
            for e in parser.feed(wire[start : start + size])
        ]
        assert got == [ServerSentEvent("ping", "{}"), ServerSentEvent("a", "1\n2")]


# --------------------------------------------------------------------------- assembly


def test_text_thinking_and_tool_use_blocks_assemble_as_a_plain_answer_has_them() -> None:
    outcome = decode(
        message_start(),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        block_delta(0, {"type": "thinking_delta", "thinking": "Let me "}),
        block_delta(0, {"type": "thinking_delta", "thinking": "see."}),
        block_delta(0, {"type": "signature_delta", "signature": "sig"}),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        sse("ping", {"type": "ping"}),
        block_delta(1, {"type": "text_delta", "text": "Hello"}),
        block_delta(1, {"type": "text_delta", "text": " world"}),
        block_delta(1, {"type": "citations_delta", "citation": {"cited_text": "w"}}),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {}}),
        block_delta(2, {"type": "input_json_delta", "partial_json": '{"city": "Pa'}),
        block_delta(2, {"type": "input_json_delta", "partial_json": 'ris"}'}),
        block_stop(2),
        message_end(42, "tool_use"),
    )
    assert outcome.verdict is Verdict.SUCCESS
    assert outcome.request_id == "req_1"
    assert outcome.message["content"] == [
        {"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
        {"type": "text", "text": "Hello world", "citations": [{"cited_text": "w"}]},
        {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Paris"}},
    ]
    assert outcome.message["stop_reason"] == "tool_use"
    assert outcome.message["usage"] == {
        "input_tokens": 12,
        "cache_read_input_tokens": 0,
        "output_tokens": 42,
    }
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (12, 42)


def test_the_usage_so_far_is_reported_at_message_start_and_each_message_delta() -> None:
    decoder = AnthropicProvider(api_key="k").decoder(200, STREAM_HEADERS)
    assert decoder is not None
    started = decoder.feed(message_start(input_tokens=30))
    assert (started.input_tokens, started.output_tokens) == (30, 1)
    assert decoder.feed(block_start(0, {"type": "text", "text": ""})) is None
    ended = decoder.feed(message_end(output_tokens=77))
    assert (ended.input_tokens, ended.output_tokens) == (30, 77)


@pytest.mark.parametrize(
    ("error_type", "verdict"),
    [
        ("overloaded_error", Verdict.RETRY),
        ("api_error", Verdict.RETRY),
        ("invalid_request_error", Verdict.PERMANENT),
        ("billing_error", Verdict.FATAL),
    ],
)
def test_an_error_event_after_the_200_is_judged_by_its_type(
    error_type: str, verdict: Verdict
) -> None:
    error = {"type": error_type, "message": "x"}
    outcome = decode(
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Hel"}),
        sse("error", {"type": "error", "error": error}),
    )
    assert outcome.verdict is verdict
    assert outcome.error == error
    assert outcome.message is None


def test_a_stream_that_ends_before_message_stop_is_retried() -> None:
    outcome = decode(message_start(), block_start(0, {"type": "text", "text": ""}))
    assert outcome.verdict is Verdict.RETRY
    assert "before message_stop" in outcome.error["message"]


def test_a_json_answer_to_a_streamed_request_is_read_whole() -> None:
    provider = AnthropicProvider(api_key="k")
    assert provider.decoder(200, {"content-type": "application/json"}) is None
    assert provider.decoder(529, STREAM_HEADERS) is None


# --------------------------------------------------------------------------- transport


def params(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [], **fields}


@pytest.mark.parametrize(
    ("line", "timeout", "streamed"),
    [
        (params(), 600.0, False),
        (params(stream=True), 600.0, True),
        (params(stream=False), 600.0, False),
        (params(max_tokens=21_333), 600.0, False),  # the SDK's 10-minute rule
        (params(max_tokens=21_334), 600.0, True),
        (params(max_tokens=4_000), 60.0, True),  # a shorter timeout streams sooner
        (params(model="claude-opus-4-0", max_tokens=8_193), 600.0, True),  # non-streaming cap
        (params(model="claude-opus-4-1-20250805", max_tokens=8_192), 600.0, False),
    ],
)
def test_auto_transport_streams_lines_that_ask_or_whose_answer_may_outlast_the_timeout(
    line: dict[str, Any], timeout: float, streamed: bool
) -> None:
    request = AnthropicProvider(api_key="k", timeout=timeout).request(line)
    assert request.stream is streamed
    assert loads(request.body).get("stream", False) is streamed


def test_plain_transport_drops_stream_and_stream_transport_adds_it() -> None:
    plain = AnthropicProvider(api_key="k", transport="plain").request(params(stream=True))
    assert not plain.stream and "stream" not in loads(plain.body)
    streamed = AnthropicProvider(api_key="k", transport="stream").request(params())
    assert streamed.stream and loads(streamed.body)["stream"] is True
    assert streamed.headers["accept"] == "text/event-stream"


def test_a_streamed_attempt_may_take_as_long_as_its_max_tokens_needs() -> None:
    provider = AnthropicProvider(api_key="k", transport="stream", timeout=600.0)
    assert provider.request(params()).time_limit == 600.0
    assert provider.request(params(max_tokens=64_000)).time_limit == pytest.approx(1_800.0)
