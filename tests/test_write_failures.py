"""A result the output cannot take is never dropped silently: the run stops, names what
it could not write, exits non-zero, and a rerun sends only that."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import CLI_TIMEOUT, ROOT, read_jsonl, request_line, run_against, write_jsonl

from apiproc.cli import exit_status
from apiproc.engine import Engine, RunStats, feed_file
from apiproc.errors import EXIT_BROKEN_PIPE, EXIT_UNRECORDED, WriteFailed
from apiproc.limiter import AttemptReport, RateLimiter, Reservation
from apiproc.providers import AnthropicProvider
from apiproc.results import Result, ResultWriter
from apiproc.runner import prepare_output
from apiproc.settings import Settings
from apiproc.simulator import Simulator, SimulatorConfig

KEY = "sk-ant-write-failure-test-key"
CONCURRENCY = 4


def run(simulator: Simulator, source: Path, output: Path | str, *extra: str):
    return run_against(simulator, source, output, *extra, key=KEY)


def completed(simulator: Simulator) -> int:
    return simulator.stats.succeeded


class WriterThatFails(ResultWriter):
    """Writes `good` lines, then raises `error` for every line; notes what the simulator
    had completed at the first failure."""

    def __init__(self, path: str, good: int, error: Exception, simulator: Simulator) -> None:
        super().__init__(path)
        self.good = good
        self.error = error
        self.simulator = simulator
        self.completed_at_failure: int | None = None

    def write(self, result: Result) -> None:
        if self.good <= 0:
            if self.completed_at_failure is None:
                self.completed_at_failure = completed(self.simulator)
            raise self.error
        super().write(result)
        self.good -= 1


def settings_for(source: Path, output: Path, simulator: Simulator) -> Settings:
    return Settings(
        str(source),
        str(output),
        KEY,
        request_url=simulator.messages_url,
        max_concurrency=CONCURRENCY,
    )


async def run_engine(settings: Settings, writer: ResultWriter, **engine_options) -> RunStats:
    provider = AnthropicProvider(KEY, settings.request_url)
    engine = Engine(settings, provider, writer, **engine_options)
    return await asyncio.wait_for(engine.run(lambda e: feed_file(e, settings.requests_path)), 60)


@pytest.mark.parametrize(
    "error",
    [
        WriteFailed("out.jsonl", OSError(errno.ENOSPC, "No space left on device")),
        RuntimeError("a bug in the writer"),
    ],
)
def test_a_writer_that_fails_stops_the_run_and_a_rerun_sends_only_the_rest(
    tmp_path: Path, error: Exception
) -> None:
    total, good = 40, 5
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(total)])
    output = tmp_path / "out.jsonl"

    async def scenario() -> tuple[RunStats, RunStats, WriterThatFails, int]:
        async with Simulator(SimulatorConfig(latency=0.05)) as simulator:
            settings = settings_for(source, output, simulator)
            with WriterThatFails(str(output), good, error, simulator) as failing:
                first = await run_engine(settings, failing)
            completed_first = completed(simulator)
            with ResultWriter(str(output)) as writer:
                rerun = await run_engine(settings, writer, finished=prepare_output(settings))
            return first, rerun, failing, completed_first

    first, rerun, writer, completed_first = asyncio.run(scenario())
    assert exit_status(first) == EXIT_UNRECORDED
    assert first.succeeded == good and first.unwritten
    assert first.write_error
    assert writer.completed_at_failure is not None
    # Admission stopped at the first failed write: only what was in flight completed after.
    assert completed_first - writer.completed_at_failure <= CONCURRENCY
    assert completed_first == good + len(first.unwritten)
    assert rerun.succeeded == total - good and rerun.skipped == good
    assert exit_status(rerun) == 0
    assert Counter(r["custom_id"] for r in read_jsonl(output)) == Counter(
        {f"line-{n}": 1 for n in range(1, total + 1)}
    )


class LimiterThatFails(RateLimiter):
    """A bug in the limiter's bookkeeping after the third answer."""

    def finish(self, reservation: Reservation, report: AttemptReport) -> None:
        super().finish(reservation, report)
        if reservation.seq == 3:
            raise RuntimeError("a bug in the limiter")


def test_an_error_after_the_answer_still_records_the_answer(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(6)])
    output = tmp_path / "out.jsonl"

    async def scenario() -> RunStats:
        async with Simulator() as simulator:
            settings = settings_for(source, output, simulator)
            limiter = LimiterThatFails(settings.limits, discover=True)
            with ResultWriter(str(output)) as writer:
                return await run_engine(settings, writer, limiter=limiter)

    stats = asyncio.run(scenario())
    assert exit_status(stats) == 0
    records = read_jsonl(output)
    assert len(records) == 6 and all(r["result"]["type"] == "succeeded" for r in records)


@pytest.mark.simulator(latency=0.05)
def test_an_output_on_a_full_disk_stops_at_once_with_its_own_status(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(200)])
    done = run(simulator, source, "/dev/full", "--max-concurrency", str(CONCURRENCY))
    assert done.returncode == EXIT_UNRECORDED, done.stderr
    assert done.stderr.count("ERROR apiproc: Cannot write to /dev/full: No space left") == 1
    assert "Traceback" not in done.stderr
    assert "Unwritten: " in done.stderr and "line-" in done.stderr
    assert "a rerun sends every request again" in done.stderr  # a device cannot be resumed
    # The first answer was the first failed write: at most what was in flight completed.
    assert 1 <= completed(simulator) <= CONCURRENCY


def limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.simulator(latency=0.05)
def test_a_file_that_stops_growing_keeps_whole_lines_and_the_rerun_sends_only_the_rest(
    simulator: Simulator, tmp_path: Path
) -> None:
    total = 60
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(total)])
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "apiproc", "run", str(source), "-o", str(output)]
    command += ["--request-url", simulator.messages_url, "--api-key", KEY]
    command += ["--max-concurrency", str(CONCURRENCY)]
    first = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=CLI_TIMEOUT,
        preexec_fn=limit_file_size(4_000),  # the file may not grow past 4,000 bytes
        check=False,
    )
    assert first.returncode == EXIT_UNRECORDED, first.stderr
    assert "File too large" in first.stderr and "Traceback" not in first.stderr
    written = read_jsonl(output)  # whole lines only: the torn one was cut off again
    assert 0 < len(written) < total
    assert completed(simulator) <= len(written) + CONCURRENCY
    resume = next(line for line in first.stderr.splitlines() if line.startswith("Resume:"))
    assert "[redacted]" in resume and KEY not in resume
    before = completed(simulator)
    rerun = run(simulator, source, output)
    assert rerun.returncode == 0, rerun.stderr
    assert completed(simulator) - before == total - len(written)
    assert Counter(r["custom_id"] for r in read_jsonl(output)) == Counter(
        {f"line-{n}": 1 for n in range(1, total + 1)}
    )


@pytest.mark.simulator(latency=0.05)
def test_a_fifo_whose_reader_leaves_after_one_line_ends_the_run_as_a_broken_pipe(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(200)])
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "apiproc", "run", str(source), "-o", str(fifo)]
    command += ["--request-url", simulator.messages_url, "--api-key", KEY]
    command += ["--max-concurrency", str(CONCURRENCY), "--summary-json", str(tmp_path / "s.json")]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    with open(fifo, "rb") as reader:  # blocks until apiproc opens its end
        first_line = json.loads(reader.readline())
    _, stderr = process.communicate(timeout=CLI_TIMEOUT)
    assert process.returncode == EXIT_BROKEN_PIPE, stderr
    assert first_line["result"]["type"] == "succeeded"
    assert stderr.count("ERROR apiproc: The reader of") == 1 and "Traceback" not in stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["unwritten"]
    # Admission stopped at the first failed write: only what was in flight completed after.
    assert completed(simulator) <= summary["succeeded"] + CONCURRENCY


@pytest.mark.simulator(latency=0.05)
def test_stdout_read_by_head_ends_the_run_as_a_broken_pipe(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(200)])
    summary = tmp_path / "s.json"
    pipeline = (
        f"{sys.executable} -m apiproc run {source} -o - --request-url {simulator.messages_url} "
        f"--api-key {KEY} --max-concurrency {CONCURRENCY} --summary-json {summary} | head -1; "
        'echo "apiproc exited ${PIPESTATUS[0]}" >&2'
    )
    done = subprocess.run(
        ["bash", "-c", pipeline],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert f"apiproc exited {EXIT_BROKEN_PIPE}" in done.stderr, done.stderr
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr.count("ERROR apiproc: The reader of stdout went away (broken pipe).") == 1
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    figures = json.loads(summary.read_text())
    assert figures["unwritten"]
    assert completed(simulator) <= figures["succeeded"] + CONCURRENCY
