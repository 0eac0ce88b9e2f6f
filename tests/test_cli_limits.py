"""Rate limits per model class, end to end: the CLI against the simulator over HTTP."""

from __future__ import annotations

from pathlib import Path

from conftest import request_line, run_against, write_jsonl

from apiproc.simulator import Simulator

KEY = "sk-ant-test-key-do-not-log"


def messages_seen(simulator: Simulator) -> list:
    return sorted(
        (seen for seen in simulator.seen if seen.path == "/v1/messages"), key=lambda s: s.time
    )


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
