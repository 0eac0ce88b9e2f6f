"""The simulated Message Batches endpoints, judged by the official SDK over real HTTP."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from apiproc.simulator import Simulator, SimulatorConfig, SimulatorThread

VERSION = "2023-06-01"  # the SDK's own default version is one the simulator does not know yet


def request(n: int, **extra: Any) -> dict[str, Any]:
    params = {
        "model": "claude-haiku-4-5",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": f"Number {n}, please."}],
        **extra,
    }
    return {"custom_id": f"req-{n}", "params": params}


def client_for(simulator: Simulator, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-batches",
        base_url=simulator.base_url,
        default_headers={"anthropic-version": VERSION, **headers},
        max_retries=0,
    )


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    marker = request.node.get_closest_marker("simulator")
    config = SimulatorConfig(**(marker.kwargs if marker else {}))
    with SimulatorThread(config) as running:
        yield running


def ended(client: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    """Poll until the batch ends (the simulator's processing time is short; bounded)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.01)
    raise AssertionError("the batch did not end within 30 s")


def results(client: anthropic.Anthropic, batch_id: str) -> list[MessageBatchIndividualResponse]:
    return list(client.messages.batches.results(batch_id))


@pytest.mark.simulator(batch_processing_seconds=0.2, batch_requests_per_minute=1e9)
def test_a_batch_is_in_progress_with_every_request_processing_until_it_ends(
    sim: Simulator,
) -> None:
    client = client_for(sim)
    created = client.messages.batches.create(requests=[request(n) for n in range(5)])
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 5
    assert created.results_url is None and created.ended_at is None
    assert (created.expires_at - created.created_at).total_seconds() == pytest.approx(86_400)
    done = ended(client, created.id)
    assert done.request_counts.processing == 0 and done.request_counts.succeeded == 5
    assert done.ended_at is not None and done.results_url.endswith(f"/{created.id}/results")
    lines = results(client, created.id)
    assert sorted(line.custom_id for line in lines) == [f"req-{n}" for n in range(5)]
    assert all(line.result.type == "succeeded" for line in lines)
    assert lines[0].result.message.usage.service_tier == "batch"


@pytest.mark.simulator(batch_processing_seconds=60, batch_requests_per_minute=1e9)
def test_results_are_refused_before_the_batch_ends(sim: Simulator) -> None:
    client = client_for(sim)
    created = client.messages.batches.create(requests=[request(1)])
    url = f"{sim.base_url}/v1/messages/batches/{created.id}/results"
    with pytest.raises(anthropic.BadRequestError):
        client.get(url, cast_to=object)


@pytest.mark.simulator(batch_processing_seconds=0.1, batch_requests_per_minute=1e9)
def test_params_are_validated_when_processed_and_fail_as_errored_results(sim: Simulator) -> None:
    client = client_for(sim)
    bad = request(2)
    del bad["params"]["max_tokens"]
    unknown = request(3, model="claude-nope")
    created = client.messages.batches.create(requests=[request(1), bad, unknown])
    assert created.processing_status == "in_progress"  # no 400 on create
    ended(client, created.id)
    by_id = {line.custom_id: line.result for line in results(client, created.id)}
    assert by_id["req-1"].type == "succeeded"
    assert by_id["req-2"].type == "errored"
    assert by_id["req-2"].error.error.type == "invalid_request_error"
    assert "max_tokens" in by_id["req-2"].error.error.message
    assert by_id["req-3"].error.error.type == "not_found_error"


@pytest.mark.simulator(batch_processing_seconds=0.1, batch_requests_per_minute=1e9)
def test_the_version_and_betas_are_fixed_when_the_batch_is_created(sim: Simulator) -> None:
    # 100,000 output tokens need the output-128k beta on Claude Sonnet 3.7.
    long = request(1, model="claude-3-7-sonnet-latest", max_tokens=100_000)
    with_beta = client_for(sim, **{"anthropic-beta": "output-128k-2025-02-19"})
    without = client_for(sim)
    allowed = with_beta.messages.batches.create(requests=[long])
    refused = without.messages.batches.create(requests=[long])
    ended(without, allowed.id)
    ended(with_beta, refused.id)
    # Whoever asks for the results, and with whichever headers, each batch kept its own.
    assert results(without, allowed.id)[0].result.type == "succeeded"
    assert results(with_beta, refused.id)[0].result.type == "errored"


@pytest.mark.simulator(batch_processing_seconds=0.1, batch_requests_per_minute=1e9)
def test_a_batch_created_with_2026_10_21_refuses_temperature_in_its_results(
    sim: Simulator,
) -> None:
    warm = request(1, temperature=0.2)
    old = client_for(sim).messages.batches.create(requests=[warm])
    new = client_for(sim, **{"anthropic-version": "2026-10-21"}).messages.batches.create(
        requests=[warm]
    )
    client = client_for(sim)
    ended(client, old.id)
    ended(client, new.id)
    assert results(client, old.id)[0].result.type == "succeeded"
    refused = results(client, new.id)[0].result
    assert refused.type == "errored"
    assert refused.error.error.message == "temperature: Extra inputs are not permitted"


@pytest.mark.simulator(batch_processing_seconds=0.1, batch_requests_per_minute=1e9)
def test_300k_output_tokens_are_allowed_only_in_a_batch_with_the_beta(sim: Simulator) -> None:
    long = request(1, model="claude-sonnet-5-5", max_tokens=300_000)
    beta = client_for(sim, **{"anthropic-beta": "output-300k-2026-03-24"})
    allowed = beta.messages.batches.create(requests=[long])
    refused = client_for(sim).messages.batches.create(requests=[long])
    ended(beta, allowed.id)
    ended(beta, refused.id)
    assert results(beta, allowed.id)[0].result.type == "succeeded"
    assert results(beta, refused.id)[0].result.type == "errored"
    with pytest.raises(anthropic.BadRequestError, match="300000 > 128000"):
        beta.post("/v1/messages", body=long["params"], cast_to=object)  # online: no


@pytest.mark.simulator(
    batch_processing_seconds=0.05,
    batch_requests_per_minute=1e9,
    batch_errored_rate=0.3,
    batch_expired_rate=0.2,
    seed=5,
)
def test_configured_shares_of_results_are_errored_transiently_or_expired(sim: Simulator) -> None:
    client = client_for(sim)
    created = client.messages.batches.create(requests=[request(n) for n in range(400)])
    counts = ended(client, created.id).request_counts
    assert counts.succeeded + counts.errored + counts.expired == 400
    assert 80 <= counts.errored <= 160 and 40 <= counts.expired <= 120
    kinds = {
        line.result.error.error.type
        for line in results(client, created.id)
        if line.result.type == "errored"
    }
    assert kinds <= {"api_error", "overloaded_error"}


@pytest.mark.simulator(
    batch_processing_seconds=30, batch_cancel_seconds=0.05, batch_requests_per_minute=1e9
)
def test_cancel_goes_through_canceling_and_ends_with_canceled_results(sim: Simulator) -> None:
    client = client_for(sim)
    created = client.messages.batches.create(requests=[request(n) for n in range(6)])
    canceling = client.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 6
    done = ended(client, created.id)
    assert done.request_counts.canceled == 6  # canceled long before any was processed
    assert {line.result.type for line in results(client, created.id)} == {"canceled"}


@pytest.mark.simulator(batch_requests_per_minute=1e9)
def test_list_pages_most_recent_first_with_the_sdk_paginator(sim: Simulator) -> None:
    client = client_for(sim)
    ids = [client.messages.batches.create(requests=[request(n)]).id for n in range(7)]
    first = client.messages.batches.list(limit=3)
    assert [batch.id for batch in first.data] == ids[::-1][:3]
    assert first.has_more and first.first_id == ids[6] and first.last_id == ids[4]
    every = [batch.id for batch in client.messages.batches.list(limit=3)]  # auto-paging
    assert every == ids[::-1]
    newer = client.messages.batches.list(limit=2, before_id=ids[2])
    assert [batch.id for batch in newer.data] == [ids[4], ids[3]]


@pytest.mark.simulator(batch_max_requests=5, batch_requests_per_minute=1e9)
def test_a_batch_over_the_request_limit_or_with_bad_ids_is_refused_whole(
    sim: Simulator,
) -> None:
    client = client_for(sim)
    with pytest.raises(anthropic.BadRequestError, match="at most 5 items"):
        client.messages.batches.create(requests=[request(n) for n in range(6)])
    colon = request(1)
    colon["custom_id"] = "a:b"
    with pytest.raises(anthropic.BadRequestError, match=r"should match pattern"):
        client.messages.batches.create(requests=[colon])
    with pytest.raises(anthropic.BadRequestError, match="more than one"):
        client.messages.batches.create(requests=[request(1), request(1)])
    assert sim.batch_record == []


@pytest.mark.simulator(batch_max_bytes=2_000, batch_requests_per_minute=1e9)
def test_a_batch_over_the_byte_limit_is_413(sim: Simulator) -> None:
    client = client_for(sim)
    with pytest.raises(anthropic.APIStatusError) as refused:
        client.messages.batches.create(requests=[request(n) for n in range(40)])
    assert refused.value.status_code == 413


@pytest.mark.simulator(batch_requests_per_minute=3)
def test_the_batch_endpoints_share_one_per_minute_limit_with_retry_after(sim: Simulator) -> None:
    client = client_for(sim)
    created = client.messages.batches.create(requests=[request(1)])
    client.messages.batches.retrieve(created.id)
    client.messages.batches.list()
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.batches.retrieve(created.id)
    assert int(limited.value.response.headers["retry-after"]) >= 1


@pytest.mark.simulator(
    batch_queue_limit=10, batch_processing_seconds=60, batch_requests_per_minute=1e9
)
def test_a_full_processing_queue_refuses_a_new_batch_with_429(sim: Simulator) -> None:
    client = client_for(sim)
    client.messages.batches.create(requests=[request(n) for n in range(8)])
    with pytest.raises(anthropic.RateLimitError, match="processing queue") as full:
        client.messages.batches.create(requests=[request(n) for n in range(8, 11)])
    assert int(full.value.response.headers["retry-after"]) >= 1
    client.messages.batches.create(requests=[request(9), request(10)])  # fits exactly


@pytest.mark.simulator(batch_requests_per_minute=1e9)
def test_every_batch_created_is_recorded_with_its_ids_for_other_processes(
    sim: Simulator,
) -> None:
    client = client_for(sim)
    created = client.messages.batches.create(requests=[request(1), request(2)])
    with urllib.request.urlopen(f"{sim.base_url}/_sim/batches", timeout=10) as response:
        record = json.load(response)
    assert record["batches"][0]["id"] == created.id
    assert record["batches"][0]["custom_ids"] == ["req-1", "req-2"]
    assert record["counters"]["created"] == 1 and record["counters"]["requests"] == 2
