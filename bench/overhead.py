"""The client's own cost: CPU per request, start-up time, peak memory as inputs grow.

    python bench/overhead.py                   # overhead, start-up, memory at 200k lines
    python bench/overhead.py --repeat 3        # medians of three runs
    python bench/overhead.py memory --lines 200000 1000000

overhead: 20,000 tiny requests, zero latency, limits far above what is reached: client CPU
  milliseconds per request (user + system of the apiproc process, start-up included) and
  requests per second. The simulator runs in its own process on the same two cores, so
  it, not the client, usually bounds requests per second.
start-up: from launching `apiproc run` to the simulator receiving the first request.
memory: peak RSS of the client for inputs of growing length; it should stay flat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ROOT,
    SimulatorProcess,
    median,
    run_client,
    small_requests,
    table,
    write_workload,
)

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


def overhead(workdir: Path, count: int = 20_000) -> dict:
    workload = write_workload(workdir / "tiny.jsonl", small_requests(count))
    with SimulatorProcess(**UNLIMITED, output_tokens=(1, 4)) as sim:
        run = run_client(workload, sim.url, *CLIENT_UNLIMITED, "--max-concurrency", "64")
        stats = sim.stats()
    assert stats["succeeded"] == count, stats
    return {
        "exit": run.returncode,
        "requests": count,
        "wall s": f"{run.wall_seconds:.1f}",
        "requests/s": f"{count / run.wall_seconds:,.0f}",
        "client cpu s": f"{run.cpu_seconds:.2f}",
        "cpu ms/request": f"{run.cpu_seconds * 1000 / count:.3f}",
        "peak rss MB": f"{run.max_rss_mb:.0f}",
    }


def startup(workdir: Path) -> dict:
    workload = write_workload(workdir / "one.jsonl", small_requests(5))
    with SimulatorProcess(**UNLIMITED) as sim:
        output = workdir / "startup.jsonl"
        launched = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "apiproc", "run", str(workload), "-o", str(output),
             "--request-url", sim.url, "--api-key", "sk-bench", "--overwrite"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        first = sim.stats()["first_request_at"]
    return {"exit": done.returncode, "launch to first request s": f"{first - launched:.3f}"}


def memory(workdir: Path, lines: int) -> dict:
    path = workdir / f"m{lines}.jsonl"
    with open(path, "w") as handle:
        for n in range(lines):
            handle.write(
                '{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user",'
                f'"content":"Reply with one word about {n}."}}],"metadata":{{"row":{n}}}}}\n'
            )
    with SimulatorProcess(**UNLIMITED, output_tokens=(1, 2)) as sim:
        run = run_client(
            path,
            sim.url,
            *CLIENT_UNLIMITED,
            "--max-concurrency",
            "64",
            output=workdir / f"m{lines}.out.jsonl",
        )
        stats = sim.stats()
    os.remove(path)
    return {
        "exit": run.returncode,
        "lines": f"{lines:,}",
        "succeeded at server": f"{stats['succeeded']:,}",
        "wall s": f"{run.wall_seconds:.0f}",
        "peak rss MB": f"{run.max_rss_mb:.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["overhead", "startup", "memory"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--lines", type=int, nargs="*", default=[200_000])
    args = parser.parse_args()
    for name in args.scenarios:
        runs: list[dict] = []
        with tempfile.TemporaryDirectory() as directory:
            workdir = Path(directory)
            if name == "memory":
                runs = [memory(workdir, lines) for lines in args.lines]
            else:
                scenario = overhead if name == "overhead" else startup
                runs = [scenario(workdir) for _ in range(args.repeat)]
        keys = list(runs[0])
        rows = [["run", *keys]] + [
            [str(i + 1), *(str(r[k]) for k in keys)] for i, r in enumerate(runs)
        ]
        if len(runs) > 1 and name != "memory":
            rows.append(["median", *(_median_cell(runs, k) for k in keys)])
        print(f"\n{name}\n{table(rows)}", flush=True)


def _median_cell(runs: list[dict], key: str) -> str:
    try:
        values = [float(str(r[key]).replace(",", "")) for r in runs]
    except ValueError:
        return ""
    return f"{median(values):,.3f}"


if __name__ == "__main__":
    main()
