"""The simulator behaves like the documented Anthropic Messages API, over real HTTP."""

from __future__ import annotations

import asyncio
import calendar
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from apiproc.simulator import (
    SeenRequest,
    Simulator,
    SimulatorConfig,
    SimulatorThread,
    count_tokens,
)

HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
MODEL = "claude-sonnet-4-6"  # minimum cacheable prefix: 1,024 tokens
SCENARIO_TIMEOUT = 10.0
RFC3339_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RATE_LIMIT_HEADERS = [
    f"anthropic-ratelimit-{kind}-{field}"
    for kind in ("requests", "tokens", "input-tokens", "output-tokens")
    for field in ("limit", "remaining", "reset")
]

Scenario = Callable[[Simulator, aiohttp.ClientSession], Awaitable[None]]


def simulate(scenario: Scenario, **config: Any) -> None:
    """Run ``scenario`` against a fresh simulator, bounded in time."""

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            Simulator(SimulatorConfig(**config)) as sim,
            aiohttp.ClientSession(timeout=timeout) as session,
        ):
            await scenario(sim, session)

    asyncio.run(asyncio.wait_for(main(), SCENARIO_TIMEOUT))


def body(text: str = "hello there", **fields: Any) -> dict[str, Any]:
    request = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    request.update(fields)
    return request


def words(tokens: int) -> str:
    """Text of exactly ``tokens`` simulator tokens (each 3-letter word is one)."""
    return " ".join(["abc"] * tokens)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    payload: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, Any]]:
    sent = HEADERS if headers is None else headers
    async with session.post(url, json=payload, headers=sent) as response:
        return response.status, response.headers, await response.json(content_type=None)


def assert_api_error(status: int, data: dict[str, Any], headers: Any, error_type: str) -> str:
    assert data["type"] == "error"
    assert data["error"]["type"] == error_type
    assert data["request_id"].startswith("req_")
    assert headers["request-id"] == data["request_id"]
    assert headers["content-type"].startswith("application/json")
    return data["error"]["message"]


# --------------------------------------------------------------------------- tokenizer


def test_count_tokens_charges_each_word_or_symbol_a_third_of_its_length_rounded_up() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello, world") == 2 + 1 + 2
    assert count_tokens("a abc abcd") == 1 + 1 + 2
    assert count_tokens(words(7)) == 7


# --------------------------------------------------------------------------- success


def test_success_has_the_documented_message_shape_and_usage() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, headers, data = await post(session, sim.messages_url, body("hello there"))
        assert status == 200
        assert data["id"].startswith("msg_")
        assert data["type"] == "message" and data["role"] == "assistant"
        assert data["model"] == MODEL
        assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
        usage = data["usage"]
        assert usage["input_tokens"] == count_tokens("hello there") + 3 + 5
        assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
        assert usage["cache_creation"] == {
            "ephemeral_5m_input_tokens": 0,
            "ephemeral_1h_input_tokens": 0,
        }
        assert usage["service_tier"] == "standard"
        assert 16 <= usage["output_tokens"] <= 32
        assert count_tokens(data["content"][0]["text"]) == usage["output_tokens"]
        assert data["content"][0]["type"] == "text"
        assert headers["request-id"].startswith("req_")
        assert headers["anthropic-organization-id"]
        assert sim.stats.succeeded == 1 and sim.stats.by_status == {200: 1}

    simulate(scenario, output_tokens=(16, 32))


def test_output_longer_than_max_tokens_is_cut_with_stop_reason_max_tokens() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        _, _, data = await post(session, sim.messages_url, body(max_tokens=5))
        assert data["stop_reason"] == "max_tokens"
        assert data["usage"]["output_tokens"] == 5

    simulate(scenario, output_tokens=(50, 60))


def test_the_same_request_gets_the_same_answer() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        first = await post(session, sim.messages_url, body("same"))
        second = await post(session, sim.messages_url, body("same"))
        assert first[2]["content"] == second[2]["content"]

    simulate(scenario)


def test_seen_requests_record_headers_body_status_and_usage() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        _, _, data = await post(session, sim.messages_url, body("x", metadata={"user_id": "u1"}))
        [seen] = sim.seen
        assert isinstance(seen, SeenRequest)
        assert seen.path == "/v1/messages" and seen.status == 200
        assert seen.headers["x-api-key"] == "sk-test"
        assert seen.body is not None and seen.body["metadata"] == {"user_id": "u1"}
        assert seen.response_usage == data["usage"]

    simulate(scenario)


# --------------------------------------------------------------------------- header errors


def test_missing_or_wrong_api_key_is_401_authentication_error() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        version = {"anthropic-version": "2023-06-01"}
        for headers in (version, {**version, "x-api-key": "wrong"}):
            status, response_headers, data = await post(session, sim.messages_url, body(), headers)
            assert status == 401
            message = assert_api_error(status, data, response_headers, "authentication_error")
            assert message == "invalid x-api-key"
        bearer = {**version, "authorization": "Bearer right"}
        status, _, _ = await post(session, sim.messages_url, body(), bearer)
        assert status == 200

    simulate(scenario, api_key="right")


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (None, "anthropic-version: header is required"),
        ("2024-01-01", 'anthropic-version: "2024-01-01" is not a valid version'),
    ],
)
def test_missing_or_unknown_anthropic_version_is_400(version: str | None, message: str) -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        headers = {"x-api-key": "k"} | ({} if version is None else {"anthropic-version": version})
        status, response_headers, data = await post(session, sim.messages_url, body(), headers)
        assert status == 400
        assert assert_api_error(status, data, response_headers, "invalid_request_error") == message

    simulate(scenario)


def test_unknown_beta_is_400_and_known_betas_pass_comma_separated_or_repeated() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        bad = {**HEADERS, "anthropic-beta": "prompt-caching-2024-07-31,invalid-beta-name"}
        status, headers, data = await post(session, sim.messages_url, body(), bad)
        assert status == 400
        message = assert_api_error(status, data, headers, "invalid_request_error")
        assert message == "Unsupported beta header: invalid-beta-name"
        repeated = [
            *HEADERS.items(),
            ("anthropic-beta", "token-counting-2024-11-01,files-api-2025-04-14"),
            ("anthropic-beta", "context-1m-2025-08-07"),
        ]
        async with session.post(sim.messages_url, json=body(), headers=repeated) as response:
            assert response.status == 200

    simulate(scenario)


def test_body_that_is_not_json_is_400() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        async with session.post(sim.messages_url, data=b"{nope", headers=HEADERS) as response:
            data = await response.json()
            assert response.status == 400
            assert_api_error(400, data, response.headers, "invalid_request_error")

    simulate(scenario)


def test_body_over_32_mb_is_413_without_api_headers() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        oversized = b"x" * (32 * 1024 * 1024 + 1)
        async with session.post(sim.messages_url, data=oversized, headers=HEADERS) as response:
            data = await response.json()
            assert response.status == 413
            assert data["error"]["type"] == "request_too_large"
            assert "request-id" not in response.headers
            assert "anthropic-ratelimit-requests-limit" not in response.headers

    simulate(scenario)


# --------------------------------------------------------------------------- body errors


def test_unknown_model_is_404_not_found_error() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        request = body(model="claude-imaginary-9")
        status, headers, data = await post(session, sim.messages_url, request)
        assert status == 404
        assert assert_api_error(status, data, headers, "not_found_error") == (
            "model: claude-imaginary-9"
        )

    simulate(scenario)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"max_tokens": 100_000, "model": "claude-haiku-4-5"},
            "max_tokens: 100000 > 64000, which is the maximum allowed number of output "
            "tokens for claude-haiku-4-5-20251001",
        ),
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"messages": None}, "messages: Field required"),
        ({"metadata": {"user_id": "u", "session": "s"}}, "metadata.session: Extra inputs"),
        ({"metadata": {"user_id": "u" * 257}}, "metadata.user_id: String should have at most"),
        ({"temprature": 0.5}, "temprature: Extra inputs are not permitted"),
        ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"messages": []}, "messages: at least one message is required"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role: Input should"),
        ({"system": 42}, "system: Input should be a valid string or list"),
        ({"stream": "yes"}, "stream: Input should be a valid boolean"),
    ],
)
def test_invalid_body_is_400_with_the_field_named(change: dict[str, Any], message: str) -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        request = body(**change)
        for key in [k for k, v in change.items() if v is None]:
            del request[key]
        status, headers, data = await post(session, sim.messages_url, request)
        assert status == 400
        assert assert_api_error(status, data, headers, "invalid_request_error").startswith(message)
        assert headers["anthropic-ratelimit-requests-remaining"] == "4000"

    simulate(scenario)


def test_more_than_four_cache_breakpoints_is_400() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        marked = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
        request = body(messages=[{"role": "user", "content": [marked] * 5}])
        status, headers, data = await post(session, sim.messages_url, request)
        assert status == 400
        message = assert_api_error(status, data, headers, "invalid_request_error")
        assert message == "A maximum of 4 blocks with cache_control may be provided. Found 5."

    simulate(scenario)


# --------------------------------------------------------------------------- rate limits


def test_every_response_carries_the_twelve_rate_limit_headers_rounded_and_rfc3339() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        request = body(words(1_200))  # 1,208 input tokens: 100,000 - 1,208 rounds to 99,000
        status, headers, _ = await post(session, sim.messages_url, request)
        assert status == 200
        for name in RATE_LIMIT_HEADERS:
            assert name in headers, name
        assert headers["anthropic-ratelimit-requests-limit"] == "100"
        assert headers["anthropic-ratelimit-requests-remaining"] == "99"
        assert headers["anthropic-ratelimit-input-tokens-limit"] == "100000"
        assert headers["anthropic-ratelimit-input-tokens-remaining"] == "99000"
        assert headers["anthropic-ratelimit-output-tokens-remaining"] == "20000"
        assert headers["anthropic-ratelimit-tokens-limit"] == "120000"
        assert headers["anthropic-ratelimit-tokens-remaining"] == "119000"
        now = time.time()
        for name in RATE_LIMIT_HEADERS:
            if name.endswith("-reset"):
                value = headers[name]
                assert RFC3339_SECONDS.match(value), value
                reset = calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))
                assert now - 2 <= reset <= now + 62
        requests_reset = headers["anthropic-ratelimit-requests-reset"]
        assert calendar.timegm(time.strptime(requests_reset, "%Y-%m-%dT%H:%M:%SZ")) > now - 1

    simulate(
        scenario,
        requests_per_minute=100,
        input_tokens_per_minute=100_000,
        output_tokens_per_minute=20_000,
    )


def test_exhausted_input_bucket_gives_429_with_integer_retry_after_then_refills() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, _ = await post(session, sim.messages_url, body(words(59_000)))
        assert status == 200  # leaves about 992 of 60,000; refills 1,000 per second
        status, headers, data = await post(session, sim.messages_url, body(words(1_500)))
        assert status == 429
        message = assert_api_error(status, data, headers, "rate_limit_error")
        assert "rate limit of 60,000 input tokens per minute" in message
        retry_after = int(headers["retry-after"])
        assert 1 <= retry_after <= 2
        assert sim.stats.rate_limited == 1
        await asyncio.sleep(retry_after)
        status, _, _ = await post(session, sim.messages_url, body(words(1_500)))
        assert status == 200

    simulate(scenario, input_tokens_per_minute=60_000)


def test_window_seconds_rejects_a_burst_while_headers_show_per_minute_room() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        burst = [post(session, sim.messages_url, body(f"n{i}")) for i in range(3)]
        results = await asyncio.gather(*burst)
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 429, 429]
        for status, headers, data in results:
            assert headers["anthropic-ratelimit-requests-remaining"] == "59"
            if status == 429:
                assert "rate limit of 60 requests per minute" in data["error"]["message"]
                assert headers["retry-after"] == "1"

    simulate(scenario, requests_per_minute=60, window_seconds=1.0)


def test_max_tokens_accounting_reserves_max_tokens_until_the_response_ends() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        big = body(model="claude-haiku-4-5", max_tokens=50_000)
        first = asyncio.create_task(post(session, sim.messages_url, big))
        await asyncio.sleep(0.1)
        second = body("y", model="claude-haiku-4-5", max_tokens=50_000)
        status, headers, data = await post(session, sim.messages_url, second)
        assert status == 429
        assert "60,000 output tokens per minute" in data["error"]["message"]
        assert headers["anthropic-ratelimit-output-tokens-remaining"] == "10000"
        status, headers, _ = await first
        assert status == 200
        assert headers["anthropic-ratelimit-output-tokens-remaining"] == "60000"

    simulate(
        scenario,
        output_tokens_per_minute=60_000,
        output_accounting="max_tokens",
        output_tokens=(10, 10),
        latency=0.4,
    )


def test_generated_accounting_ignores_max_tokens_and_charges_real_output_into_debt() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        big = body(model="claude-haiku-4-5", max_tokens=64_000)
        pair = [post(session, sim.messages_url, big), post(session, sim.messages_url, big)]
        assert [status for status, _, _ in await asyncio.gather(*pair)] == [200, 200]
        later = body("z", model="claude-haiku-4-5")
        status, headers, data = await post(session, sim.messages_url, later)
        assert status == 429  # two 40,000-token answers overdrew the 60,000 bucket
        assert "output tokens per minute" in data["error"]["message"]
        assert int(headers["retry-after"]) >= 15
        assert headers["anthropic-ratelimit-output-tokens-remaining"] == "0"

    simulate(
        scenario,
        output_tokens_per_minute=60_000,
        output_tokens=(40_000, 40_000),
        latency=0.2,
    )


def test_spend_cap_answers_429_with_error_code_and_no_retry_after() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, _ = await post(session, sim.messages_url, body())
        assert status == 200
        status, headers, data = await post(session, sim.messages_url, body())
        assert status == 429
        message = assert_api_error(status, data, headers, "rate_limit_error")
        assert message.startswith("You have reached your API usage limits")
        assert data["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
        assert "retry-after" not in headers

    simulate(scenario, spend_limit_after=1)


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "status", "error_type", "message"),
    [
        ("rate_429", 429, "rate_limit_error", None),
        ("rate_529", 529, "overloaded_error", "Overloaded"),
        ("rate_500", 500, "api_error", "Internal server error"),
    ],
)
def test_injected_json_faults_use_the_documented_error(
    fault: str, status: int, error_type: str, message: str | None
) -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        got, headers, data = await post(session, sim.messages_url, body())
        assert got == status
        text = assert_api_error(got, data, headers, error_type)
        assert message is None or text == message
        assert ("retry-after" in headers) == (status == 429)
        assert sim.stats.faults_injected == 1 and sim.stats.rate_limited == 0

    simulate(scenario, **{fault: 1.0})


def test_injected_502_is_an_html_page() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        async with session.post(sim.messages_url, json=body(), headers=HEADERS) as response:
            assert response.status == 502
            assert response.headers["content-type"].startswith("text/html")
            assert "<html>" in await response.text()

    simulate(scenario, rate_502_html=1.0)


def test_injected_drop_closes_the_connection_without_a_response() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, sim.messages_url, body())
        assert sim.stats.by_status == {0: 1}

    simulate(scenario, rate_drop=1.0)


def test_injected_stall_holds_the_connection_then_closes_it() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, sim.messages_url, body())
        assert time.monotonic() - started >= 0.3

    simulate(scenario, rate_stall=1.0, stall_seconds=0.3)


# --------------------------------------------------------------------------- prompt cache


def cached_system(tokens: int, ttl: str = "5m") -> list[dict[str, Any]]:
    control = {"type": "ephemeral", "ttl": ttl}
    return [{"type": "text", "text": words(tokens), "cache_control": control}]


def test_cache_is_written_by_concurrent_requests_and_read_by_a_later_one() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        request = body("question", system=cached_system(1_500))
        pair = [post(session, sim.messages_url, request) for _ in range(2)]
        for status, _, data in await asyncio.gather(*pair):
            assert status == 200
            assert data["usage"]["cache_creation_input_tokens"] == 1_500
            assert data["usage"]["cache_creation"]["ephemeral_5m_input_tokens"] == 1_500
            assert data["usage"]["cache_read_input_tokens"] == 0
        _, _, data = await post(session, sim.messages_url, request)
        usage = data["usage"]
        assert usage["cache_read_input_tokens"] == 1_500
        assert usage["cache_creation_input_tokens"] == 0
        assert usage["input_tokens"] == count_tokens("question") + 3 + 5

    simulate(scenario, latency=0.2)


def test_one_hour_breakpoint_is_reported_as_a_one_hour_write() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        request = body(system=cached_system(1_100, ttl="1h"))
        _, _, data = await post(session, sim.messages_url, request)
        assert data["usage"]["cache_creation"] == {
            "ephemeral_5m_input_tokens": 0,
            "ephemeral_1h_input_tokens": 1_100,
        }

    simulate(scenario)


def test_prefix_below_the_model_minimum_is_not_cached_and_not_an_error() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        request = body(system=cached_system(500))
        for _ in range(2):
            status, _, data = await post(session, sim.messages_url, request)
            assert status == 200
            assert data["usage"]["cache_creation_input_tokens"] == 0
            assert data["usage"]["cache_read_input_tokens"] == 0
            assert data["usage"]["input_tokens"] == 500 + count_tokens("hello there") + 3 + 5

    simulate(scenario)


@pytest.mark.parametrize(
    ("model", "remaining"),
    [
        (MODEL, 7_000),  # reads are free: only the write and the two questions count
        ("claude-3-haiku-20240307", 4_000),  # a dagger model: the read counts too
    ],
)
def test_cache_reads_count_toward_input_tokens_only_for_the_dagger_models(
    model: str, remaining: int
) -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        request = body(model=model, system=cached_system(3_000))
        await post(session, sim.messages_url, request)
        _, headers, data = await post(session, sim.messages_url, request)
        assert data["usage"]["cache_read_input_tokens"] == 3_000
        assert int(headers["anthropic-ratelimit-input-tokens-remaining"]) == remaining
        assert (sim.stats.cache_writes, sim.stats.cache_reads) == (1, 1)

    simulate(scenario, input_tokens_per_minute=10_000)


# --------------------------------------------------------------------------- other endpoints


def test_count_tokens_endpoint_is_free_and_outside_the_messages_limits() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = f"{sim.base_url}/v1/messages/count_tokens"
        request = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
        for _ in range(3):
            status, _, data = await post(session, url, request)
            assert status == 200
            assert data == {"input_tokens": count_tokens("hello there") + 3 + 5}
        with_max = {**request, "max_tokens": 5}
        status, _, data = await post(session, url, with_max)
        assert status == 400
        assert data["error"]["message"] == "max_tokens: Extra inputs are not permitted"
        status, _, _ = await post(session, sim.messages_url, body())
        assert status == 200  # the single request per minute was still available
        assert sim.stats.requests == 1

    simulate(scenario, requests_per_minute=1)


def test_admin_endpoints_report_and_reset_the_stats() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        await post(session, sim.messages_url, body())
        async with session.get(f"{sim.base_url}/_sim/stats") as response:
            stats = await response.json()
        assert stats["requests"] == 1 and stats["by_status"] == {"200": 1}
        assert stats["input_tokens"] == count_tokens("hello there") + 8
        async with session.post(f"{sim.base_url}/_sim/reset") as response:
            assert response.status == 200
        async with session.get(f"{sim.base_url}/_sim/stats") as response:
            assert (await response.json())["requests"] == 0

    simulate(scenario)


def test_simulator_thread_serves_requests_from_another_thread_and_stops() -> None:
    async def call(url: str) -> int:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            status, _, _ = await post(session, url, body())
            return status

    with SimulatorThread(SimulatorConfig()) as sim:
        assert asyncio.run(asyncio.wait_for(call(sim.messages_url), SCENARIO_TIMEOUT)) == 200
        assert sim.stats.succeeded == 1
    assert json.dumps(sim.stats.as_dict())
