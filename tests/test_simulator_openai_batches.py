"""The simulated OpenAI Files and Batch APIs, judged by the official `openai` SDK."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

from apiproc.simulator import Simulator

MODEL = "gpt-4o-mini"
POLL_SECONDS = 0.05
POLL_LIMIT = 400  # bounded: at most 20 s of polling


def client_for(simulator: Simulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=simulator.base_url + "/v1", api_key="sk-test", max_retries=0)


def batch_file(count: int, **extra: object) -> bytes:
    rows = [
        {
            "custom_id": f"req-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Say something about {n}."}],
                "max_tokens": 20,
                **extra,
            },
        }
        for n in range(count)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def run_batch(client: openai.OpenAI, data: bytes) -> openai.types.Batch:
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(data)
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "test"},
    )
    assert batch.status == "validating" and batch.metadata == {"job": "test"}
    return wait(client, batch.id)


def wait(client: openai.OpenAI, batch_id: str) -> openai.types.Batch:
    for _ in range(POLL_LIMIT):
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(POLL_SECONDS)
    raise AssertionError("the batch never ended")


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


@pytest.mark.simulator(batch_processing_seconds=0.3)
def test_a_batch_ends_completed_with_one_output_line_per_request(simulator: Simulator) -> None:
    client = client_for(simulator)
    batch = run_batch(client, batch_file(25))
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (25, 25)
    assert batch.completed_at is not None and batch.expires_at == batch.created_at + 86_400
    output = lines_of(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"req-{n}" for n in range(25))
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        completion = openai.types.chat.ChatCompletion.model_validate(line["response"]["body"])
        assert completion.usage is not None and completion.usage.completion_tokens <= 20
    assert batch.error_file_id is None
    assert simulator.stats.requests == 0  # the batch pool is apart from the online one


@pytest.mark.simulator(batch_processing_seconds=0.2, batch_errored_rate=0.3, seed=3)
def test_transient_failures_go_to_the_error_file_as_500s(simulator: Simulator) -> None:
    client = client_for(simulator)
    batch = run_batch(client, batch_file(60))
    assert batch.status == "completed" and batch.request_counts is not None
    errors = lines_of(client, batch.error_file_id)
    output = lines_of(client, batch.output_file_id)
    assert len(errors) == batch.request_counts.failed > 0
    assert len(output) == batch.request_counts.completed == 60 - len(errors)
    for line in errors:
        assert line["response"]["status_code"] == 500
        assert line["response"]["body"]["error"]["type"] == "server_error"
    assert {line["custom_id"] for line in errors}.isdisjoint(line["custom_id"] for line in output)


@pytest.mark.simulator(batch_processing_seconds=0.2, batch_expired_rate=0.5, seed=5)
def test_expired_requests_end_the_batch_expired_with_batch_expired_errors(
    simulator: Simulator,
) -> None:
    client = client_for(simulator)
    batch = run_batch(client, batch_file(20))
    assert batch.status == "expired"
    errors = lines_of(client, batch.error_file_id)
    assert errors and all(line["response"] is None for line in errors)
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}


@pytest.mark.simulator(batch_processing_seconds=0.2)
def test_a_file_that_does_not_validate_fails_the_batch_with_errors_by_line(
    simulator: Simulator,
) -> None:
    client = client_for(simulator)
    good = batch_file(2).decode().splitlines()
    data = "\n".join([good[0], "{not json", good[0], good[1].replace("chat/completions", "x")])
    batch = run_batch(client, data.encode() + b"\n")
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    found = [(error.line, error.code) for error in batch.errors.data]
    assert found == [(2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_url")]
    assert batch.output_file_id is None


@pytest.mark.simulator(batch_processing_seconds=30.0, batch_cancel_seconds=0.1)
def test_a_cancelled_batch_reports_its_unprocessed_requests(simulator: Simulator) -> None:
    client = client_for(simulator)
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(batch_file(5))), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert client.batches.cancel(batch.id).status == "cancelling"
    ended = wait(client, batch.id)
    assert ended.status == "cancelled" and ended.cancelled_at is not None
    errors = lines_of(client, ended.error_file_id)
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert len(errors) == 5


def test_creating_a_batch_checks_its_window_endpoint_and_file(simulator: Simulator) -> None:
    client = client_for(simulator)
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(batch_file(1))), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="48h",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_batches_list_most_recent_first_page_by_page(simulator: Simulator) -> None:
    client = client_for(simulator)
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(batch_file(1))), purpose="batch")
    made = [
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(3)
    ]
    listed = [batch.id for batch in client.batches.list(limit=2)]
    assert listed == list(reversed(made))
    assert [record.id for record in simulator.batch_record] == made
