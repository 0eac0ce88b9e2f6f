"""`apiproc run --mode batch` end to end: the CLI against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types.messages import MessageBatchIndividualResponse
from conftest import CLI_TIMEOUT, ROOT, read_jsonl, request_line, run_cli, write_jsonl

from apiproc.simulator import Simulator, SimulatorConfig, SimulatorThread

KEY = "sk-ant-batch-mode-key"
FAST = ("--poll-interval", "0.05", "--batch-api-rpm", "100000", "--batch-create-settle", "0")


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    """A simulator whose batches end quickly, unless the test's marker says otherwise."""
    marker = request.node.get_closest_marker("simulator")
    settings: dict[str, Any] = {"batch_processing_seconds": 0.1, "batch_requests_per_minute": 1e9}
    settings.update(marker.kwargs if marker else {})
    with SimulatorThread(SimulatorConfig(**settings)) as running:
        yield running


def args(sim: Simulator, source: Path, output: Path, *extra: str) -> list[str]:
    return [
        "run", str(source), "-o", str(output), "--request-url", sim.messages_url,
        "--api-key", KEY, "--mode", "batch", *FAST, *extra,
    ]  # fmt: skip


def run_batch(sim: Simulator, source: Path, output: Path, *extra: str) -> Any:
    return run_cli(*args(sim, source, output, *extra))


def start_batch(sim: Simulator, source: Path, output: Path, *extra: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    command = [sys.executable, "-m", "apiproc", *args(sim, source, output, *extra)]
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def requests(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [request_line(n, metadata={"row": n}) for n in range(start, start + count)]


def ids_in(path: Path) -> Counter:
    return Counter(record["custom_id"] for record in read_jsonl(path))


def succeeded_once(path: Path, count: int) -> bool:
    records = read_jsonl(path)
    ids = Counter(r["custom_id"] for r in records if r["result"]["type"] == "succeeded")
    return len(records) == count and ids == Counter({f"line-{n}": 1 for n in range(1, count + 1)})


def overlapping(sim: Simulator) -> list[str]:
    """Ids that were ever in two batches at once (a batch is live until it ends)."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for batch in sim.batch_record:
        end = batch.ended_at if batch.ended_at is not None else math.inf
        for custom_id in batch.custom_ids:
            spans[custom_id].append((batch.created_at, end))
    twice = []
    for custom_id, held in spans.items():
        held.sort()
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(held)):
            twice.append(custom_id)
    return twice


def batches_holding(sim: Simulator) -> Counter:
    return Counter(custom_id for batch in sim.batch_record for custom_id in batch.custom_ids)


class Interrupt:
    """Signals the client at a point of a batch's life the simulator observes."""

    def __init__(self, event: str, sig: int = signal.SIGKILL, drop: bool = True) -> None:
        self.event, self.sig, self.drop = event, sig, drop
        self.pid: int | None = None
        self.fired = False
        self.wait_for: Path | None = None  # results: wait until the output has grown

    async def __call__(self, event: str, detail: dict[str, Any]) -> bool:
        if self.fired or event != self.event:
            return False
        self.fired = True
        for _ in range(1000):  # bounded: at most 10 s for the pid and the written lines
            if self.pid is not None and (self.wait_for is None or _lines(self.wait_for) > 0):
                break
            await asyncio.sleep(0.01)
        assert self.pid is not None, "the client was not started"
        os.kill(self.pid, self.sig)
        return self.drop


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def interrupted(sim: Simulator, hook: Interrupt, source: Path, output: Path, *extra: str):
    sim.config.batch_hook = hook
    process = start_batch(sim, source, output, *extra)
    hook.pid = process.pid
    try:
        _, stderr = process.communicate(timeout=CLI_TIMEOUT)
    finally:
        sim.config.batch_hook = None
    return process.returncode, stderr


# ---- splitting, results, resubmission --------------------------------------------------


def test_a_lowered_batch_size_splits_the_input_into_batches_of_that_size(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(23))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--batch-size", "10")
    assert done.returncode == 0, done.stderr
    assert [len(batch.custom_ids) for batch in sim.batch_record] == [10, 10, 3]
    assert succeeded_once(output, 23)
    for record in read_jsonl(output):
        assert record["metadata"] == {"row": record["line"] - 1}
        assert record["attempts"] == 1
    assert not [seen for seen in sim.seen if seen.path == "/v1/messages"]


def test_a_lowered_byte_limit_splits_by_size(sim: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(12))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--batch-bytes", "1000")
    assert done.returncode == 0, done.stderr
    sizes = [len(batch.custom_ids) for batch in sim.batch_record]
    assert len(sizes) > 1 and sum(sizes) == 12
    assert succeeded_once(output, 12)


@pytest.mark.simulator(batch_errored_rate=0.2, batch_expired_rate=0.15, seed=3)
def test_transient_errors_and_expirations_are_sent_again_until_each_id_succeeds_once(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(60))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--batch-size", "20", "--max-attempts", "10")
    assert done.returncode == 0, done.stderr
    assert succeeded_once(output, 60)
    holding = batches_holding(sim)
    assert max(holding.values()) > 1  # some were sent again ...
    assert overlapping(sim) == []  # ... never while another batch still held them
    attempts = {r["custom_id"]: r["attempts"] for r in read_jsonl(output)}
    assert attempts == {custom_id: holding[custom_id] for custom_id in attempts}


@pytest.mark.simulator(batch_expired_rate=1.0)
def test_requests_that_keep_expiring_end_as_expired_after_max_attempts(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(4))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--max-attempts", "2")
    assert done.returncode == 1
    records = read_jsonl(output)
    assert [r["result"] for r in records] == [{"type": "expired"}] * 4
    assert {r["attempts"] for r in records} == {2}
    assert len(sim.batch_record) == 2


@pytest.mark.simulator(batch_processing_seconds=0.05)
def test_an_invalid_request_error_result_is_final(sim: Simulator, tmp_path: Path) -> None:
    # 100,000 output tokens are more than Claude Haiku 4.5 may write: the API errs.
    rows = [*requests(2), request_line(9, max_tokens=100_000)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output)
    assert done.returncode == 1
    errored = [r for r in read_jsonl(output) if r["result"]["type"] == "errored"]
    assert [r["custom_id"] for r in errored] == ["line-3"]
    assert errored[0]["result"]["error"]["error"]["type"] == "invalid_request_error"
    assert len(sim.batch_record) == 1


@pytest.mark.simulator(batch_expired_rate=1.0)
def test_fallback_online_sends_the_leftovers_through_the_messages_endpoint(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(5))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--fallback", "online")
    assert done.returncode == 0, done.stderr
    assert succeeded_once(output, 5)
    assert len(sim.batch_record) == 1
    assert sim.stats.succeeded == 5  # the Messages endpoint answered each once
    assert all(r["request_id"].startswith("req_") for r in read_jsonl(output))
    assert "sent through the online path" in done.stderr


# ---- validation before upload --------------------------------------------------------------


def test_bad_lines_are_recorded_with_reason_codes_before_anything_is_uploaded(
    sim: Simulator, tmp_path: Path
) -> None:
    huge = request_line(99)
    huge["messages"][0]["content"] = "word " * 400
    rows = [
        request_line(1),
        "{not json",
        {"custom_id": "ok-id", "params": {"max_tokens": 5, "messages": []}},
        request_line(2, stream=True),
        {"custom_id": "has:colon", "params": request_line(3)},
        {"custom_id": "twice", "params": request_line(4)},
        {"custom_id": "twice", "params": request_line(5)},
        huge,
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--batch-bytes", "1500")
    assert done.returncode == 1
    codes = {
        r["line"]: r["result"]["error"]["error"].get("code")
        for r in read_jsonl(output)
        if r["result"]["type"] == "errored"
    }
    assert codes == {
        2: "invalid_json_line",
        3: "missing_required_parameter",
        4: "streaming_unsupported",
        5: "invalid_custom_id",
        7: "duplicate_custom_id",
        8: "request_too_large",
    }
    sent = [custom_id for batch in sim.batch_record for custom_id in batch.custom_ids]
    assert sorted(sent) == ["line-1", "twice"]


def test_params_the_chosen_version_refuses_are_bad_lines_before_upload(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = [request_line(1), request_line(2, temperature=0.5)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--anthropic-version", "2026-10-21")
    assert done.returncode == 1
    errored = [r for r in read_jsonl(output) if r["result"]["type"] == "errored"]
    assert [r["line"] for r in errored] == [2]
    assert "temperature" in errored[0]["result"]["error"]["error"]["message"]
    assert errored[0]["result"]["error"]["error"]["code"] == "invalid_request"
    assert [batch.custom_ids for batch in sim.batch_record] == [("line-1",)]


def test_online_mode_bad_lines_carry_the_same_reason_codes(sim: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1), "[1, 2]", {"model": "x"}])
    output = tmp_path / "out.jsonl"
    done = run_cli(
        "run", str(source), "-o", str(output), "--request-url", sim.messages_url, "--api-key", KEY
    )
    assert done.returncode == 1
    codes = {
        r["line"]: r["result"]["error"]["error"].get("code")
        for r in read_jsonl(output)
        if r["result"]["type"] == "errored"
    }
    assert codes == {2: "invalid_json_line", 3: "missing_required_parameter"}


@pytest.mark.simulator(batch_expired_rate=0.3, seed=11)
def test_every_output_line_parses_with_the_sdk_batch_types(sim: Simulator, tmp_path: Path) -> None:
    rows = [*requests(10), "nope", request_line(50, max_tokens=100_000)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    run_batch(sim, source, output, "--max-attempts", "1")
    kinds = set()
    for line in output.read_text().splitlines():
        parsed = MessageBatchIndividualResponse.model_validate(json.loads(line))
        kinds.add(parsed.result.type)
    assert kinds == {"succeeded", "errored", "expired"}


# ---- crashes, interruptions and never twice ------------------------------------------------


@pytest.mark.parametrize(
    ("event", "batches_made"),
    [
        ("create", 0),  # after the create intent: the request never made a batch
        ("created", 1),  # after create: the batch exists, its id was never recorded
        ("retrieve", 2),  # while polling
        ("results", 2),  # while writing results
    ],
)
def test_a_crash_at_any_step_resumes_without_sending_a_request_twice(
    sim: Simulator, tmp_path: Path, event: str, batches_made: int
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(30))
    output = tmp_path / "out.jsonl"
    hook = Interrupt(event)
    if event == "results":
        hook.wait_for = output
    code, _ = interrupted(sim, hook, source, output, "--batch-size", "15")
    assert hook.fired and code == -signal.SIGKILL
    assert len(sim.batch_record) == batches_made
    again = run_batch(sim, source, output, "--batch-size", "15")
    assert again.returncode == 0, again.stderr
    assert succeeded_once(output, 30)
    assert overlapping(sim) == []
    assert set(batches_holding(sim).values()) == {1}  # no request was submitted twice


def test_an_ambiguous_unrecorded_batch_stops_the_run_until_a_batch_is_adopted(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = requests(3)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    code, _ = interrupted(sim, Interrupt("create"), source, output)
    assert code == -signal.SIGKILL and sim.batch_record == []
    # Two batches of that size appear around that time (one could be the lost create).
    client = anthropic.Anthropic(
        api_key=KEY, base_url=sim.base_url, default_headers={"anthropic-version": "2023-06-01"}
    )
    entries = [
        {"custom_id": f"line-{n + 1}", "params": {k: v for k, v in row.items() if k != "metadata"}}
        for n, row in enumerate(rows)
    ]
    first = client.messages.batches.create(requests=entries).id
    second = client.messages.batches.create(requests=entries).id
    stopped = run_batch(sim, source, output)
    assert stopped.returncode == 2
    assert first in stopped.stderr and second in stopped.stderr
    assert "--adopt-batch" in stopped.stderr
    assert len(sim.batch_record) == 2 and _lines(output) == 0
    adopted = run_batch(sim, source, output, "--adopt-batch", second)
    assert adopted.returncode == 0, adopted.stderr
    assert succeeded_once(output, 3)
    assert len(sim.batch_record) == 2  # nothing more was submitted


@pytest.mark.simulator(batch_processing_seconds=0.5)
def test_ctrl_c_while_polling_leaves_the_batches_running_and_says_how_to_go_on(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(8))
    output = tmp_path / "out.jsonl"
    code, stderr = interrupted(
        sim, Interrupt("retrieve", signal.SIGINT, drop=False), source, output
    )
    assert code == 130
    assert "Running:   1 batches still run" in stderr
    assert "Resume:    " in stderr and "--mode batch" in stderr
    assert "Cancel:    apiproc batch cancel" in stderr
    assert len(sim.batch_record) == 1 and sim.batch_record[0].ended_at is None
    again = run_batch(sim, source, output)
    assert again.returncode == 0, again.stderr
    assert succeeded_once(output, 8) and len(sim.batch_record) == 1


@pytest.mark.simulator(batch_processing_seconds=60, batch_cancel_seconds=0.05)
def test_batch_cancel_collects_partial_results_and_a_rerun_sends_the_rest(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(6))
    output = tmp_path / "out.jsonl"
    code, _ = interrupted(sim, Interrupt("retrieve", signal.SIGINT, drop=False), source, output)
    assert code == 130
    state = f"{output}.apiproc-batches.jsonl"
    canceled = run_cli("batch", "cancel", str(output), "--api-key", KEY)
    assert canceled.returncode == 0, canceled.stderr
    assert sim.batch_record[0].ended_at is not None
    assert "6 requests wait to be sent again" in canceled.stderr
    status = run_cli("batch", "status", state, "--offline")
    assert status.returncode == 0, status.stderr
    assert sim.batch_record[0].id in status.stdout and "ended" in status.stdout
    sim.config.batch_processing_seconds = 0.05
    again = run_batch(sim, source, output)
    assert again.returncode == 0, again.stderr
    assert succeeded_once(output, 6)
    assert overlapping(sim) == []


def test_online_mode_refuses_an_output_whose_batches_still_run(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.config.batch_processing_seconds = 60
    source = write_jsonl(tmp_path / "in.jsonl", requests(3))
    output = tmp_path / "out.jsonl"
    code, _ = interrupted(sim, Interrupt("retrieve", signal.SIGINT, drop=False), source, output)
    assert code == 130
    online = run_cli(
        "run", str(source), "-o", str(output), "--request-url", sim.messages_url, "--api-key", KEY
    )
    assert online.returncode == 2
    assert "batches still running" in online.stderr
    assert sim.stats.requests == 0


def test_batch_mode_resumes_an_output_begun_online(sim: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(10))
    output = tmp_path / "out.jsonl"
    first = write_jsonl(tmp_path / "first.jsonl", requests(4))
    online = run_cli(
        "run", str(first), "-o", str(output), "--request-url", sim.messages_url,
        "--api-key", KEY, "--force",
    )  # fmt: skip
    assert online.returncode == 0, online.stderr
    done = run_batch(sim, source, output, "--force")
    assert done.returncode == 0, done.stderr
    assert succeeded_once(output, 10)
    assert set(batches_holding(sim)) == {f"line-{n}" for n in range(5, 11)}


# ---- manual control --------------------------------------------------------------------


def test_batch_list_and_status_and_results_of_one_batch(sim: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(4))
    output = tmp_path / "out.jsonl"
    assert run_batch(sim, source, output, "--batch-size", "2").returncode == 0
    ids = [batch.id for batch in sim.batch_record]
    listed = run_cli("batch", "list", "--limit", "1", "--all", *api(sim))
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ids[::-1]
    one = run_cli("batch", "status", "--batch-id", ids[0], *api(sim))
    assert json.loads(one.stdout)["processing_status"] == "ended"
    status = run_cli("batch", "status", str(output), "--api-key", KEY)
    assert status.returncode == 0, status.stderr
    assert all(batch_id in status.stdout for batch_id in ids)
    copy = tmp_path / "copy.jsonl"
    fetched = run_cli("batch", "results", "--batch-id", ids[1], "-o", str(copy), *api(sim))
    assert fetched.returncode == 0, fetched.stderr
    lines = read_jsonl(copy)
    assert sorted(r["custom_id"] for r in lines) == ["line-3", "line-4"]
    for line in lines:
        MessageBatchIndividualResponse.model_validate(line)


def api(sim: Simulator) -> list[str]:
    return ["--request-url", sim.messages_url, "--api-key", KEY]


# ---- caching and cost -------------------------------------------------------------------


def cached_requests(count: int) -> list[dict[str, Any]]:
    shared = [{"type": "text", "text": "policy " * 3000, "cache_control": {"type": "ephemeral"}}]
    return [
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 32,
            "system": shared,
            "messages": [{"role": "user", "content": f"Question {n}?"}],
        }
        for n in range(count)
    ]


def test_a_shared_cached_prefix_is_primed_by_a_small_batch_first(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", cached_requests(12))
    output = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"
    done = run_batch(sim, source, output, "--summary-json", str(summary))
    assert done.returncode == 0, done.stderr
    assert [len(batch.custom_ids) for batch in sim.batch_record] == [1, 11]
    usage = [r["result"]["message"]["usage"] for r in read_jsonl(output)]
    assert sum(u["cache_creation_input_tokens"] > 0 for u in usage) == 1
    assert sum(u["cache_read_input_tokens"] > 0 for u in usage) == 11
    tokens = json.loads(summary.read_text())["tokens"]
    assert tokens["cache_read"] > 0 and tokens["cache_write"] > 0
    assert "Caching:" in done.stderr


def test_without_warm_up_every_request_of_the_first_batch_writes_the_cache(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", cached_requests(6))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--no-cache-warmup")
    assert done.returncode == 0, done.stderr
    usage = [r["result"]["message"]["usage"] for r in read_jsonl(output)]
    assert all(u["cache_creation_input_tokens"] > 0 for u in usage)


def test_the_summary_cost_is_half_the_online_cost_of_the_same_usage(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(20))
    batch_summary, online_summary = tmp_path / "batch.json", tmp_path / "online.json"
    done = run_batch(sim, source, tmp_path / "b.jsonl", "--summary-json", str(batch_summary))
    assert done.returncode == 0, done.stderr
    online = run_cli(
        "run", str(source), "-o", str(tmp_path / "o.jsonl"), "--request-url", sim.messages_url,
        "--api-key", KEY, "--summary-json", str(online_summary),
    )  # fmt: skip
    assert online.returncode == 0, online.stderr
    batch_figures = json.loads(batch_summary.read_text())
    online_figures = json.loads(online_summary.read_text())
    assert batch_figures["tokens"] == online_figures["tokens"]  # the same answers, same usage
    assert batch_figures["cost_usd"] == pytest.approx(online_figures["cost_usd"] / 2, rel=1e-6)
    assert batch_figures["online_equivalent_usd"] == pytest.approx(online_figures["cost_usd"])


# ---- politeness, cron, formats -------------------------------------------------------------


@pytest.mark.simulator(batch_processing_seconds=1.0, batch_requests_per_minute=120)
def test_polls_are_paced_within_the_batch_endpoints_rate_limit(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(5))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--batch-api-rpm", "100", "--poll-interval", "0.001")
    assert done.returncode == 0, done.stderr
    assert sim.batches.service.counters.rate_limited == 0
    assert succeeded_once(output, 5)
    assert "batches: 1 running (1 in_progress)" in done.stderr  # a progress line per poll


@pytest.mark.simulator(batch_processing_seconds=0.6, batch_requests_per_minute=30)
def test_a_429_from_the_batch_endpoints_pauses_calls_for_its_retry_after(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(5))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--poll-interval", "0.001")
    assert done.returncode == 0, done.stderr
    limited = sim.batches.service.counters.rate_limited
    assert limited >= 1 and f"({limited:,} answered 429)" in done.stderr
    assert succeeded_once(output, 5)


@pytest.mark.simulator(batch_processing_seconds=0.5)
def test_no_wait_submits_and_exits_75_and_the_same_command_finishes_later(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(6))
    output = tmp_path / "out.jsonl"
    first = run_batch(sim, source, output, "--no-wait", "--batch-size", "3")
    assert first.returncode == 75, first.stderr
    assert len(sim.batch_record) == 2 and "Resume:" in first.stderr
    later = run_batch(sim, source, output, "--batch-size", "3")
    assert later.returncode == 0, later.stderr
    assert succeeded_once(output, 6) and len(sim.batch_record) == 2


@pytest.mark.simulator(batch_processing_seconds=0.3)
def test_batch_results_writes_what_ended_after_a_run_was_stopped(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(4))
    output = tmp_path / "out.jsonl"
    code, _ = interrupted(sim, Interrupt("retrieve", signal.SIGINT, drop=False), source, output)
    assert code == 130
    for _ in range(100):  # bounded: the batch ends 0.3 s after it was created
        collected = run_cli("batch", "results", str(output), "--api-key", KEY)
        if collected.returncode != 75:
            break
    assert collected.returncode == 0, collected.stderr
    assert succeeded_once(output, 4) and len(sim.batch_record) == 1


def test_the_cookbook_format_works_in_batch_mode_too(sim: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(3))
    output = tmp_path / "out.jsonl"
    done = run_batch(sim, source, output, "--output-format", "cookbook")
    assert done.returncode == 0, done.stderr
    lines = read_jsonl(output)
    assert sorted(line[2]["row"] for line in lines) == [0, 1, 2]
    assert all(line[1]["type"] == "message" and "messages" in line[0] for line in lines)


def test_an_output_cut_short_under_a_finished_state_is_refused_until_overwrite(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(3))
    output = tmp_path / "out.jsonl"
    assert run_batch(sim, source, output).returncode == 0
    output.unlink()
    refused = run_batch(sim, source, output)
    assert refused.returncode == 2 and "shorter than when batch results" in refused.stderr
    again = run_batch(sim, source, output, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert succeeded_once(output, 3) and len(sim.batch_record) == 2


def test_online_overwrite_forgets_the_batch_state_of_the_output(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(3))
    output = tmp_path / "out.jsonl"
    assert run_batch(sim, source, output).returncode == 0
    online = run_cli(
        "run", str(source), "-o", str(output), "--request-url", sim.messages_url,
        "--api-key", KEY, "--overwrite",
    )  # fmt: skip
    assert online.returncode == 0, online.stderr
    assert not Path(f"{output}.apiproc-batches.jsonl").exists()
    assert succeeded_once(output, 3)


def most_queued(sim: Simulator) -> int:
    """The most requests ever in unfinished batches at once, from the simulator's record."""
    events = []
    for batch in sim.batch_record:
        events.append((batch.created_at, len(batch.custom_ids)))
        events.append((batch.ended_at or math.inf, -len(batch.custom_ids)))
    level = peak = 0
    for _, change in sorted(events, key=lambda event: (event[0], event[1])):
        level += change
        peak = max(peak, level)
    return peak


@pytest.mark.simulator(batch_processing_seconds=0.3, batch_queue_limit=10)
def test_a_full_processing_queue_is_waited_out_and_max_batch_queue_avoids_it(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(20))
    first = run_batch(sim, source, tmp_path / "a.jsonl", "--batch-size", "4")
    assert first.returncode == 0, first.stderr
    assert sim.batches.service.counters.queue_full >= 1  # refused, waited, sent again
    assert succeeded_once(tmp_path / "a.jsonl", 20)
    refused = sim.batches.service.counters.queue_full
    capped = run_batch(
        sim, source, tmp_path / "b.jsonl", "--batch-size", "4", "--max-batch-queue", "8"
    )
    assert capped.returncode == 0, capped.stderr
    assert sim.batches.service.counters.queue_full == refused  # no new refusal
    assert succeeded_once(tmp_path / "b.jsonl", 20)
    assert most_queued(sim) <= 10


def test_an_input_changed_under_its_batches_is_refused_even_with_force(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = requests(3)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    assert run_batch(sim, source, output).returncode == 0
    assert all(len(r["fingerprint"]) == 16 for r in read_jsonl(output))
    rows[1]["max_tokens"] = 65
    write_jsonl(source, rows)
    for extra in ((), ("--force",)):
        refused = run_batch(sim, source, output, *extra)
        assert refused.returncode == 2 and "changed since batches" in refused.stderr
    assert len(sim.batch_record) == 1
    grown = write_jsonl(source, [*requests(3), *requests(2, start=3)])  # lines appended
    assert run_batch(sim, grown, output).returncode == 0
    assert succeeded_once(output, 5) and len(sim.batch_record) == 2


class Hold:
    """Tells the test (in another thread) when the batch run has reached a poll."""

    def __init__(self) -> None:
        self.reached = threading.Event()

    async def __call__(self, event: str, detail: dict[str, Any]) -> bool:
        if event == "retrieve":
            self.reached.set()
        return False


@pytest.mark.simulator(batch_processing_seconds=60)
def test_the_output_lock_keeps_a_second_run_away_in_batch_mode(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(3))
    output = tmp_path / "out.jsonl"
    hold = Hold()
    sim.config.batch_hook = hold
    first = start_batch(sim, source, output)
    try:
        assert hold.reached.wait(timeout=CLI_TIMEOUT)
        second = run_batch(sim, source, output)
        assert second.returncode == 2 and "being written by another apiproc run" in second.stderr
        assert len(sim.batch_record) == 1
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=CLI_TIMEOUT)
        sim.config.batch_hook = None


@pytest.mark.simulator(batch_expired_rate=1.0)
def test_retry_errored_sends_expired_requests_again_in_a_new_state(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", requests(3))
    output = tmp_path / "out.jsonl"
    assert run_batch(sim, source, output, "--max-attempts", "1").returncode == 1
    sim.config.batch_expired_rate = 0.0
    again = run_batch(sim, source, output, "--retry-errored")
    assert again.returncode == 0, again.stderr
    assert succeeded_once(output, 3) and len(sim.batch_record) == 2
