"""The client's own cost, as a ratio to a bare aiohttp client (the floor) measured beside it.

    python bench/overhead.py                          # overhead, start-up, memory at 200k lines
    python bench/overhead.py --repeat 5 overhead startup
    python bench/overhead.py memory --lines 200000 1000000
    python bench/overhead.py --repeat 1 instructions  # valgrind's count, not the clock's

Absolute figures move from machine to machine, so each scenario runs the floor
(bench/floor.py) and apiproc back to back against one simulator process, alternating
floor, apiproc, floor, apiproc over --repeat pairs, and reports medians and the ratio
apiproc / floor. The floor runs on uvloop exactly when apiproc would (uvloop installed).

overhead: 20,000 tiny requests, zero latency, limits far above what is reached: client CPU
  milliseconds per request (user + system of the client process, start-up included),
  requests per second, peak RSS. The simulator runs in its own process on the same
  cores, so it, not the client, usually bounds requests per second.
startup: from launching the client to the simulator receiving its first request.
memory: peak RSS of the client for inputs of growing length; it should stay flat.
instructions: user-space instructions the client executes, counted by valgrind's
  cachegrind, which the machine's load does not move: per request, (count at 4,000 tiny
  requests - count at 2,000) / 2,000, and the fixed cost (start-up and shutdown) that is
  left. Needs valgrind; each run is some fifty times slower than a plain one.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    CACHEGRIND,
    COUNTED_REQUESTS,
    RUN_TIMEOUT,
    ClientRun,
    SimulatorProcess,
    counted_instructions,
    median,
    per_request_and_fixed,
    run_client,
    run_floor,
    small_requests,
    table,
    write_workload,
)

CLIENTS = ("floor", "apiproc")
CONCURRENCY = 64
SLOWEST_RATE = 100  # requests per second, to bound one run's time
TINY_REQUESTS = 20_000
UNLIMITED = {
    "requests_per_minute": 1e9,
    "input_tokens_per_minute": 1e12,
    "output_tokens_per_minute": 1e12,
}
CLIENT_UNLIMITED = (
    "--max-requests-per-minute", "1e9",
    "--max-input-tokens-per-minute", "1e12",
    "--max-output-tokens-per-minute", "1e12",
    "--no-ramp",
)  # fmt: skip
UVLOOP = importlib.util.find_spec("uvloop") is not None

Figures = dict[str, float]


@dataclass(slots=True)
class Comparison:
    """Every run of one scenario: (pair number, client, figures), in the order run."""

    title: str
    runs: list[tuple[int, str, Figures]]
    differences: tuple[str, ...] = ()  # figures whose apiproc - floor is printed too


def run(
    client: str,
    workload: Path,
    sim: SimulatorProcess,
    *apiproc_options: str,
    wrapper: tuple[str, ...] = (),
) -> ClientRun:
    """One complete run of `client` over `workload` (under `wrapper`, a command such as
    valgrind); its output files are removed after."""
    output = workload.with_suffix(f".{client}.out")
    # Long inputs on a busy machine: allow at least SLOWEST_RATE requests per second.
    with open(workload, "rb") as handle:
        timeout = max(RUN_TIMEOUT, sum(1 for _ in handle) / SLOWEST_RATE)
    if client == "floor":
        done = run_floor(workload, sim.url, output, CONCURRENCY, UVLOOP, timeout, wrapper)
    else:
        options = ("--overwrite", "--max-concurrency", str(CONCURRENCY), *apiproc_options)
        done = run_client(
            workload, sim.url, *options, output=output, timeout=timeout, wrapper=wrapper
        )
    for written in output.parent.glob(output.name + "*"):  # apiproc's sidecar too
        written.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"{client} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def overhead(client: str, workload: Path, sim: SimulatorProcess) -> Figures:
    done = run(client, workload, sim, *CLIENT_UNLIMITED)
    succeeded = sim.stats()["succeeded"]
    assert succeeded == TINY_REQUESTS, f"{client}: {succeeded} succeeded"
    return {
        "cpu ms/request": done.cpu_seconds * 1000 / TINY_REQUESTS,
        "requests/s": TINY_REQUESTS / done.wall_seconds,
        "peak rss MB": done.max_rss_mb,
        "wall s": done.wall_seconds,
    }


def startup(client: str, workload: Path, sim: SimulatorProcess) -> Figures:
    launched = time.time()
    done = run(client, workload, sim)
    first = sim.stats()["first_request_at"]
    return {"launch to first request ms": (first - launched) * 1000, "wall s": done.wall_seconds}


def memory(client: str, workload: Path, sim: SimulatorProcess, lines: int) -> Figures:
    done = run(client, workload, sim, *CLIENT_UNLIMITED)
    succeeded = sim.stats()["succeeded"]
    assert succeeded == lines, f"{client}: {succeeded} of {lines} succeeded"
    return {
        "peak rss MB": done.max_rss_mb,
        "requests/s": lines / done.wall_seconds,
        "wall s": done.wall_seconds,
    }


def instructions(
    client: str, _: Path, sim: SimulatorProcess, workloads: dict[int, Path]
) -> Figures:
    """Instructions per request and fixed, from counted runs over `workloads` (by length)."""
    # An uncounted run first: a fresh checkout would compile its modules in the first
    # counted run only, and the difference between the two would leave that out.
    run(client, min(workloads.values(), key=lambda path: path.stat().st_size), sim)
    counted = {}
    for requests, workload in workloads.items():
        done = run(client, workload, sim, *CLIENT_UNLIMITED, wrapper=CACHEGRIND)
        counted[requests] = counted_instructions(done.stderr)
    per_request, fixed = per_request_and_fixed(counted)
    return {"k instructions/request": per_request / 1e3, "M instructions fixed": fixed / 1e6}


def alternate(
    scenario: Callable[[str, Path, SimulatorProcess], Figures],
    workload: Path,
    sim: SimulatorProcess,
    repeat: int,
    budget_seconds: float,
) -> list[tuple[int, str, Figures]]:
    """floor, apiproc, floor, apiproc...: `repeat` pairs, no new pair once over budget."""
    deadline = time.monotonic() + budget_seconds
    runs: list[tuple[int, str, Figures]] = []
    for pair in range(1, repeat + 1):
        if time.monotonic() > deadline:
            print(f"(stopped after {pair - 1} pairs: over the time budget)", flush=True)
            break
        for client in CLIENTS:
            sim.reset()
            runs.append((pair, client, scenario(client, workload, sim)))
    return runs


def write_memory_workload(path: Path, lines: int) -> Path:
    # metadata.user_id is the API's own field, so the floor can send the line as it is.
    with open(path, "w") as handle:
        for n in range(lines):
            handle.write(
                '{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user",'
                f'"content":"Reply with one word about {n}."}}],'
                f'"metadata":{{"user_id":"row-{n}"}}}}\n'
            )
    return path


def report(comparison: Comparison) -> str:
    keys = list(comparison.runs[0][2])
    rows = [["pair", "client", *keys]]
    for pair, client, figures in comparison.runs:
        rows.append([str(pair), client, *(_cell(figures[k]) for k in keys)])
    medians = {
        client: {k: median([f[k] for _, c, f in comparison.runs if c == client]) for k in keys}
        for client in CLIENTS
    }
    extra = ["apiproc-floor"] if comparison.differences else []
    summary = [["median of", "floor", "apiproc", "apiproc/floor", *extra]]
    for key in keys:
        floor, apiproc = medians["floor"][key], medians["apiproc"][key]
        ratio = f"{apiproc / floor:.2f}x" if floor else ""
        difference = [_cell(apiproc - floor) if key in comparison.differences else ""]
        summary.append([key, _cell(floor), _cell(apiproc), ratio, *difference[: len(extra)]])
    pairs = len(comparison.runs) // len(CLIENTS)
    return (
        f"\n{comparison.title}\n{table(rows)}\n\n"
        f"{comparison.title}: medians of {pairs}\n{table(summary)}"
    )


def _cell(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["overhead", "startup", "memory"])
    parser.add_argument("--repeat", type=int, default=5, help="floor/apiproc pairs per figure")
    parser.add_argument("--lines", type=int, nargs="*", default=[200_000])
    parser.add_argument(
        "--budget", type=float, default=3600, help="seconds per figure, then no new pair"
    )
    args = parser.parse_args()
    orjson = importlib.util.find_spec("orjson") is not None
    print(
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"loop {'uvloop' if UVLOOP else 'asyncio'}, orjson {'yes' if orjson else 'no'}, "
        f"concurrency {CONCURRENCY}",
        flush=True,
    )
    for name in args.scenarios:
        with tempfile.TemporaryDirectory() as directory:
            for comparison in scenario_runs(name, Path(directory), args):
                print(report(comparison), flush=True)


def scenario_runs(name: str, workdir: Path, args: argparse.Namespace) -> Iterator[Comparison]:
    """The comparisons of one scenario, each as soon as its runs are done."""
    if name == "overhead":
        workload = write_workload(workdir / "tiny.jsonl", small_requests(TINY_REQUESTS))
        with SimulatorProcess(**UNLIMITED, output_tokens=(1, 4)) as sim:
            runs = alternate(overhead, workload, sim, args.repeat, args.budget)
        yield Comparison(f"overhead: {TINY_REQUESTS:,} tiny requests", runs)
    elif name == "startup":
        workload = write_workload(workdir / "five.jsonl", small_requests(5))
        with SimulatorProcess(**UNLIMITED) as sim:
            runs = alternate(startup, workload, sim, args.repeat, args.budget)
        yield Comparison("startup", runs, differences=("launch to first request ms",))
    elif name == "memory":
        for lines in args.lines:
            workload = write_memory_workload(workdir / f"m{lines}.jsonl", lines)
            with SimulatorProcess(**UNLIMITED, output_tokens=(1, 2)) as sim:
                scenario = functools.partial(memory, lines=lines)
                runs = alternate(scenario, workload, sim, args.repeat, args.budget)
            workload.unlink()
            yield Comparison(f"memory: {lines:,} lines", runs)
    elif name == "instructions":
        if shutil.which("valgrind") is None:
            raise SystemExit("the instructions scenario needs valgrind (cachegrind)")
        workloads = {
            count: write_workload(workdir / f"tiny{count}.jsonl", small_requests(count))
            for count in COUNTED_REQUESTS
        }
        with SimulatorProcess(**UNLIMITED, output_tokens=(1, 4)) as sim:
            scenario = functools.partial(instructions, workloads=workloads)
            runs = alternate(scenario, workloads[4_000], sim, args.repeat, args.budget)
        yield Comparison("instructions: user space, cachegrind", runs)
    else:
        raise SystemExit(
            f"unknown scenario {name!r}: choose overhead, startup, memory or instructions"
        )


if __name__ == "__main__":
    main()
