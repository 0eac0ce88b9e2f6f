"""The core processor's figures: utilisation of request- and token-bound limits, faults.

    python bench/core.py                # every scenario, once
    python bench/core.py --repeat 3     # medians of three runs
    python bench/core.py request window # some scenarios only
    python bench/core.py --repeat 3 stream-faults stream-stalls
    python bench/core.py --api openai request token faults  # against Chat Completions

Each scenario starts the simulator in its own process, runs `apiproc run` against it and
prints wall time against the theoretical time computed from the simulator's own counts:
max over the limits of (total consumption - initial bucket) / rate.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    LARGE_MODEL,
    SMALL_MODEL,
    SimulatorProcess,
    median,
    run_client,
    small_requests,
    table,
    theoretical_seconds,
    write_workload,
)

from apiproc.limiter.limiter import FLAGS
from apiproc.tokens import TokenEstimator

WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "consideration",
    "extraordinarily", "of", "a", "the", "notwithstanding",
]  # fmt: skip


def long_prompts(
    count: int, words: int, seed: int = 1, model: str = "claude-sonnet-4-6"
) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "model": model,
            "max_tokens": 600,
            "messages": [
                {
                    "role": "user",
                    "content": " ".join(rng.choice(WORDS) for _ in range(words))
                    + f" Summarise item {n}.",
                }
            ],
        }
        for n in range(count)
    ]


# The simulator's default token limits, as the headers report them.
SIM_INPUT_TPM = 2_000_000
SIM_OUTPUT_TPM = 400_000


def client_options(mode: str, binding: dict[str, float], all_four: dict[str, float]) -> list[str]:
    """The limits the client is told: "given", the ones that bind; "four", all four, the
    combined one twenty times too high; "none", nothing, so all are learned from headers."""
    chosen = {"given": binding, "four": all_four, "none": {}}[mode]
    return [part for name, value in chosen.items() for part in (FLAGS[name], f"{value:.0f}")]


def request_bound(workdir: Path, window: float | None, api: str, limits: str = "given") -> dict:
    rpm = 3_000
    workload = write_workload(workdir / "small.jsonl", small_requests(5_000, SMALL_MODEL[api]))
    config = {"requests_per_minute": rpm, "latency": 0.2}
    if window:
        config["window_seconds"] = window
    four = {
        "requests": rpm,
        "input_tokens": SIM_INPUT_TPM,
        "output_tokens": SIM_OUTPUT_TPM,
        "tokens": 20 * (SIM_INPUT_TPM + SIM_OUTPUT_TPM),
    }
    with SimulatorProcess(**config) as sim:
        options = client_options(limits, {"requests": rpm}, four)
        run = run_client(workload, sim.url_for(api), *options, api=api)
        stats = sim.stats()
    return summarise(run, stats, request_bound_seconds(stats, rpm, window))


def token_bound(workdir: Path, api: str, limits: str = "given") -> dict:
    rpm = 4_000
    separate = {"input_tokens": 450_000, "output_tokens": 90_000}
    # The OpenAI API has one budget for both: the sum of the two.
    binding = {"tokens": sum(separate.values())} if api == "openai" else separate
    rows = long_prompts(600, words=620, model=LARGE_MODEL[api])
    workload = write_workload(workdir / "long.jsonl", rows)
    four = {
        "requests": rpm,
        **separate,
        "tokens": 20 * sum(separate.values()),
    }
    with SimulatorProcess(
        requests_per_minute=rpm,
        input_tokens_per_minute=separate["input_tokens"],
        output_tokens_per_minute=separate["output_tokens"],
        tokens_per_minute=sum(separate.values()),
        latency=0.2,
        output_tokens=(150, 450),
    ) as sim:
        options = client_options(limits, binding, four)
        run = run_client(workload, sim.url_for(api), *options, api=api)
        stats = sim.stats()
    result = summarise(run, stats, theoretical_seconds(stats, binding))
    span = max(run.wall_seconds, 1e-9)
    used = {
        "input_tokens": stats["input_tokens"] + stats["cache_creation_input_tokens"],
        "output_tokens": stats["output_tokens"],
    }
    used["tokens"] = used["input_tokens"] + used["output_tokens"]
    for name, per_minute in binding.items():
        share = (used[name] - per_minute) / (per_minute / 60 * span)
        result[f"{name.replace('_', ' ')} limit used"] = f"{share:.1%}"
    learned = next((line for line in run.stderr.splitlines() if line.startswith("Estimates:")), "")
    result["learned ratio"] = learned.split(" x ")[1].split()[0] if " x " in learned else "?"
    raw = sum(TokenEstimator().count(row) for row in rows)
    result["true ratio"] = f"{stats['input_tokens'] / raw:.3f}"
    return result


def mixed_classes(workdir: Path) -> dict:
    """Haiku and Sonnet lines alternating; the Haiku class has 4x Sonnet's request limit.
    No limits given: each class learns its own from its own answers' headers."""
    count, window = 1_200, 5.0
    rpm = {"sonnet-4": 1_200, "haiku-4-5": 4_800}
    haiku = small_requests(count, "claude-haiku-4-5")
    sonnet = small_requests(count, "claude-sonnet-4-6")
    rows = [row for pair in zip(haiku, sonnet, strict=True) for row in pair]
    workload = write_workload(workdir / "mixed.jsonl", rows)
    with SimulatorProcess(
        requests_per_minute=rpm["sonnet-4"],
        class_limits={"haiku-4-5": {"requests_per_minute": rpm["haiku-4-5"]}},
        window_seconds=window,
        latency=0.2,
    ) as sim:
        run = run_client(workload, sim.url)
        stats = sim.stats()
    by_class = stats["by_class"]
    bounds = {name: request_bound_seconds(by_class[name], rpm[name], window) for name in rpm}
    finished = {
        name: by_class[name]["last_response_at"] - stats["first_request_at"] for name in rpm
    }
    result = summarise(run, stats, max(bounds.values()))
    result["haiku s"] = f"{finished['haiku-4-5']:.1f}"
    result["haiku bound s"] = f"{bounds['haiku-4-5']:.1f}"
    result["sonnet s"] = f"{finished['sonnet-4']:.1f}"
    result["haiku / sonnet"] = f"{finished['haiku-4-5'] / finished['sonnet-4']:.3f}"
    return result


def request_bound_seconds(counts: dict, rpm: float, window: float | None) -> float:
    """Least time for a class's successes: the per-minute bucket and the short window."""
    rate = rpm / 60
    capacities = [rpm] + ([rate * window] if window else [])
    return max(max(0.0, counts["succeeded"] - capacity) / rate for capacity in capacities)


# A streamed run's idle timeout: a stall is cut after this many seconds of silence. On a
# shared 2-core machine a busy simulator process can be descheduled for a second or two, so
# a shorter one mistakes load for stalls.
STREAM_IDLE_TIMEOUT = 5.0


def faults(
    workdir: Path,
    run: int,
    api: str = "anthropic",
    stall_rate: float = 0.0,
    stall_seconds: float = 30.0,
    stream: bool = False,
) -> dict:
    """5,000 small requests through injected faults; streamed, every line asks for a stream
    and a stall strikes partway through an answer, after the 200 and some events."""
    count = 5_000
    rows = [
        {**row, "stream": True} if stream else row
        for row in small_requests(count, SMALL_MODEL[api])
    ]
    workload = write_workload(workdir / "faults.jsonl", rows)
    options = ["--idle-timeout", str(STREAM_IDLE_TIMEOUT)] if stream else []
    with SimulatorProcess(
        rate_529=0.03,
        rate_500=0.02,
        rate_drop=0.01,
        rate_stall=stall_rate,
        stall_seconds=stall_seconds,
        seed=11 + run,  # each repeat an independent sample, not a replay of one sequence
    ) as sim:
        run = run_client(workload, sim.url_for(api), "--max-attempts", "5", *options, api=api)
        stats = sim.stats()
    records = run.records()
    ids = [r["custom_id"] for r in records]
    result = {
        "exit": run.returncode,
        "succeeded": f"{sum(r['result']['type'] == 'succeeded' for r in records)}/{count}",
        "duplicate lines": len(ids) - len(set(ids)),
        "max attempts": max(r["attempts"] for r in records),
        "faults injected": stats["faults_injected"],
        "streamed": stats["streamed"],
        "wall s": f"{run.wall_seconds:.1f}",
    }
    if stall_rate and not stream:  # a streamed stall is cut by the idle timeout instead
        result["beyond the longest stall s"] = f"{run.wall_seconds - stall_seconds:.1f}"
    return result


def summarise(run, stats: dict, theory: float) -> dict:
    requests = max(1, stats["requests"])
    sending = (stats["last_response_at"] or 0.0) - (stats["first_request_at"] or 0.0)
    return {
        "exit": run.returncode,
        "wall s": f"{run.wall_seconds:.1f}",
        "theory s": f"{theory:.1f}",
        "ratio": f"{run.wall_seconds / theory:.3f}" if theory else "-",
        "of bound": f"{theory / run.wall_seconds:.3f}" if theory else "-",
        # The same from the first request the server saw to its last answer: the pacing
        # alone, without the client's start-up (slow on a loaded machine).
        "sending s": f"{sending:.1f}",
        "of bound, sending": f"{theory / sending:.3f}" if theory and sending else "-",
        "429s": stats["rate_limited"],
        "429 %": f"{stats['rate_limited'] / requests:.2%}",
        "client cpu s": f"{run.cpu_seconds:.1f}",
    }


SCENARIOS = {
    "request": (
        "request-bound 5,000 x 3,000 RPM, 200 ms",
        lambda d, _, api: request_bound(d, None, api),
    ),
    "window": (
        "same, limits enforced over 5 s windows",
        lambda d, _, api: request_bound(d, 5.0, api),
    ),
    "request-four": (
        "request-bound, all four limits given, the combined one 20x too high",
        lambda d, _, api: request_bound(d, None, api, "four"),
    ),
    "request-none": (
        "request-bound, no limits given",
        lambda d, _, api: request_bound(d, None, api, "none"),
    ),
    "token": ("token-bound 600 x ~1,500-token prompts", lambda d, _, api: token_bound(d, api)),
    "token-four": (
        "token-bound, all four limits given, the combined one 20x too high",
        lambda d, _, api: token_bound(d, api, "four"),
    ),
    "token-none": ("token-bound, no limits given", lambda d, _, api: token_bound(d, api, "none")),
    "mixed": (
        "half Haiku, half Sonnet (alternating); Haiku 4,800 RPM, Sonnet 1,200; 5 s windows",
        lambda d, _, api: mixed_classes(d),
    ),
    "faults": ("faults 3% 529 (503 for openai), 2% 500, 1% drops", faults),
    "stalls": (
        "faults 3% 529, 2% 500, 1% drops, 1% stalls (30 s, then reset)",
        lambda d, run, api: faults(d, run, api, stall_rate=0.01),
    ),
    "stream-faults": (
        "streamed: faults 3% 529, 2% 500, 1% drops",
        lambda d, run, api: faults(d, run, api, stream=True),
    ),
    "stream-stalls": (
        "streamed: faults 3% 529, 2% 500, 1% drops, 1% stalls midway (30 s, then reset), "
        "idle timeout 5 s",
        lambda d, run, api: faults(d, run, api, stall_rate=0.01, stream=True),
    ),
}


MEDIANS = ("ratio", "of bound", "of bound, sending", "wall s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--api", choices=("anthropic", "openai"), default="anthropic")
    args = parser.parse_args()
    for name in args.scenarios:
        title, scenario = SCENARIOS[name]
        runs = []
        for run in range(args.repeat):
            with tempfile.TemporaryDirectory() as workdir:
                runs.append(scenario(Path(workdir), run, args.api))
        keys = list(runs[0])
        rows = [["run", *keys]] + [
            [str(i + 1), *(str(r[k]) for k in keys)] for i, r in enumerate(runs)
        ]
        medians = [k for k in MEDIANS if k in keys]
        if medians and len(runs) > 1:
            rows.append(
                [
                    "median",
                    *(
                        f"{median([float(r[k]) for r in runs]):.3f}" if k in medians else ""
                        for k in keys
                    ),
                ]
            )
        print(f"\n{title} (--api {args.api})\n{table(rows)}", flush=True)
        print(json.dumps({"scenario": name, "api": args.api, "runs": runs}), file=sys.stderr)


if __name__ == "__main__":
    main()
