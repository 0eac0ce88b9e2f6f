"""Shared benchmark plumbing: a simulator in its own process, clients as subprocesses.

    with SimulatorProcess(requests_per_minute=3000, latency=0.2) as sim:
        run = run_client(workload_path, sim.url, "--max-requests-per-minute", "3000")
        print(run.wall_seconds, sim.stats()["rate_limited"])

The simulator runs in a separate process so the client's own CPU time is measurable,
and every figure of consumption comes from the simulator's counters.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOOR = ROOT / "bench" / "floor.py"
STARTUP_TIMEOUT = 60.0
RUN_TIMEOUT = 900.0

SIMULATOR_OPTIONS = {
    "requests_per_minute": "--requests-per-minute",
    "input_tokens_per_minute": "--input-tokens-per-minute",
    "output_tokens_per_minute": "--output-tokens-per-minute",
    "tokens_per_minute": "--tokens-per-minute",
    "output_accounting": "--output-accounting",
    "window_seconds": "--window-seconds",
    "latency": "--latency",
    "latency_jitter": "--latency-jitter",
    "rate_429": "--rate-429",
    "rate_529": "--rate-529",
    "rate_500": "--rate-500",
    "rate_502_html": "--rate-502-html",
    "rate_drop": "--rate-drop",
    "rate_stall": "--rate-stall",
    "stall_seconds": "--stall-seconds",
    "rate_stream_error": "--rate-stream-error",
    "ping_interval": "--ping-interval",
    "output_tokens_per_second": "--output-tokens-per-second",
    "seed": "--seed",
    "output_tokens": "--output-tokens",
    "batch_processing_seconds": "--batch-processing-seconds",
    "batch_create_latency": "--batch-create-latency",
    "batch_errored_rate": "--batch-errored-rate",
    "batch_expired_rate": "--batch-expired-rate",
    "batch_requests_per_minute": "--batch-requests-per-minute",
    "batch_queue_limit": "--batch-queue-limit",
}


class SimulatorProcess:
    """`apiproc simulate` on a free loopback port, stopped on exit."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> SimulatorProcess:
        args = [sys.executable, "-m", "apiproc", "simulate", "--port", "0"]
        for key, value in self.config.items():
            if key == "class_limits":
                args += ["--limits-file", _json_file(value)]
                continue
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            args += [SIMULATOR_OPTIONS[key], str(value)]
        self.process = subprocess.Popen(
            args, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+)/v1/messages", line)
            if found:
                self.base = found.group(1)
                self.url = self.base + "/v1/messages"
                self._drain_stderr()
                return self
            if not line and self.process.poll() is not None:
                break
        self.__exit__()
        raise RuntimeError("the simulator did not start")

    def _drain_stderr(self) -> None:
        """Keep reading the simulator's stderr: a full pipe would block the simulator."""
        stream = self.process.stderr if self.process else None
        if stream is not None:
            threading.Thread(target=_discard, args=(stream,), daemon=True).start()

    def __exit__(self, *exc_info: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def url_for(self, api: str) -> str:
        """Where a client of `api` sends: the Messages endpoint or the OpenAI base URL."""
        return self.base + "/v1" if api == "openai" else self.url

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/_sim/stats", timeout=10) as response:
            return json.load(response)

    def reset(self) -> None:
        request = urllib.request.Request(self.base + "/_sim/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


def _discard(stream: Any) -> None:
    for _ in stream:
        pass


@dataclass(slots=True)
class ClientRun:
    returncode: int
    wall_seconds: float
    cpu_seconds: float
    max_rss_mb: float
    stderr: str
    output_path: Path

    def records(self) -> list[dict[str, Any]]:
        with open(self.output_path) as handle:
            return [json.loads(line) for line in handle]


def run_client(
    workload: Path,
    url: str,
    *options: str,
    output: Path | None = None,
    timeout: float = RUN_TIMEOUT,
    api: str = "anthropic",
    wrapper: tuple[str, ...] = (),
) -> ClientRun:
    """Run `apiproc run --api API` to completion; measure its wall time, CPU time and peak
    RSS (of that one process, read with wait4). `wrapper` is a command it runs under."""
    if output is None:
        output = Path(tempfile.mkdtemp(prefix="apiproc-bench-")) / "out.jsonl"
    args = [
        sys.executable,
        "-m",
        "apiproc",
        "run",
        str(workload),
        "-o",
        str(output),
        "--request-url",
        url,
        "--api-key",
        "sk-bench",
        "--api",
        api,
        "--progress-every",
        "3600",
        *options,
    ]
    return measure([*wrapper, *args], output, timeout)


def run_floor(
    workload: Path,
    url: str,
    output: Path,
    concurrency: int,
    uvloop: bool = False,
    timeout: float = RUN_TIMEOUT,
    wrapper: tuple[str, ...] = (),
) -> ClientRun:
    """Run the floor client (bench/floor.py) to completion, measured as `run_client` is."""
    args = [
        sys.executable,
        str(FLOOR),
        str(workload),
        str(output),
        "--url",
        url,
        "--key",
        "sk-bench",
        "--concurrency",
        str(concurrency),
        *(["--uvloop"] if uvloop else []),
    ]
    return measure([*wrapper, *args], output, timeout)


def measure(args: list[str], output: Path, timeout: float = RUN_TIMEOUT) -> ClientRun:
    """Run one client process to completion: wall time, and CPU time and peak RSS of that
    process alone (wait4), start-up included."""
    with tempfile.TemporaryFile("w+") as errors:
        started = time.monotonic()
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=client_environment(),
            text=True,
        )
        _, status, usage = _wait4(process, timeout)
        wall = time.monotonic() - started
        errors.seek(0)
        stderr = errors.read()
    cpu = usage.ru_utime + usage.ru_stime
    return ClientRun(
        os.waitstatus_to_exitcode(status), wall, cpu, usage.ru_maxrss / 1024, stderr, output
    )


def client_environment() -> dict[str, str]:
    """This environment, with bytecode cached as on a user's machine: without the cache
    every launch would compile apiproc's modules again and start-up would measure that."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _wait4(process: subprocess.Popen[str], timeout: float) -> tuple[int, int, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise TimeoutError(f"the client did not finish within {timeout:.0f} s: {process.args}")


def theoretical_seconds(stats: dict[str, Any], limits: dict[str, float]) -> float:
    """max over the limits of (total consumption - initial bucket) / rate, from the
    simulator's own counts; `limits` maps requests/input_tokens/output_tokens to per-minute."""
    input_tokens = stats["input_tokens"] + stats["cache_creation_input_tokens"]
    consumed = {
        "requests": stats["succeeded"],
        "input_tokens": input_tokens,
        "output_tokens": stats["output_tokens"],
        "tokens": input_tokens + stats["output_tokens"],
    }
    return max(
        max(0.0, consumed[name] - per_minute) / (per_minute / 60.0)
        for name, per_minute in limits.items()
    )


def _json_file(value: Any) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(value, handle)
    return handle.name


def write_workload(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


# The model each API's workloads name in the simulator.
SMALL_MODEL = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4o-mini"}
LARGE_MODEL = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o-mini"}


def small_requests(count: int, model: str = "claude-haiku-4-5") -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"Say something about the number {n}."}],
        }
        for n in range(count)
    ]


# valgrind's instruction count only: no cache simulation, no output file.
CACHEGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")
# Two run lengths, whose counts differenced give the cost of one request.
COUNTED_REQUESTS = (2_000, 4_000)


def counted_instructions(stderr: str) -> int:
    """The instruction count cachegrind printed on a run's stderr."""
    found = re.search(r"I\s+refs:\s+([\d,]+)", stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_request_and_fixed(counted: dict[int, int]) -> tuple[float, float]:
    """Instructions per request and fixed, from the counts of runs of two lengths."""
    (few, few_count), (many, many_count) = sorted(counted.items())
    per_request = (many_count - few_count) / (many - few)
    return per_request, few_count - few * per_request


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)
