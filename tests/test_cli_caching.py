"""End to end: prompt-cache warm-up seen from the simulator's side of the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, request_line, write_jsonl
from test_cli import messages_seen, run_against

from apiproc.simulator import SeenRequest, Simulator

MODEL = "claude-sonnet-4-6"  # caches prefixes of 1,024 tokens and more
LATENCY = 0.3
MARK = {"type": "ephemeral"}
FAST = ("--max-requests-per-minute", "4000", "--max-concurrency", "50")


def document(name: str, tokens: int = 1_500) -> str:
    """Text of exactly `tokens` simulator tokens."""
    return " ".join([name[:3]] * tokens)


def cached_request(n: int, system: str, **extra: Any) -> dict[str, Any]:
    marked = [{"type": "text", "text": system, "cache_control": MARK}]
    return request_line(n, model=MODEL, system=marked, **extra)


def writes_and_reads(seen: list[SeenRequest]) -> tuple[int, int]:
    usages = [s.response_usage for s in seen if s.response_usage]
    writes = sum(1 for u in usages if u["cache_creation_input_tokens"] > 0)
    reads = sum(1 for u in usages if u["cache_read_input_tokens"] > 0)
    return writes, reads


@pytest.mark.simulator(latency=LATENCY)
def test_warm_up_writes_each_shared_prefix_once_and_the_rest_read_it(
    simulator: Simulator, tmp_path: Path
) -> None:
    systems = [document("alpha"), document("bravo")]
    rows = [cached_request(n, systems[n % 2]) for n in range(40)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl", *FAST)
    assert done.returncode == 0, done.stderr
    assert writes_and_reads(messages_seen(simulator)) == (2, 38)
    assert "hit rate 95.0%, saved $" in done.stderr


@pytest.mark.simulator(latency=LATENCY)
def test_without_warm_up_concurrent_requests_all_pay_the_write(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [cached_request(n, document("alpha")) for n in range(40)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl", *FAST, "--no-cache-warmup")
    assert done.returncode == 0, done.stderr
    writes, _ = writes_and_reads(messages_seen(simulator))
    assert writes >= 20


def test_use_caching_marks_the_end_of_a_string_system_prompt(
    simulator: Simulator, tmp_path: Path
) -> None:
    system = document("alpha")
    own_mark = [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": MARK}]}]
    rows = [
        request_line(1, model=MODEL, system=system),
        request_line(2, model=MODEL, system=system, messages=own_mark),
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl", "--use_caching", "True")
    assert done.returncode == 0, done.stderr
    sent = [s.body for s in messages_seen(simulator)]
    plain = next(body for body in sent if body["messages"] != own_mark)
    assert plain["system"] == [{"type": "text", "text": system, "cache_control": MARK}]
    marked_by_user = next(body for body in sent if body["messages"] == own_mark)
    assert marked_by_user["system"] == system  # it has a breakpoint of its own: left alone


@pytest.mark.simulator(latency=LATENCY)
def test_a_failing_warming_request_does_not_strand_its_group(
    simulator: Simulator, tmp_path: Path
) -> None:
    system = document("alpha")
    rows = [cached_request(0, system, temperature=3.5)]  # refused: 400
    rows += [cached_request(n, system) for n in range(1, 12)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl", *FAST)
    assert done.returncode == 1
    results = [r["result"]["type"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert sorted(results) == ["errored"] + ["succeeded"] * 11
    assert writes_and_reads(messages_seen(simulator)) == (1, 10)


def test_a_prefix_below_the_models_minimum_is_warned_about_once(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [cached_request(n, document("alpha", tokens=300)) for n in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl", *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("the API will silently cache nothing") == 1
    assert done.stderr.count("WARNING") == 1
    assert writes_and_reads(messages_seen(simulator)) == (0, 0)


@pytest.mark.simulator(latency=LATENCY)
def test_jobs_without_breakpoints_are_not_delayed_by_a_warm_up(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [cached_request(n, document("alpha")) for n in range(10)]
    rows += [request_line(n, model=MODEL) for n in range(10, 20)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl", *FAST)
    assert done.returncode == 0, done.stderr
    seen = messages_seen(simulator)
    warmer = min(s.time for s in seen if s.body.get("system"))
    plain = [s.time for s in seen if not s.body.get("system")]
    parked = [s.time for s in seen if s.body.get("system") and s.time > warmer]
    assert len(plain) == 10 and max(plain) < warmer + LATENCY / 2
    assert len(parked) == 9 and min(parked) >= warmer + LATENCY
