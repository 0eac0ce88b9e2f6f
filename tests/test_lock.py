"""One run per output: a second run refuses at once, or waits with --wait; nothing is
sent or written twice, and a killed run's lock does not outlive it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import CLI_TIMEOUT, ROOT, read_jsonl, request_line, run_against, write_jsonl

from apiproc.simulator import Simulator

KEY = "sk-ant-lock-test-key"
TOTAL = 60


def start(simulator: Simulator, source: str, output: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "apiproc", "run", source, "-o", str(output)]
    command += ["--request-url", simulator.messages_url, "--api-key", KEY, *extra]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def holding_the_output(simulator: Simulator, rows: list[str], output: Path) -> subprocess.Popen:
    """A run fed from a pipe the test keeps open, so it holds the output until told; it
    returns once that run is under way (its first progress line)."""
    process = start(simulator, "-", output, "--progress-every", "0.05")
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write("".join(rows))
    process.stdin.flush()
    wait_for_line(process, " done (")
    return process


def wait_for_line(process: subprocess.Popen, text: str) -> str:
    assert process.stderr is not None
    for _ in range(1_000):  # bounded: a line that never comes ends the test, not a hang
        line = process.stderr.readline()
        if text in line or not line:
            return line
    return ""


def completed_bodies(simulator: Simulator) -> Counter:
    return Counter(
        json.dumps(seen.body, sort_keys=True)
        for seen in simulator.seen
        if seen.path == "/v1/messages" and seen.status == 200
    )


@pytest.mark.simulator(latency=0.05)
def test_a_second_run_on_the_same_output_refuses_at_once_and_one_with_wait_waits(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [json.dumps(request_line(n)) + "\n" for n in range(TOTAL)]
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(TOTAL)])
    output = tmp_path / "out.jsonl"
    first = holding_the_output(simulator, rows, output)

    refused = run_against(simulator, source, output, key=KEY)
    assert refused.returncode == 2
    assert f"is being written by another apiproc run (pid {first.pid}: apiproc run -" in (
        refused.stderr
    )
    assert "--wait" in refused.stderr and "[redacted]" in refused.stderr
    assert KEY not in refused.stderr and "Traceback" not in refused.stderr

    waiting = start(simulator, str(source), output, "--wait")
    assert f"pid {first.pid}" in wait_for_line(waiting, "Waiting for the run writing")
    # Closing its input lets the first run finish; then the waiting one goes.
    _, first_err = first.communicate(timeout=CLI_TIMEOUT)
    _, waited_err = waiting.communicate(timeout=CLI_TIMEOUT)
    assert first.returncode == 0, first_err
    assert waiting.returncode == 0, waited_err
    assert f"Skipped:   {TOTAL} already in the output" in waited_err

    ids = Counter(record["custom_id"] for record in read_jsonl(output))
    assert ids == Counter({f"line-{n}": 1 for n in range(1, TOTAL + 1)})
    assert set(completed_bodies(simulator).values()) == {1}
    assert len(completed_bodies(simulator)) == TOTAL
    assert not Path(f"{output}.apiproc.lock").exists()


@pytest.mark.simulator(latency=0.05)
def test_the_lock_of_a_killed_run_does_not_block_the_next(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [json.dumps(request_line(n)) + "\n" for n in range(TOTAL)]
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(TOTAL)])
    output = tmp_path / "out.jsonl"
    killed = holding_the_output(simulator, rows, output)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=CLI_TIMEOUT)
    assert Path(f"{output}.apiproc.lock").exists()  # left behind, but no longer locked
    done = run_against(simulator, source, output, key=KEY)
    assert done.returncode == 0, done.stderr
    ids = Counter(record["custom_id"] for record in read_jsonl(output))
    assert ids == Counter({f"line-{n}": 1 for n in range(1, TOTAL + 1)})


def test_runs_writing_to_stdout_take_no_lock(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(3)])
    done = run_against(simulator, source, "-", key=KEY)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("*.apiproc.lock")) and not Path("-.apiproc.lock").exists()
