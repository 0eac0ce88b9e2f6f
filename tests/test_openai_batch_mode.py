"""`apiproc run --api openai --mode batch` end to end: the OpenAI Batch API of the simulator
(Files upload, batches, output and error files), with the batch mode's never-twice rules."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from conftest import CLI_TIMEOUT, ROOT, read_jsonl, run_cli, write_jsonl

from apiproc.providers.batches import ENDED, ERRORED
from apiproc.providers.openai import OpenAIProvider
from apiproc.providers.openai_batches import OpenAIBatches
from apiproc.simulator import Simulator, SimulatorConfig, SimulatorThread

KEY = "sk-openai-batch-key"
MODEL = "gpt-4o-mini"
FAST = ("--poll-interval", "0.05", "--batch-api-rpm", "100000", "--batch-create-settle", "0")


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    marker = request.node.get_closest_marker("simulator")
    settings: dict[str, Any] = {"batch_processing_seconds": 0.1, "batch_requests_per_minute": 1e9}
    settings.update(marker.kwargs if marker else {})
    with SimulatorThread(SimulatorConfig(**settings)) as running:
        yield running


def chat_lines(count: int, model: str = MODEL) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"q-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"Say something about {n}."}],
                "max_tokens": 16,
            },
        }
        for n in range(count)
    ]


def args(sim: Simulator, source: Path, output: Path, *extra: str) -> list[str]:
    return [
        "run", str(source), "-o", str(output), "--api", "openai",
        "--request-url", sim.base_url + "/v1", "--api-key", KEY, "--mode", "batch", *FAST, *extra,
    ]  # fmt: skip


def run_batch(sim: Simulator, source: Path, output: Path, *extra: str) -> Any:
    return run_cli(*args(sim, source, output, *extra))


def succeeded_once(path: Path, ids: list[str]) -> bool:
    records = read_jsonl(path)
    done = Counter(r["custom_id"] for r in records if r["result"]["type"] == "succeeded")
    return len(records) == len(ids) and done == Counter({custom_id: 1 for custom_id in ids})


def overlapping(sim: Simulator) -> list[str]:
    """Ids that were ever in two batches at once (a batch is live until it ends)."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for batch in sim.batch_record:
        end = batch.ended_at if batch.ended_at is not None else math.inf
        for custom_id in batch.custom_ids:
            spans[custom_id].append((batch.created_at, end))
    return [
        custom_id
        for custom_id, held in spans.items()
        if any(b[0] < a[1] for a, b in itertools.pairwise(sorted(held)))
    ]


def holding(sim: Simulator) -> Counter:
    return Counter(custom_id for batch in sim.batch_record for custom_id in batch.custom_ids)


@pytest.mark.simulator(batch_errored_rate=0.2, batch_expired_rate=0.1, seed=4)
def test_transient_failures_are_resubmitted_until_each_id_succeeds_once(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = chat_lines(60)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--batch-size", "25", "--max-attempts", "10")
    assert done.returncode == 0, done.stderr
    assert succeeded_once(output, [row["custom_id"] for row in rows])
    assert max(holding(sim).values()) > 1  # some went again ...
    assert overlapping(sim) == []  # ... never while another batch held them
    attempts = {r["custom_id"]: r["attempts"] for r in read_jsonl(output)}
    assert attempts == {custom_id: holding(sim)[custom_id] for custom_id in attempts}
    for record in read_jsonl(output):
        completion = openai.types.chat.ChatCompletion.model_validate(record["result"]["message"])
        assert completion.object == "chat.completion"
    uploads = [s for s in sim.seen if s.path == "/v1/files"]
    assert uploads and all(s.headers["authorization"] == f"Bearer {KEY}" for s in uploads)
    assert not [s for s in sim.seen if s.path == "/v1/chat/completions"]  # none went online


def test_batches_carry_the_run_tag_and_the_documented_parameters(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", chat_lines(5))
    done = run_batch(sim, source, tmp_path / "out.jsonl")
    assert done.returncode == 0, done.stderr
    (created,) = [s for s in sim.seen if s.path == "/v1/batches" and s.body is not None]
    assert created.body["endpoint"] == "/v1/chat/completions"
    assert created.body["completion_window"] == "24h"
    assert created.body["metadata"]["apiproc_tag"].startswith("apiproc-")
    (stored,) = [f for f in sim.openai_files.files.values() if f.purpose == "batch"]
    lines = [json.loads(line) for line in stored.data.splitlines()]
    assert [line["custom_id"] for line in lines] == [f"q-{n}" for n in range(5)]
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}


def test_a_request_for_a_second_model_is_a_bad_line_not_a_failed_batch(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = chat_lines(4)
    rows[2]["body"]["model"] = "gpt-4.1-mini"
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output)
    assert done.returncode == 1, done.stderr
    records = {r["custom_id"]: r for r in read_jsonl(output)}
    bad = records["q-2"]["result"]["error"]["error"]
    assert bad["code"] == "mismatched_model" and "gpt-4o-mini" in bad["message"]
    assert [r["result"]["type"] for k, r in sorted(records.items()) if k != "q-2"] == [
        "succeeded"
    ] * 3


@pytest.mark.parametrize(("event", "batches_made"), [("create", 0), ("created", 1), ("results", 1)])
def test_a_crash_at_any_step_resumes_without_sending_a_request_twice(
    sim: Simulator, tmp_path: Path, event: str, batches_made: int
) -> None:
    rows = chat_lines(20)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    fired: dict[str, int] = {}

    async def kill(name: str, detail: dict[str, Any]) -> bool:
        if name != event or fired:
            return False
        fired["pid"] = process.pid
        os.kill(process.pid, signal.SIGKILL)
        return True

    sim.config.batch_hook = kill
    environment = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    command = [sys.executable, "-m", "apiproc", *args(sim, source, output)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        process.communicate(timeout=CLI_TIMEOUT)
    finally:
        sim.config.batch_hook = None
    assert fired and process.returncode == -signal.SIGKILL
    assert len(sim.batch_record) == batches_made
    again = run_batch(sim, source, output)
    assert again.returncode == 0, again.stderr
    assert succeeded_once(output, [row["custom_id"] for row in rows])
    assert overlapping(sim) == []
    assert set(holding(sim).values()) == {1}  # no request was submitted twice


def test_bedrock_has_no_batch_mode_and_says_so(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", chat_lines(1))
    done = run_cli(
        "run", str(source), "-o", str(tmp_path / "o.jsonl"), "--api", "bedrock",
        "--region", "us-east-1", "--mode", "batch",
        env={"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "no batch service for --api bedrock" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.simulator(batch_processing_seconds=0.05)
def test_a_batch_whose_file_failed_validation_names_the_bad_lines_requests(
    sim: Simulator,
) -> None:
    client = openai.OpenAI(base_url=sim.base_url + "/v1", api_key=KEY, max_retries=0)
    good = [json.dumps(row) for row in chat_lines(3)]
    data = "\n".join([good[0], good[1].replace("/v1/chat/completions", "/v1/x"), good[2]])
    uploaded = client.files.create(file=("in.jsonl", data.encode()), purpose="batch")
    made = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    async def collect() -> list[Any]:
        provider = OpenAIProvider(KEY, sim.base_url + "/v1")
        async with aiohttp.ClientSession(headers=provider.session_headers) as session:
            api = OpenAIBatches(provider, session)
            for _ in range(200):  # bounded: at most 10 s
                info = await api.retrieve(made.id)
                if info.status == ENDED:
                    break
                await asyncio.sleep(0.05)
            assert info.status == ENDED
            return [item async for item in api.results(info)]

    items = {item.custom_id: item for item in asyncio.run(collect())}
    assert set(items) == {"q-0", "q-1", "q-2"}
    assert all(item.kind == ERRORED for item in items.values())
    assert items["q-1"].error["code"] == "invalid_url" and not items["q-1"].retryable
    assert items["q-0"].retryable and items["q-2"].retryable


def test_batch_commands_follow_an_openai_state_file_and_list_the_account(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", chat_lines(6))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--batch-size", "3")
    assert done.returncode == 0, done.stderr
    env = {"OPENAI_API_KEY": KEY}
    status = run_cli("batch", "status", str(output), env=env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(" ended ") == 2 and status.stdout.count("succeeded 3") == 2
    listed = run_cli(
        "batch", "list", "--api", "openai", "--request-url", sim.base_url + "/v1", env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        record.id for record in reversed(sim.batch_record)
    ]
