"""The simulator streams `"stream": true` answers as the documented server-sent events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from apiproc.simulator import Simulator, SimulatorConfig, SimulatorThread

HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
SCENARIO_TIMEOUT = 10.0

Scenario = Callable[[Simulator, aiohttp.ClientSession], Awaitable[None]]


def simulate(scenario: Scenario, **config: Any) -> None:
    """Run ``scenario`` against a fresh simulator, bounded in time."""

    async def main() -> None:
        async with (
            Simulator(SimulatorConfig(**config)) as sim,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        ):
            await scenario(sim, session)

    asyncio.run(asyncio.wait_for(main(), SCENARIO_TIMEOUT))


def body(streamed: bool = True, **fields: Any) -> dict[str, Any]:
    request = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello there"}],
        **fields,
    }
    if streamed:
        request["stream"] = True
    return request


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event, as the stream delivers them."""
    name, data = "", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif not line and name:
            yield name, json.loads(data)
            name, data = "", ""


async def all_events(
    session: aiohttp.ClientSession, url: str, request: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, list[tuple[str, dict[str, Any]]]]:
    async with session.post(url, json=request, headers=HEADERS) as response:
        assert response.status == 200
        return response, [event async for event in events(response)]


def test_a_streamed_answer_sends_the_documented_events_in_order() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        response, got = await all_events(session, sim.messages_url, body())
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["request-id"].startswith("req_")
        assert "anthropic-ratelimit-output-tokens-remaining" in response.headers
        names = [name for name, _ in got]
        assert names[:3] == ["message_start", "content_block_start", "ping"]
        deltas = names[3:-3]
        assert deltas and set(deltas) == {"content_block_delta"}
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert all(data["type"] == name for name, data in got)
        start = got[0][1]["message"]
        assert start["content"] == [] and start["stop_reason"] is None
        assert start["usage"]["output_tokens"] == 1
        assert start["usage"]["input_tokens"] > 0
        assert "cache_read_input_tokens" in start["usage"]
        final = got[-2][1]
        assert final["delta"]["stop_reason"] in ("end_turn", "max_tokens")
        assert final["usage"]["output_tokens"] == sim.stats.output_tokens
        assert final["usage"]["input_tokens"] == start["usage"]["input_tokens"]
        assert sim.stats.streamed == 1 and sim.stats.succeeded == 1

    simulate(scenario)


def test_a_stream_carries_the_same_text_as_the_plain_answer() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        _, got = await all_events(session, sim.messages_url, body())
        text = "".join(data["delta"]["text"] for name, data in got if name == "content_block_delta")
        plain_request = body(False, stream=False)
        async with session.post(sim.messages_url, json=plain_request, headers=HEADERS) as plain:
            message = await plain.json()
        assert text == message["content"][0]["text"]
        assert got[-2][1]["usage"]["output_tokens"] == message["usage"]["output_tokens"]

    simulate(scenario)


def test_the_official_sdk_assembles_the_stream_into_the_plain_message() -> None:
    anthropic = pytest.importorskip("anthropic")
    with SimulatorThread(SimulatorConfig(output_tokens_per_second=5_000)) as sim:
        client = anthropic.Anthropic(
            api_key="sk-test",
            base_url=sim.base_url,
            max_retries=0,
            # 2023-06-01 is accepted by every simulator version.
            default_headers={"anthropic-version": "2023-06-01"},
        )
        request = body(False, max_tokens=200)
        plain = client.messages.create(**request, stream=False)
        with client.messages.stream(**request) as stream:
            streamed = stream.get_final_message()
    # The SDK's accumulator writes stop_details=None; the plain answer leaves it out.
    as_plain = plain.to_dict(exclude_none=True)
    as_streamed = streamed.to_dict(exclude_none=True)
    assert as_streamed.pop("id") != as_plain.pop("id")
    assert as_streamed == as_plain
    assert sim.stats.streamed == 1


def test_pings_fill_the_silence_before_the_first_token() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        _, got = await all_events(session, sim.messages_url, body())
        names = [name for name, _ in got]
        before_text = names[: names.index("content_block_delta")]
        assert before_text.count("ping") >= 3

    simulate(scenario, latency=1.0, ping_interval=0.05)


def test_no_pings_when_the_interval_is_zero() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        _, got = await all_events(session, sim.messages_url, body())
        assert [name for name, _ in got].count("ping") == 1  # the documented one up front

    simulate(scenario, latency=0.2, ping_interval=0)


def test_output_tokens_are_charged_while_the_stream_is_generated() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        request = body(max_tokens=2_000)
        async with session.post(sim.messages_url, json=request, headers=HEADERS) as response:
            sent = 0
            async for name, data in events(response):
                if name == "content_block_delta":
                    sent += len(data["delta"]["text"].split())
                if sent >= 1_000:
                    break
            probe = body(False, max_tokens=1)
            async with session.post(sim.messages_url, json=probe, headers=HEADERS) as other:
                remaining = int(other.headers["anthropic-ratelimit-output-tokens-remaining"])
        assert remaining <= 3_000  # 4,000 per minute, ~1,000 already generated

    simulate(
        scenario,
        output_tokens_per_minute=4_000,
        output_tokens=(2_000, 2_000),
        output_tokens_per_second=2_000,
    )


def test_a_midway_error_event_follows_some_content() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        _, got = await all_events(session, sim.messages_url, body())
        names = [name for name, _ in got]
        assert names[0] == "message_start" and "content_block_delta" in names
        assert names[-1] == "error" and "message_stop" not in names
        assert got[-1][1] == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
        assert sim.stats.faults_injected == 1 and sim.stats.succeeded == 0

    simulate(scenario, rate_stream_error=1.0)


def test_a_plain_request_overloaded_partway_gets_a_529() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        async with session.post(sim.messages_url, json=body(False), headers=HEADERS) as response:
            assert response.status == 529
            assert (await response.json())["error"]["type"] == "overloaded_error"

    simulate(scenario, rate_stream_error=1.0)


def test_a_midway_stall_goes_silent_after_some_events_then_cuts_the_connection() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        names: list[str] = []
        started = time.monotonic()
        async with session.post(sim.messages_url, json=body(), headers=HEADERS) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for name, _ in events(response):
                    names.append(name)
        assert time.monotonic() - started >= 0.3
        assert "content_block_delta" in names and "message_stop" not in names
        assert names[-1] == "content_block_delta"  # no ping while stalled
        assert sim.stats.by_status == {200: 1} and sim.stats.succeeded == 0

    simulate(scenario, rate_stall=1.0, stall_seconds=0.3, ping_interval=0.05)


def test_a_rate_limited_stream_is_refused_before_it_begins() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        await all_events(session, sim.messages_url, body())
        async with session.post(sim.messages_url, json=body(), headers=HEADERS) as response:
            assert response.status == 429
            assert response.headers["content-type"].startswith("application/json")
            assert "retry-after" in response.headers
        assert sim.stats.streamed == 1

    simulate(scenario, requests_per_minute=1)


def test_pre_answer_faults_still_answer_a_stream_request_with_an_error() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        async with session.post(sim.messages_url, json=body(), headers=HEADERS) as response:
            assert response.status == 500
            assert (await response.json())["error"]["type"] == "api_error"
        assert sim.stats.streamed == 0

    simulate(scenario, rate_500=1.0)
