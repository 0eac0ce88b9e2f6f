"""Rate limits per model class, end to end: the CLI against the simulator over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import read_jsonl, request_line, run_against, write_jsonl

from apiproc.simulator import Simulator

KEY = "sk-ant-test-key-do-not-log"


def messages_seen(simulator: Simulator) -> list:
    return sorted(
        (seen for seen in simulator.seen if seen.path == "/v1/messages"), key=lambda s: s.time
    )


def sonnet_then_haiku(tmp_path: Path, sonnets: int, haikus: int) -> Path:
    """An input of `sonnets` Sonnet lines, then `haikus` Haiku lines, numbered on."""
    sonnet = [request_line(n, model="claude-sonnet-4-6") for n in range(sonnets)]
    haiku = [request_line(n, model="claude-haiku-4-5") for n in range(sonnets, sonnets + haikus)]
    return write_jsonl(tmp_path / "in.jsonl", sonnet + haiku)


def test_a_class_with_an_empty_bucket_does_not_hold_up_another_class(
    simulator: Simulator, tmp_path: Path
) -> None:
    # Sonnet may send a minute's 12 requests (ramped), then one every 5 s; the Haiku lines
    # come after all of them.
    source = sonnet_then_haiku(tmp_path, 13, 20)
    limits = tmp_path / "limits.toml"
    limits.write_text(
        "[sonnet-4]\nrequests_per_minute = 12\n\n"
        '["claude-haiku-4-5"]  # a model id names its class\nrequests_per_minute = 6_000\n'
    )
    done = run_against(
        simulator, source, tmp_path / "out.jsonl", "--limits-file", str(limits), key=KEY
    )
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 33
    models = [seen.body["model"] for seen in messages_seen(simulator)]
    assert models[-1] == "claude-sonnet-4-6"  # the last, after all twenty Haiku requests
    times = [seen.time for seen in messages_seen(simulator)]
    sonnet_times = [t for t, model in zip(times, models, strict=True) if "sonnet" in model]
    assert sonnet_times[12] - sonnet_times[11] >= 4.0  # the file's Sonnet limit held it


def test_classes_take_turns_for_the_slots_whatever_the_files_order(
    simulator: Simulator, tmp_path: Path
) -> None:
    # One slot, and every Sonnet line before the Haiku ones: once both classes have jobs
    # waiting, the slot goes to each in turn, not to the first class until it is done.
    source = sonnet_then_haiku(tmp_path, 8, 8)
    done = run_against(simulator, source, tmp_path / "out.jsonl", "--max-concurrency", "1", key=KEY)
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 16
    models = [seen.body["model"] for seen in messages_seen(simulator)]
    assert models[0] == "claude-sonnet-4-6"
    haiku_at = [n for n, model in enumerate(models) if "haiku" in model]
    assert haiku_at[0] <= 2  # Haiku's turn came right after Sonnet's first ones
    assert models[-1] == "claude-haiku-4-5"  # the turns went on to Sonnet's last line


def test_a_limits_file_limit_above_the_apis_is_reported_with_both_values(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(3)])
    limits = tmp_path / "limits.json"
    limits.write_text('{"haiku-4-5": {"max-requests-per-minute": 1000000}}')
    done = run_against(
        simulator, source, tmp_path / "out.jsonl", "--limits-file", str(limits), key=KEY
    )
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "above the API's" in line]
    assert "1,000,000" in warning and "4,000" in warning and "haiku-4-5" in warning


def test_a_limits_file_with_an_unknown_key_is_refused_before_anything_is_sent(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1)])
    limits = tmp_path / "limits.toml"
    limits.write_text("[haiku-4-5]\nrequests_per_hour = 10\n")
    done = run_against(
        simulator, source, tmp_path / "out.jsonl", "--limits-file", str(limits), key=KEY
    )
    assert done.returncode == 2
    assert "requests_per_hour" in done.stderr and "Traceback" not in done.stderr
    assert messages_seen(simulator) == []


def test_prompts_are_counted_only_once_an_input_token_limit_comes_within_reach(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(20)])
    figures = {}
    for name, input_limit in (("far", "1e9"), ("near", "2000")):
        summary = tmp_path / f"{name}.json"
        done = run_against(
            simulator,
            source,
            tmp_path / f"{name}.jsonl",
            "--max-input-tokens-per-minute",
            input_limit,
            "--no-ramp",
            "--summary-json",
            str(summary),
            key=KEY,
        )
        assert done.returncode == 0, done.stderr
        assert len(read_jsonl(tmp_path / f"{name}.jsonl")) == 20
        figures[name] = json.loads(summary.read_text())
    # Far from the limit, byte bounds are enough and the tokenizer is never built.
    assert figures["far"]["prompts_counted"] is False
    assert figures["far"]["estimates"] == {}
    # Twenty byte bounds would draw 2,000 below three quarters: from then on, counted.
    assert figures["near"]["prompts_counted"] is True
    [learned] = figures["near"]["estimates"].values()
    assert learned["answers"] > 0
