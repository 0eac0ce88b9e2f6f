"""A run is legible and safe: pipes, progress, summaries, estimate, secrets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, request_line, run_against, run_cli, write_jsonl

from apiproc.simulator import Simulator

KEY = "sk-ant-api03-SECRET-never-to-be-seen"


def run(simulator: Simulator, source: Path, output: Path | str, *extra: str):
    return run_against(simulator, source, output, *extra, key=KEY)


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is part of the machine image")
def test_stdout_output_piped_into_jq_carries_only_result_lines(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(8)] + ["{bad"])
    command = (
        f"{sys.executable} -m apiproc run {source} -o - --request-url {simulator.messages_url} "
        f"--api-key {KEY} --logging-level DEBUG --progress-every 0.05 | jq -c ."
    )
    done = subprocess.run(
        command, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 9
    assert all("custom_id" in record and "result" in record for record in records)


@pytest.mark.simulator(rate_500=0.3, seed=5)
def test_the_api_key_never_appears_in_logs_outputs_or_summaries(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [request_line(n) for n in range(10)] + [request_line(99, model="claude-nope")],
    )
    output = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"
    done = run(
        simulator,
        source,
        output,
        "--logging-level",
        "DEBUG",
        "--retry-base-delay",
        "0.01",
        "--summary-json",
        str(summary),
        "--max-attempts",
        "8",
    )
    assert done.returncode == 1
    assert simulator.seen[0].headers["x-api-key"] == KEY  # it was sent, where it belongs
    for text in (
        done.stdout,
        done.stderr,
        output.read_text(),
        summary.read_text(),
        Path(str(output) + ".apiproc.json").read_text(),
    ):
        assert KEY not in text


def test_the_key_is_not_sent_over_plain_http_to_another_host(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1)])
    refused = run_cli(
        "run", str(source), "--request-url", "http://example.com/v1/messages", "--api-key", KEY
    )
    assert refused.returncode == 2
    assert "--allow-insecure-http" in refused.stderr
    assert KEY not in refused.stderr


def test_summary_json_holds_the_final_figures(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(4)] + ["[]"])
    summary = tmp_path / "summary.json"
    done = run(simulator, source, tmp_path / "out.jsonl", "--summary-json", str(summary))
    assert done.returncode == 1
    figures = json.loads(summary.read_text())
    assert figures["succeeded"] == 4
    assert figures["errored_by_type"] == {"invalid_request_error": 1}
    assert figures["tokens"]["output"] > 0
    assert figures["cost_usd"] > 0


@pytest.mark.simulator(latency=0.2)
def test_without_a_terminal_progress_is_a_plain_line_every_interval(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(40)])
    done = run(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--progress-every",
        "0.2",
        "--max-concurrency",
        "5",
    )
    assert done.returncode == 0
    lines = [line for line in done.stderr.splitlines() if " done (" in line]
    assert len(lines) >= 3
    assert "/40 done" in lines[-1]
    assert "\x1b[" not in done.stderr  # no animation codes for cron logs
    assert "per min:" in lines[-1] and "ETA" in lines[-1] and "$" in lines[-1]


@pytest.mark.simulator(latency=0.2, rate_529=0.5, seed=1)
def test_quiet_keeps_only_warnings_and_the_summary(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(10)])
    done = run(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--quiet",
        "--progress-every",
        "0.1",
        "--logging-level",
        "DEBUG",
        "--retry-base-delay",
        "0.01",
        "--max-attempts",
        "20",
    )
    assert done.returncode == 0
    assert " done (" not in done.stderr
    assert "DEBUG" not in done.stderr
    assert "Succeeded: 10" in done.stderr


def test_estimate_validates_and_measures_without_calling_any_api(tmp_path: Path) -> None:
    rows = [request_line(n, max_tokens=100) for n in range(50)] + ["nope", {"model": "x"}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_cli("estimate", str(source), "--max-requests-per-minute", "10")
    assert done.returncode == 1
    assert "valid requests 50; bad lines 2" in done.stdout
    assert "bad line 51: not valid JSON" in done.stdout
    assert "bad line 52: max_tokens: Field required" in done.stdout
    assert "5,000" in done.stdout  # the output ceiling: 50 x max_tokens 100
    assert "Time at these limits: 4m00s" in done.stdout  # (50 - 10) / (10 per minute)
    assert "Cost online: $" in done.stdout


def test_estimate_split_across_processes_agrees_with_one_process(tmp_path: Path) -> None:
    from apiproc.preflight import preflight
    from apiproc.providers.anthropic_models import model_facts

    # 500 ids come back near the end: duplicates of lines in another worker's part.
    rows = [request_line(n, custom_id=f"id-{n % 30_000}") for n in range(30_500)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    one = preflight(str(source), model_facts, workers=1)
    two = preflight(str(source), model_facts, workers=2)
    assert one.requests == two.requests == 30_000
    assert one.bad_lines == two.bad_lines == 500
    assert [bad.line_no for bad in two.bad][:3] == [30_001, 30_002, 30_003]
    assert one.output_ceiling == 30_000 * 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-attempts", "0"], "--max-attempts must be at least 1"),
        (["--timeout", "-1"], "--timeout must be a positive number"),
        (["--max-output-tokens-per-minute", "-5"], "must be a positive number"),
        (["--request-url", "ftp://x/y"], "must be an http(s) URL"),
    ],
)
def test_bad_options_get_one_sentence_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1)])
    done = run_cli("run", str(source), "--simulate", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_an_output_path_that_cannot_be_created_is_one_sentence(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1)])
    done = run_cli("run", str(source), "--simulate", "-o", str(source / "out.jsonl"))
    assert done.returncode == 2
    assert "Error:" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_resume_command_masks_the_key_option_whatever_the_key() -> None:
    from apiproc.redact import redact, redact_arguments

    assert redact_arguments(["run", "in.jsonl", "--api-key", "k", "--api_key=kk", "-o", "k"]) == [
        "run",
        "in.jsonl",
        "--api-key",
        "[redacted]",
        "--api_key=[redacted]",
        "-o",
        "k",
    ]
    assert redact("ask for k", "k") == "ask for k"
    assert redact("key sk-ant-123456789 used", "sk-ant-123456789") == "key [redacted] used"
