"""Batch mode's figures: resubmission and memory, SIGKILL at random moments, the price.

    python bench/batches.py                      # every scenario
    python bench/batches.py resubmit --sizes 25000 250000
    python bench/batches.py kills --kills 10 --seed 7
    python bench/batches.py cost
    python bench/batches.py openai               # the OpenAI Batch API, 10,000 lines

resubmit: N requests, 2 % of results errored (transient) and 1 % expired, batches of
  5,000; the run must end with exactly one succeeded line per id. Peak RSS of the client
  (wait4) for each N: it should stay flat as N grows.
kills: one job SIGKILLed at random moments (while it submits and polls), then the same
  command run to the end. From the simulator's record of every batch created: no request
  was ever in two unfinished batches, and every id has one succeeded line.
cost: the same input online and in batch mode; the batch summary's cost against the
  online run's, and against its own online price of the same usage.
openai: `--api openai --mode batch` on OpenAI-style batch lines (Files upload, batches,
  output and error files), 2 % of results failing for a transient reason (a 500); the run
  must end with exactly one succeeded line per id, no id ever in two live batches.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, SimulatorProcess, run_client, table, write_workload

FAST = ("--poll-interval", "0.5", "--poll-max-interval", "2", "--batch-api-rpm", "1000")


def small_rows(count: int) -> Iterator[dict[str, Any]]:
    """The requests one at a time: a list of them would swell this process, and a child's
    peak RSS as wait4 reports it starts from its parent's at fork."""
    for n in range(count):
        yield {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"Say something about the number {n}."}],
        }


def openai_rows(count: int) -> Iterator[dict[str, Any]]:
    """OpenAI batch lines, one model for the whole file as the Batch API requires."""
    for n in range(count):
        yield {
            "custom_id": f"request-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Say something about the number {n}."}],
            },
        }


def batch_record(sim: SimulatorProcess) -> dict[str, Any]:
    with urllib.request.urlopen(sim.base + "/_sim/batches", timeout=60) as response:
        return json.load(response)


def twice_live(record: dict[str, Any]) -> int:
    """Ids that were in two batches at once (a batch is live from creation until it ends)."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for batch in record["batches"]:
        end = batch["ended_at"] if batch["ended_at"] is not None else math.inf
        for custom_id in batch["custom_ids"]:
            spans[custom_id].append((batch["created_at"], end))
    twice = 0
    for held in spans.values():
        held.sort()
        twice += any(b[0] < a[1] for a, b in itertools.pairwise(held))
    return twice


def one_succeeded_line_each(output: Path, count: int) -> tuple[bool, Counter]:
    kinds: Counter = Counter()
    ids: Counter = Counter()
    with open(output) as handle:
        for line in handle:
            record = json.loads(line)
            kinds[record["result"]["type"]] += 1
            ids[record["custom_id"]] += 1
    ok = len(ids) == count and set(ids.values()) == {1} and kinds["succeeded"] == count
    return ok, kinds


def resubmit(workdir: Path, count: int) -> dict[str, Any]:
    workload = write_workload(workdir / f"in-{count}.jsonl", small_rows(count))
    with SimulatorProcess(
        batch_processing_seconds=2.0,
        batch_errored_rate=0.02,
        batch_expired_rate=0.01,
        batch_requests_per_minute=1_000,
        output_tokens=(4, 16),  # short answers: the simulator's own time is not measured
        seed=count,
    ) as sim:
        run = run_client(
            workload, sim.url, "--mode", "batch", "--batch-size", "5000", *FAST,
            "--max-attempts", "10",
        )  # fmt: skip
        record = batch_record(sim)
    ok, _ = one_succeeded_line_each(run.output_path, count)
    sizes = [len(batch["custom_ids"]) for batch in record["batches"]]
    return {
        "requests": f"{count:,}",
        "exit": run.returncode,
        "one succeeded line per id": ok,
        "batches": len(sizes),
        "largest batch": max(sizes),
        "sent again": sum(sizes) - count,
        "in two live batches": twice_live(record),
        "errored/expired seen": f"{record['counters']['results'].get('errored', 0)}/"
        f"{record['counters']['results'].get('expired', 0)}",
        "wall s": f"{run.wall_seconds:.1f}",
        "client cpu s": f"{run.cpu_seconds:.1f}",
        "peak RSS MB": f"{run.max_rss_mb:.0f}",
    }


def openai_resubmit(workdir: Path, count: int) -> dict[str, Any]:
    workload = write_workload(workdir / f"openai-{count}.jsonl", openai_rows(count))
    with SimulatorProcess(
        batch_processing_seconds=2.0,
        batch_errored_rate=0.02,
        output_tokens=(4, 16),
        seed=count,
    ) as sim:
        run = run_client(
            workload, sim.url_for("openai"), "--mode", "batch", *FAST, "--max-attempts", "10",
            api="openai",
        )  # fmt: skip
        record = batch_record(sim)
    ids: Counter = Counter()
    succeeded: Counter = Counter()
    with open(run.output_path) as handle:
        for line in handle:
            result = json.loads(line)
            ids[result["custom_id"]] += 1
            succeeded[result["custom_id"]] += result["result"]["type"] == "succeeded"
    wanted = {f"request-{n}" for n in range(count)}
    ok = set(ids) == wanted and set(ids.values()) == {1} and set(succeeded.values()) == {1}
    sizes = [len(batch["custom_ids"]) for batch in record["batches"]]
    return {
        "requests": f"{count:,}",
        "exit": run.returncode,
        "one succeeded line per id": ok,
        "batches": len(sizes),
        "sent again": sum(sizes) - count,
        "in two live batches": twice_live(record),
        "errored seen": record["counters"]["results"].get("errored", 0),
        "wall s": f"{run.wall_seconds:.1f}",
        "client cpu s": f"{run.cpu_seconds:.1f}",
        "peak RSS MB": f"{run.max_rss_mb:.0f}",
    }


def kills(workdir: Path, count: int, times: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    workload = write_workload(workdir / "in.jsonl", small_rows(count))
    output = workdir / "out.jsonl"
    with SimulatorProcess(
        batch_processing_seconds=3.0,
        batch_create_latency=0.6,  # a create takes time (a big upload): a kill may fall in it
        batch_errored_rate=0.02,
        batch_expired_rate=0.01,
        batch_requests_per_minute=1_000,
        output_tokens=(4, 16),
        seed=seed,
    ) as sim:
        command = [
            sys.executable, "-m", "apiproc", "run", str(workload), "-o", str(output),
            "--request-url", sim.url, "--api-key", "sk-bench", "--mode", "batch",
            "--batch-size", "5000", *FAST, "--max-attempts", "10", "--progress-every", "3600",
            "--batch-create-settle", "1", "--batch-api-rpm", "120",
        ]  # fmt: skip
        moments = []
        for _ in range(times):
            process = subprocess.Popen(
                command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            moment = rng.uniform(1.0, 8.0)
            time.sleep(moment)  # a random moment: the point of this benchmark
            finished_first = process.poll() is not None
            if not finished_first:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
            moments.append(f"{moment:.1f}{'*' if finished_first else ''}")
        final = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
        record = batch_record(sim)
    ok, _ = one_succeeded_line_each(output, count)
    state = (output.parent / (output.name + ".apiproc-batches.jsonl")).read_text().splitlines()
    adopted = sum('"adopted":true' in line for line in state)
    unmade = sum('"event":"not_created"' in line for line in state)
    return {
        "requests": f"{count:,}",
        "kills at s (*: had ended)": " ".join(moments),
        "final exit": final.returncode,
        "one succeeded line per id": ok,
        "batches created": len(record["batches"]),
        "in two live batches": twice_live(record),
        "intents adopted after a kill": adopted,
        "intents found never made": unmade,
    }


def cost(workdir: Path, count: int) -> dict[str, Any]:
    workload = write_workload(workdir / "in.jsonl", small_rows(count))
    with SimulatorProcess(batch_processing_seconds=1.0, requests_per_minute=100_000) as sim:
        batch_summary, online_summary = workdir / "batch.json", workdir / "online.json"
        batch = run_client(
            workload, sim.url, "--mode", "batch", *FAST, "--summary-json", str(batch_summary),
            output=workdir / "batch.jsonl",
        )  # fmt: skip
        online = run_client(
            workload, sim.url, "--summary-json", str(online_summary),
            output=workdir / "online.jsonl",
        )  # fmt: skip
    in_batch = json.loads(batch_summary.read_text())
    in_line = json.loads(online_summary.read_text())
    equivalent = in_batch["online_equivalent_usd"]
    return {
        "requests": f"{count:,}",
        "exits": f"{batch.returncode}/{online.returncode}",
        "same usage": in_batch["tokens"] == in_line["tokens"],
        "batch $": f"{in_batch['cost_usd']:.6f}",
        "online run $": f"{in_line['cost_usd']:.6f}",
        "batch / online run": f"{in_batch['cost_usd'] / in_line['cost_usd']:.4f}",
        "batch / its online price": f"{in_batch['cost_usd'] / equivalent:.4f}",
        "saved $": f"{in_batch['saved_usd']:.6f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["resubmit", "kills", "cost"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 250_000])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--kill-requests", type=int, default=25_000)
    parser.add_argument("--cost-requests", type=int, default=2_000)
    parser.add_argument("--openai-requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for name in args.scenarios:
        with tempfile.TemporaryDirectory() as workdir:
            if name == "resubmit":
                runs = [resubmit(Path(workdir), count) for count in args.sizes]
            elif name == "kills":
                runs = [kills(Path(workdir), args.kill_requests, args.kills, args.seed)]
            elif name == "openai":
                runs = [openai_resubmit(Path(workdir), args.openai_requests)]
            else:
                runs = [cost(Path(workdir), args.cost_requests)]
        keys = list(runs[0])
        rows = [keys] + [[str(run[key]) for key in keys] for run in runs]
        print(f"\n{name}\n{table(rows)}", flush=True)
        print(json.dumps({"scenario": name, "runs": runs}), file=sys.stderr)


if __name__ == "__main__":
    main()
