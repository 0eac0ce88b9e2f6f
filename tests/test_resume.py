"""Interruptions are cheap: resume, torn-line repair, wrong-input guard, kill -9, signals."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, read_jsonl, request_line, run_against, write_jsonl

from apiproc.jobs import request_fingerprint
from apiproc.simulator import Simulator

KEY = "sk-ant-resume-test-key"


def run(simulator: Simulator, source: Path, output: Path | str, *extra: str):
    return run_against(simulator, source, output, *extra, key=KEY)


def succeeded_at_server(simulator: Simulator) -> int:
    return sum(1 for seen in simulator.seen if seen.path == "/v1/messages" and seen.status == 200)


def ids_in(path: Path) -> Counter:
    return Counter(record["custom_id"] for record in read_jsonl(path))


def test_resume_skips_requests_already_in_output(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(10)])
    output = tmp_path / "out.jsonl"
    first = run(simulator, source, output)
    assert first.returncode == 0
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:6]))  # as if the run had stopped after six
    again = run(simulator, source, output)
    assert again.returncode == 0, again.stderr
    assert "Skipped:   6 already in the output" in again.stderr
    assert succeeded_at_server(simulator) == 10 + 4
    assert sorted(ids_in(output).values()) == [1] * 10


def test_a_finished_output_sends_nothing_again(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(5)])
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    assert run(simulator, source, output).returncode == 0
    assert succeeded_at_server(simulator) == 5
    assert len(read_jsonl(output)) == 5


def test_a_torn_last_line_is_repaired_and_its_request_sent_again(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(4)])
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    lines = output.read_bytes().splitlines(keepends=True)
    torn_id = json.loads(lines[3])["custom_id"]
    kept = b"".join(lines[:3])
    output.write_bytes(kept + lines[3][: len(lines[3]) // 2])
    again = run(simulator, source, output)
    assert again.returncode == 0, again.stderr
    assert "torn last line" in again.stderr
    assert output.read_bytes().startswith(kept)  # the complete lines are untouched
    assert ids_in(output) == Counter({f"line-{n}": 1 for n in range(1, 5)})
    assert read_jsonl(output)[-1]["custom_id"] == torn_id


def test_resuming_with_other_requests_under_the_same_ids_is_refused_unless_forced(
    simulator: Simulator, tmp_path: Path
) -> None:
    output = tmp_path / "out.jsonl"
    first = write_jsonl(tmp_path / "a.jsonl", [request_line(n) for n in range(3)])
    other = write_jsonl(tmp_path / "b.jsonl", [request_line(n + 100) for n in range(3)])
    assert run(simulator, first, output).returncode == 0
    refused = run(simulator, other, output)
    assert refused.returncode == 2
    assert "3 lines of" in refused.stderr and "line-1, line-2, line-3" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert succeeded_at_server(simulator) == 3
    forced = run(simulator, other, output, "--force")
    assert forced.returncode == 0, forced.stderr
    assert succeeded_at_server(simulator) == 6
    assert ids_in(output) == Counter({"line-1": 1, "line-2": 1, "line-3": 1})
    answered = {record["fingerprint"] for record in read_jsonl(output)}
    assert answered == {request_fingerprint(request_line(n + 100)) for n in range(3)}


def test_lines_appended_to_the_input_are_picked_up_on_resume(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(3)])
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    with open(source, "a") as handle:
        handle.write(json.dumps(request_line(99)) + "\n")
    assert run(simulator, source, output).returncode == 0
    assert len(read_jsonl(output)) == 4


def test_overwrite_starts_afresh(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(3)])
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    assert run(simulator, source, output, "--overwrite").returncode == 0
    assert succeeded_at_server(simulator) == 6
    assert len(read_jsonl(output)) == 3


def test_retry_errored_sends_errors_again_and_keeps_one_line_per_id(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(3)])
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    records = read_jsonl(output)
    records[1]["result"] = {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": None,
        },
    }
    output.write_text("".join(json.dumps(r) + "\n" for r in records))
    plain = run(simulator, source, output)
    assert succeeded_at_server(simulator) == 3  # an error is final unless asked
    retried = run(simulator, source, output, "--retry-errored")
    assert plain.returncode == 0 and retried.returncode == 0, retried.stderr
    assert succeeded_at_server(simulator) == 4
    final = read_jsonl(output)
    assert ids_in(output) == Counter({"line-1": 1, "line-2": 1, "line-3": 1})
    assert all(r["result"]["type"] == "succeeded" for r in final)


def test_cookbook_output_resumes_by_the_request_it_holds(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(6)])
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output, "--output-format", "cookbook").returncode == 0
    output.write_text("".join(output.read_text().splitlines(keepends=True)[:2]))
    assert run(simulator, source, output, "--output-format", "cookbook").returncode == 0
    assert succeeded_at_server(simulator) == 6 + 4
    prompts = [line[0]["messages"][0]["content"] for line in read_jsonl(output)]
    assert sorted(prompts) == sorted(request_line(n)["messages"][0]["content"] for n in range(6))


def start(simulator: Simulator, source: Path, output: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "apiproc",
        "run",
        str(source),
        "-o",
        str(output),
        "--request-url",
        simulator.messages_url,
        "--api-key",
        KEY,
        *extra,
    ]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


PROGRESS = ("--progress-every", "0.05")


def wait_for_line(process: subprocess.Popen, wanted: Callable[[str], bool]) -> str:
    """Read the run's stderr until a line it prints shows the moment has come."""
    assert process.stderr is not None
    for _ in range(10_000):  # bounded: a line that never comes fails the test, not hangs it
        line = process.stderr.readline()
        if not line or wanted(line):
            return line
    return ""


@pytest.mark.simulator(latency=0.1, latency_jitter=0.05)
def test_sigkill_at_random_moments_then_rerun_until_done(
    simulator: Simulator, tmp_path: Path
) -> None:
    # At most 10 in flight for >= 0.1 s each: at most 120 requests finish in a kill window
    # (<= 1.2 s), so twelve windows cannot complete 1,500 whatever the machine's speed.
    total, concurrency, kills_wanted = 1_500, 10, 12
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(total)])
    output = tmp_path / "out.jsonl"
    rng = random.Random(2024)
    kills = 0
    for _ in range(40):  # bounded: each round either kills or finishes
        process = start(simulator, source, output, "--max-concurrency", str(concurrency))
        if kills < kills_wanted:
            time.sleep(rng.uniform(0.4, 1.2))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
        process.communicate(timeout=120)
        if kills >= kills_wanted and process.returncode == 0:
            break
    assert kills >= 10
    raw = output.read_bytes()
    assert raw.endswith(b"\n")
    records = [json.loads(line) for line in raw.splitlines()]  # no torn line anywhere
    assert Counter(r["custom_id"] for r in records) == Counter(
        {f"line-{n}": 1 for n in range(1, total + 1)}
    )
    # Only answers lost with a killed process are paid twice: at most what was in flight.
    assert succeeded_at_server(simulator) - total <= kills * concurrency


@pytest.mark.simulator(latency=0.3)
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_gracefully_and_the_rerun_completes_the_rest(
    simulator: Simulator, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(300)])
    output = tmp_path / "out.jsonl"
    process = start(simulator, source, output, "--max-concurrency", "10", *PROGRESS)
    wait_for_line(process, lambda line: re.match(r"[1-9][\d,]*/300 done", line) is not None)
    process.send_signal(sig)  # at least one result is written, more are in flight
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert "finishing the requests in flight" in stderr
    assert "Succeeded:" in stderr
    assert f"Stopped:   by {sig.name}" in stderr
    resume = next(line for line in stderr.splitlines() if line.startswith("Resume:"))
    assert str(source) in resume and "[redacted]" in resume and KEY not in resume
    partial = read_jsonl(output)
    assert 0 < len(partial) < 300
    # Everything that was in flight was written: the server answered nothing unrecorded.
    assert succeeded_at_server(simulator) == len(partial)
    rest = run(simulator, source, output)
    assert rest.returncode == 0, rest.stderr
    assert ids_in(output) == Counter({f"line-{n}": 1 for n in range(1, 301)})


@pytest.mark.simulator(latency=5.0)
def test_a_second_signal_exits_at_once(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(20)])
    process = start(simulator, source, tmp_path / "out.jsonl", *PROGRESS)
    wait_for_line(process, lambda line: " done (" in line)  # under way, requests in flight
    process.send_signal(signal.SIGINT)
    wait_for_line(process, lambda line: "finishing the requests in flight" in line)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == 130
    assert time.monotonic() - started < 2.0


@pytest.mark.simulator(latency=30.0, spend_limit_after=2)
def test_a_signal_after_a_fatal_stop_cuts_the_wait_for_requests_in_flight_short(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(50)])
    process = start(simulator, source, tmp_path / "out.jsonl", "--max-requests-per-minute", "600")
    line = wait_for_line(process, lambda line: "stopping:" in line)  # the spend cap is met
    assert "usage limits" in line, line
    process.send_signal(signal.SIGINT)
    # The two accepted requests take 30 s to answer, and the grace period is 30 s.
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 3, stderr
    assert "SIGINT: no longer waiting for the requests in flight" in stderr
    assert "SIGINT cut the wait short; " in stderr and "in flight were abandoned" in stderr
    assert "Resume:" in stderr
    assert simulator.stats.succeeded == 0  # nothing answered: they were not waited for
    assert (tmp_path / "out.jsonl").read_text() == ""  # and no error line for the rest


def test_fsync_option_runs(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(3)])
    done = run(simulator, source, tmp_path / "out.jsonl", "--fsync")
    assert done.returncode == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 3
    assert os.path.exists(str(tmp_path / "out.jsonl") + ".apiproc.json")


def test_resuming_in_another_output_format_is_refused(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(3)])
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    refused = run(simulator, source, output, "--output-format", "cookbook")
    assert refused.returncode == 2
    assert "written in the batch format" in refused.stderr
    assert succeeded_at_server(simulator) == 3
