"""Streaming end to end: the CLI against the simulator over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, request_line, run_against, write_jsonl

from apiproc.simulator import Simulator

KEY = "sk-test"


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not contents."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def streams_seen(simulator: Simulator) -> list[bool]:
    return [bool((s.body or {}).get("stream")) for s in simulator.seen if s.path == "/v1/messages"]


def by_id(path: Path) -> dict[str, Any]:
    return {record["custom_id"]: record for record in read_jsonl(path)}


def test_streamed_lines_give_records_shaped_exactly_like_plain_ones(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n, stream=True) for n in range(6)])
    streamed = run_against(simulator, source, tmp_path / "streamed.jsonl", key=KEY)
    plain = run_against(
        simulator, source, tmp_path / "plain.jsonl", "--transport", "plain", key=KEY
    )
    assert streamed.returncode == 0 and plain.returncode == 0, streamed.stderr + plain.stderr
    assert streams_seen(simulator) == [True] * 6 + [False] * 6
    assert simulator.stats.streamed == 6
    streamed_records, plain_records = (
        by_id(tmp_path / "streamed.jsonl"),
        by_id(tmp_path / "plain.jsonl"),
    )
    assert streamed_records.keys() == plain_records.keys()
    for custom_id, record in streamed_records.items():
        twin = plain_records[custom_id]
        assert shape(record) == shape(twin)
        message, plain_message = record["result"]["message"], twin["result"]["message"]
        assert message["usage"]["input_tokens"] == plain_message["usage"]["input_tokens"]
        words = message["content"][0]["text"].split()
        assert len(words) == message["usage"]["output_tokens"]  # one token per simulated word


def test_the_official_sdk_reads_a_streamed_record_as_a_message(
    simulator: Simulator, tmp_path: Path
) -> None:
    types = pytest.importorskip("anthropic.types")
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1, stream=True)])
    assert run_against(simulator, source, tmp_path / "out.jsonl", key=KEY).returncode == 0
    record = read_jsonl(tmp_path / "out.jsonl")[0]
    message = types.Message.model_validate(record["result"]["message"])
    assert message.usage.output_tokens > 0 and message.stop_reason is not None


def test_auto_transport_streams_what_asks_for_it_or_may_outlast_the_timeout(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [
        request_line(1),
        request_line(2, stream=True),
        request_line(3, stream=False),
        request_line(4, max_tokens=4_000),  # may outlast a 60 s timeout at 128,000 tokens/h
        request_line(5, max_tokens=2_000),
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--timeout",
        "60",
        "--max-concurrency",
        "1",
        key=KEY,
    )
    assert done.returncode == 0, done.stderr
    assert streams_seen(simulator) == [False, True, False, True, False]


@pytest.mark.parametrize(("transport", "expected"), [("stream", True), ("plain", False)])
def test_stream_and_plain_transports_apply_to_every_line(
    simulator: Simulator, tmp_path: Path, transport: str, expected: bool
) -> None:
    rows = [request_line(1), request_line(2, stream=True), request_line(3, stream=False)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl", "--transport", transport, key=KEY)
    assert done.returncode == 0, done.stderr
    assert streams_seen(simulator) == [expected] * 3
    assert all(r["result"]["type"] == "succeeded" for r in read_jsonl(tmp_path / "out.jsonl"))


@pytest.mark.simulator(latency=5.0, ping_interval=0.1)
def test_pings_keep_a_slow_stream_alive_past_the_idle_timeout(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1, stream=True)])
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--idle-timeout",
        "2",
        "--max-attempts",
        "1",
        key=KEY,
    )
    assert done.returncode == 0, done.stderr
    assert read_jsonl(tmp_path / "out.jsonl")[0]["attempts"] == 1
    assert simulator.stats.requests == 1


@pytest.mark.simulator(latency=5.0, ping_interval=0)
def test_without_pings_a_silence_longer_than_the_idle_timeout_is_a_stall(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1, stream=True)])
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--idle-timeout",
        "2",
        "--max-attempts",
        "2",
        "--retry-base-delay",
        "0.05",
        key=KEY,
    )
    assert done.returncode == 1
    record = read_jsonl(tmp_path / "out.jsonl")[0]
    assert record["attempts"] == 2
    error = record["result"]["error"]["error"]
    assert error["type"] == "timeout_error" and "stalled" in error["message"]
    assert simulator.stats.requests == 2 and simulator.stats.succeeded == 0


# Seed 1: the first request stalls, the second does not. The stall outlasts the test's
# time limit, so only the idle timeout can rescue the run.
@pytest.mark.simulator(rate_stall=0.5, stall_seconds=600, seed=1)
def test_a_stream_stalled_midway_is_cut_by_the_idle_timeout_and_sent_again(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1, stream=True)])
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--idle-timeout",
        "2",
        "--retry-base-delay",
        "0.05",
        key=KEY,
    )
    assert done.returncode == 0, done.stderr
    record = read_jsonl(tmp_path / "out.jsonl")[0]
    assert record["result"]["type"] == "succeeded" and record["attempts"] == 2
    assert simulator.stats.faults_injected == 1 and simulator.stats.streamed == 2
    assert simulator.stats.by_status == {200: 2}


@pytest.mark.simulator(rate_stream_error=0.3, seed=4)
def test_an_error_event_after_the_200_is_retried_until_the_answer_is_whole(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n, stream=True) for n in range(12)])
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--max-attempts",
        "10",
        "--retry-base-delay",
        "0.05",
        key=KEY,
    )
    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 12 and all(r["result"]["type"] == "succeeded" for r in records)
    stats = simulator.stats
    assert stats.faults_injected > 0
    assert sum(r["attempts"] for r in records) == stats.requests == 12 + stats.faults_injected


@pytest.mark.simulator(rate_stream_error=1.0)
def test_an_overloaded_stream_that_never_recovers_is_recorded_as_overloaded(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1, stream=True)])
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--max-attempts",
        "2",
        "--retry-base-delay",
        "0.05",
        key=KEY,
    )
    assert done.returncode == 1
    record = read_jsonl(tmp_path / "out.jsonl")[0]
    assert record["attempts"] == 2
    assert record["result"]["error"]["error"]["type"] == "overloaded_error"
    assert record["request_id"].startswith("req_")


@pytest.mark.simulator(latency=3.0)
def test_a_plain_attempt_is_still_bounded_by_the_timeout(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1)])
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--transport",
        "plain",  # auto would stream it: 64 tokens may outlast 0.5 s
        "--timeout",
        "0.5",
        "--max-attempts",
        "1",
        key=KEY,
    )
    assert done.returncode == 1
    error = read_jsonl(tmp_path / "out.jsonl")[0]["result"]["error"]["error"]
    assert error == {"type": "timeout_error", "message": "no complete answer within 0.5 s"}


@pytest.mark.simulator(latency=3.0)
def test_attempts_cut_at_their_deadline_one_after_another_leave_the_next_untouched(
    simulator: Simulator, tmp_path: Path
) -> None:
    # One slot: each cut attempt's sender goes on to the next job, which must be sent
    # and cut in its own time, not by the cancellation that ended the one before.
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(1, 4)])
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--transport",
        "plain",
        "--timeout",
        "0.5",
        "--max-attempts",
        "2",
        "--max-concurrency",
        "1",
        key=KEY,
    )
    assert done.returncode == 1, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in records) == ["line-1", "line-2", "line-3"]
    for record in records:
        assert record["attempts"] == 2
        assert record["result"]["error"]["error"]["message"] == "no complete answer within 0.5 s"
    assert simulator.stats.requests == 6
