"""The simulator speaks both API versions with each one's rules, both key headers, and
retires models on their end-of-life date."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import aiohttp
import pytest

from apiproc.simulator import Simulator, SimulatorConfig

OLD, NEW = "2023-06-01", "2026-10-21"
TIMEOUT = 10.0

Scenario = Callable[[Simulator, aiohttp.ClientSession], Awaitable[None]]

CITATION = {
    "type": "char_location",
    "cited_text": "Water evaporates.",
    "document_index": 0,
    "document_title": "Notes",
    "start_char_index": 0,
    "end_char_index": 17,
}
DOCUMENT = {
    "type": "document",
    "source": {"type": "text", "media_type": "text/plain", "data": "Water evaporates."},
    "title": "Notes",
    "citations": {"enabled": True},
}


def simulate(scenario: Scenario, **config: Any) -> None:
    async def main() -> None:
        async with (
            Simulator(SimulatorConfig(**config)) as sim,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        ):
            await scenario(sim, session)

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def body(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    turns = list(messages) or [{"role": "user", "content": "Where does rain come from?"}]
    return {"model": "claude-haiku-4-5", "max_tokens": 32, "messages": turns, **fields}


def counting(request: dict[str, Any]) -> dict[str, Any]:
    """The same request as count_tokens takes it: without max_tokens."""
    return {key: value for key, value in request.items() if key != "max_tokens"}


async def post(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], version: str
) -> tuple[int, dict[str, Any]]:
    headers = {"x-api-key": "sk-test", "anthropic-version": version}
    async with session.post(url, json=payload, headers=headers) as response:
        return response.status, await response.json()


async def both_endpoints(
    sim: Simulator, session: aiohttp.ClientSession, request: dict[str, Any], version: str
) -> list[tuple[int, dict[str, Any]]]:
    """The answers of Messages and of count_tokens to the same request."""
    count_url = f"{sim.base_url}/v1/messages/count_tokens"
    return [
        await post(session, sim.messages_url, request, version),
        await post(session, count_url, counting(request), version),
    ]


def error_message(answer: tuple[int, dict[str, Any]]) -> str:
    status, data = answer
    assert status == 400, data
    assert data["error"]["type"] == "invalid_request_error"
    return data["error"]["message"]


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", 0), ("temperature", 1.0), ("top_p", 0.9), ("top_k", 5)]
)
def test_sampling_parameters_are_400_under_2026_10_21_at_any_value(field: str, value: Any) -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        request = body(**{field: value})
        status, _ = await post(session, sim.messages_url, request, OLD)
        assert status == 200
        answer = await post(session, sim.messages_url, request, NEW)
        assert error_message(answer) == f"{field}: Extra inputs are not permitted"

    simulate(scenario)


def test_count_tokens_refuses_temperature_under_2026_10_21() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = f"{sim.base_url}/v1/messages/count_tokens"
        answer = await post(session, url, counting(body(temperature=0)), NEW)
        assert error_message(answer) == "temperature: Extra inputs are not permitted"
        status, data = await post(session, url, counting(body()), NEW)
        assert status == 200 and data["input_tokens"] > 0

    simulate(scenario)


# --------------------------------------------------------------------------- content rules


def test_a_document_directly_in_an_assistant_turn_is_400_under_2026_10_21_only() -> None:
    request = body(
        {"role": "user", "content": "Summarise my notes."},
        {"role": "assistant", "content": [DOCUMENT, {"type": "text", "text": "Here they are."}]},
        {"role": "user", "content": "Thanks; shorter please."},
    )

    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert [status for status, _ in await both_endpoints(sim, session, request, OLD)] == [
            200,
            200,
        ]
        for answer in await both_endpoints(sim, session, request, NEW):
            assert error_message(answer).startswith(
                "messages.1.content.0: document blocks are not permitted in assistant messages"
            )

    simulate(scenario)


def test_a_document_in_a_user_turn_with_citations_enabled_is_accepted_under_2026_10_21() -> None:
    request = body({"role": "user", "content": [DOCUMENT, {"type": "text", "text": "Cite it."}]})

    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        answers = await both_endpoints(sim, session, request, NEW)
        assert [status for status, _ in answers] == [200, 200]

    simulate(scenario)


def test_citations_on_user_text_are_400_under_2026_10_21_directly_or_in_a_search_result() -> None:
    cited = {"type": "text", "text": "Water evaporates.", "citations": [CITATION]}
    search_result = {
        "type": "search_result",
        "source": "https://example.com/water",
        "title": "Water",
        "content": [{"type": "text", "text": "Rain falls."}, cited],
        "citations": {"enabled": True},
    }
    direct = body({"role": "user", "content": [cited]})
    nested = body({"role": "user", "content": [search_result]})

    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        for request in (direct, nested):
            statuses = [status for status, _ in await both_endpoints(sim, session, request, OLD)]
            assert statuses == [200, 200]
        for answer in await both_endpoints(sim, session, direct, NEW):
            assert error_message(answer).startswith("messages.0.content.0.citations: ")
        for answer in await both_endpoints(sim, session, nested, NEW):
            assert error_message(answer).startswith("messages.0.content.0.content.1.citations: ")

    simulate(scenario)


def test_assistant_citations_empty_citations_and_enabled_search_results_pass_2026_10_21() -> None:
    search_result = {
        "type": "search_result",
        "source": "https://example.com/water",
        "title": "Water",
        "content": [{"type": "text", "text": "Rain falls.", "citations": []}],
        "citations": {"enabled": True},
    }
    request = body(
        {"role": "user", "content": [search_result, {"type": "text", "text": "Why?"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Evaporation.", "citations": [CITATION]}],
        },
        {"role": "user", "content": "And then?"},
    )

    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        answers = await both_endpoints(sim, session, request, NEW)
        assert [status for status, _ in answers] == [200, 200]

    simulate(scenario)


# --------------------------------------------------------------------------- keys


def test_a_bearer_key_is_accepted_and_x_api_key_wins_when_both_are_sent() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        version = {"anthropic-version": NEW}
        cases = [
            ({"authorization": "Bearer right"}, 200),
            ({"authorization": "Bearer wrong"}, 401),
            ({"x-api-key": "right", "authorization": "Bearer wrong"}, 200),
            ({"x-api-key": "wrong", "authorization": "Bearer right"}, 401),
        ]
        for headers, expected in cases:
            async with session.post(
                sim.messages_url, json=body(), headers={**version, **headers}
            ) as response:
                assert response.status == expected, headers

    simulate(scenario, api_key="right")


# --------------------------------------------------------------------------- retirement


@pytest.mark.parametrize(
    ("model", "last_day"),
    [
        ("claude-sonnet-4-5", date(2026, 11, 29)),
        ("claude-sonnet-4-5-20250929", date(2026, 11, 29)),
        ("claude-opus-4-5", date(2027, 1, 21)),
        ("claude-mythos-preview", date(2026, 6, 29)),
    ],
)
def test_a_model_answers_until_its_end_of_life_then_404_like_an_unknown_model(
    model: str, last_day: date
) -> None:
    def ask(today: date) -> tuple[int, dict[str, Any], bool]:
        answer: list[Any] = []

        async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
            headers = {"x-api-key": "sk-test", "anthropic-version": NEW}
            async with session.post(sim.messages_url, json=body(model=model), headers=headers) as r:
                has_limits = "anthropic-ratelimit-requests-limit" in r.headers
                answer.extend([r.status, await r.json(), has_limits])

        simulate(scenario, today=today)
        return answer[0], answer[1], answer[2]

    status, _, _ = ask(last_day)
    assert status == 200
    end_of_life = date.fromordinal(last_day.toordinal() + 1)
    status, data, has_limits = ask(end_of_life)
    assert status == 404
    assert data["error"] == {"type": "not_found_error", "message": f"model: {model}"}
    assert not has_limits  # as for a model that never existed


def test_the_2026_models_answer_under_both_versions() -> None:
    models = [
        "claude-fable-5-2",
        "claude-opus-5-5",
        "claude-opus-4-8",
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
        "claude-mythos-5-2",
    ]

    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        for model in models:
            for version in (OLD, NEW):
                status, data = await post(session, sim.messages_url, body(model=model), version)
                assert status == 200, (model, version, data)
                assert data["model"] == model

    simulate(scenario, today=date(2026, 11, 30))
