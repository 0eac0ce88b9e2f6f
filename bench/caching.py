"""Prompt caching figures: warm-up against a naive burst, cache-aware limits, short prefixes.

    python bench/caching.py                 # every scenario, once
    python bench/caching.py warmup limits   # some scenarios only

Each scenario starts the simulator in its own process and runs `apiproc run` against it
twice, with and without the feature, and prints the simulator's own counts: responses
that wrote or read the cache, hit rate (read tokens over cacheable tokens), what the
tokens cost at list price, wall time and throughput.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SimulatorProcess, run_client, table, write_workload

from apiproc.providers.anthropic_models import price_for
from apiproc.providers.base import Usage

MODEL = "claude-sonnet-4-6"  # caches prefixes of 1,024 tokens and more
RPM = 4_000


def shared_prefix_requests(count: int, prefix_tokens: int) -> list[dict[str, Any]]:
    """`count` questions behind one system prompt of `prefix_tokens` simulator tokens."""
    system = " ".join(["doc"] * prefix_tokens)
    marked = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    return [
        {
            "model": MODEL,
            "max_tokens": 64,
            "system": marked,
            "messages": [{"role": "user", "content": f"What does line {n} say?"}],
        }
        for n in range(count)
    ]


def figures(run: Any, stats: dict[str, Any]) -> dict[str, Any]:
    written = stats["cache_creation_input_tokens"]
    read = stats["cache_read_input_tokens"]
    usage = Usage(
        input_tokens=stats["input_tokens"],
        output_tokens=stats["output_tokens"],
        cache_creation_input_tokens=written,
        cache_read_input_tokens=read,
    )
    price = price_for(MODEL)
    assert price is not None
    wall = max(run.wall_seconds, 1e-9)
    return {
        "exit": run.returncode,
        "cache writes": stats["cache_writes"],
        "cache reads": stats["cache_reads"],
        "hit rate": f"{read / (read + written):.1%}" if read + written else "-",
        "cost $": f"{price.cost(usage):.4f}",
        "uncached $": f"{price.uncached_cost(usage):.4f}",
        "wall s": f"{wall:.1f}",
        "req/min": f"{stats['succeeded'] * 60 / wall:,.0f}",
        "429s": stats["rate_limited"],
    }


def warmup(workdir: Path) -> list[dict[str, Any]]:
    """300 requests behind a 3,000-token cached system prompt, 50 in flight, 0.5 s latency."""
    workload = write_workload(workdir / "shared.jsonl", shared_prefix_requests(300, 3_000))
    rows = []
    for variant, extra in (("warm-up", ()), ("no warm-up", ("--no-cache-warmup",))):
        with SimulatorProcess(requests_per_minute=RPM, latency=0.5) as sim:
            # Limits given, so that the limiter does not probe with one request first
            # (which would warm the cache by accident): this is the naive burst.
            run = run_client(
                workload,
                sim.url,
                "--max-concurrency",
                "50",
                "--max-requests-per-minute",
                str(RPM),
                *extra,
            )
            rows.append({"variant": variant, **figures(run, sim.stats())})
    return rows


def limits(workdir: Path) -> list[dict[str, Any]]:
    """Input-token-bound: 600 x (3,000 cached + ~10 new tokens) under 100,000 ITPM."""
    itpm = 100_000
    workload = write_workload(workdir / "bound.jsonl", shared_prefix_requests(600, 3_000))
    rows = []
    for variant, extra in (
        ("cache-aware", ()),
        ("prefix counted", ("--no-cache-aware-limits",)),
    ):
        with SimulatorProcess(
            requests_per_minute=RPM, input_tokens_per_minute=itpm, latency=0.5
        ) as sim:
            run = run_client(
                workload,
                sim.url,
                "--max-requests-per-minute",
                str(RPM),
                "--max-input-tokens-per-minute",
                str(itpm),
                *extra,
            )
            rows.append({"variant": variant, **figures(run, sim.stats())})
    return rows


def short(workdir: Path) -> list[dict[str, Any]]:
    """50 requests whose cached prefix (500 tokens) is below the model's 1,024 minimum."""
    workload = write_workload(workdir / "short.jsonl", shared_prefix_requests(50, 500))
    with SimulatorProcess(requests_per_minute=RPM) as sim:
        run = run_client(workload, sim.url, "--max-requests-per-minute", str(RPM))
        stats = sim.stats()
    warnings = [line for line in run.stderr.splitlines() if "WARNING" in line]
    print("\n".join(warnings))
    return [{"variant": "below minimum", "warnings": len(warnings), **figures(run, stats)}]


SCENARIOS = {
    "warmup": ("300 requests sharing a 3,000-token cached system prompt", warmup),
    "limits": ("input-token-bound job with a warm shared prefix", limits),
    "short": ("a cached prefix below the model's minimum", short),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    for name in args.scenarios:
        title, scenario = SCENARIOS[name]
        with tempfile.TemporaryDirectory() as workdir:
            runs = scenario(Path(workdir))
        keys = list(runs[0])
        rows = [keys] + [[str(run[key]) for key in keys] for run in runs]
        print(f"\n{title}\n{table(rows)}", flush=True)
        print(json.dumps({"scenario": name, "runs": runs}), file=sys.stderr)


if __name__ == "__main__":
    main()
