"""End to end: the CLI and the classic shim against the simulator over real HTTP."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import read_jsonl, request_line, run_cli, write_jsonl
from conftest import run_against as run_with_key

from apiproc.simulator import Simulator

KEY = "sk-ant-test-key-do-not-log"


def run_against(simulator: Simulator, source: Path, output: Path | str, *extra: str):
    return run_with_key(simulator, source, output, *extra, key=KEY)


def messages_seen(simulator: Simulator) -> list:
    return [seen for seen in simulator.seen if seen.path == "/v1/messages"]


def test_every_request_gets_one_succeeded_line_in_batch_shape(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [request_line(n, metadata={"row": n}) for n in range(30)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in records) == sorted(f"line-{n}" for n in range(1, 31))
    for record in records:
        assert record["result"]["type"] == "succeeded"
        assert record["result"]["message"]["type"] == "message"
        assert record["metadata"] == {"row": int(record["custom_id"].split("-")[1]) - 1}
        assert record["attempts"] == 1
        assert record["request_id"].startswith("req_")
    assert len(messages_seen(simulator)) == 30
    assert "Succeeded: 30" in done.stderr


def test_pass_through_metadata_is_not_sent_but_user_id_is(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            request_line(1, metadata={"row": 1, "user_id": "user-7"}),
            request_line(2, metadata={"row": 2}),
        ],
    )
    done = run_against(simulator, source, tmp_path / "out.jsonl")
    assert done.returncode == 0, done.stderr
    sent = sorted((s.body or {}).get("metadata") is not None for s in messages_seen(simulator))
    assert sent == [False, True]
    with_user = next(s for s in messages_seen(simulator) if (s.body or {}).get("metadata"))
    assert with_user.body["metadata"] == {"user_id": "user-7"}


def test_batch_format_lines_keep_their_ids(simulator: Simulator, tmp_path: Path) -> None:
    rows = [{"custom_id": f"doc-{n}", "params": request_line(n)} for n in range(5)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl")
    assert done.returncode == 0, done.stderr
    assert {r["custom_id"] for r in read_jsonl(tmp_path / "out.jsonl")} == {
        f"doc-{n}" for n in range(5)
    }


def test_bad_lines_become_errored_records_and_the_run_goes_on(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            request_line(1),
            "{broken",
            {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]},
            "",
            request_line(5),
        ],
    )
    done = run_against(simulator, source, tmp_path / "out.jsonl")
    assert done.returncode == 1
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert set(records) == {"line-1", "line-2", "line-3", "line-5"}
    assert records["line-2"]["result"]["type"] == "errored"
    error = records["line-2"]["result"]["error"]["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("line 2: not valid JSON")
    assert records["line-3"]["result"]["error"]["error"]["message"] == (
        "line 3: max_tokens: Field required"
    )
    assert records["line-3"]["attempts"] == 0
    assert len(messages_seen(simulator)) == 2


def test_permanent_errors_are_recorded_at_once_with_the_api_error(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            request_line(1, model="claude-no-such-model"),
            request_line(2, temperature=3.5),
            request_line(3),
        ],
    )
    done = run_against(simulator, source, tmp_path / "out.jsonl")
    assert done.returncode == 1
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert records["line-1"]["result"]["error"]["error"]["type"] == "not_found_error"
    assert records["line-2"]["result"]["error"]["error"]["type"] == "invalid_request_error"
    assert records["line-1"]["attempts"] == records["line-2"]["attempts"] == 1
    assert records["line-1"]["result"]["error"]["request_id"].startswith("req_")
    assert records["line-3"]["result"]["type"] == "succeeded"
    assert len(messages_seen(simulator)) == 3


@pytest.mark.simulator(rate_529=0.15, rate_500=0.1, rate_drop=0.05, rate_502_html=0.05, seed=3)
def test_transient_faults_are_retried_until_every_request_succeeds(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(40)])
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--max-attempts",
        "10",
        "--retry-base-delay",
        "0.05",
    )
    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 40
    assert len({r["custom_id"] for r in records}) == 40
    assert all(r["result"]["type"] == "succeeded" for r in records)
    assert sum(r["attempts"] for r in records) == len(messages_seen(simulator))
    assert len(messages_seen(simulator)) > 40
    statuses = Counter(s.status for s in messages_seen(simulator))
    assert statuses[200] == 40


@pytest.mark.simulator(rate_529=1.0)
def test_retries_stop_at_max_attempts_with_the_last_error(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1)])
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--max-attempts",
        "3",
        "--retry-base-delay",
        "0.05",
    )
    assert done.returncode == 1
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["attempts"] == 3
    assert record["result"]["error"]["error"]["type"] == "overloaded_error"
    assert len(messages_seen(simulator)) == 3


@pytest.mark.simulator(rate_429=0.6, seed=11)
def test_a_429_storm_longer_than_max_attempts_does_not_turn_requests_into_errors(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(16)])
    done = run_against(simulator, source, tmp_path / "out.jsonl", "--max-attempts", "1")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in records) == sorted(f"line-{n}" for n in range(1, 17))
    assert all(r["result"]["type"] == "succeeded" for r in records)
    limited = Counter(
        s.body["messages"][0]["content"] for s in messages_seen(simulator) if s.status == 429
    )
    assert max(limited.values()) >= 2  # more 429s in a row than --max-attempts allows
    assert max(r["attempts"] for r in records) >= 3


@pytest.mark.simulator(rate_429=1.0)
def test_429s_have_their_own_bound(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1)])
    done = run_against(simulator, source, tmp_path / "out.jsonl", "--max-rate-limit-retries", "2")
    assert done.returncode == 1
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["attempts"] == 3
    assert record["result"]["error"]["error"]["type"] == "rate_limit_error"
    assert len(messages_seen(simulator)) == 3


@pytest.mark.simulator(api_key="sk-ant-the-right-key")
def test_a_rejected_api_key_stops_the_run_quickly(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(50)])
    done = run_against(simulator, source, tmp_path / "out.jsonl")
    assert done.returncode == 3
    assert "authentication_error" in done.stderr
    assert len(messages_seen(simulator)) <= 2
    assert not (tmp_path / "out.jsonl").read_text()
    assert KEY not in done.stderr + done.stdout


@pytest.mark.simulator(spend_limit_after=3)
def test_the_spend_cap_stops_the_run(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(200)])
    done = run_against(simulator, source, tmp_path / "out.jsonl", "--max-requests-per-minute", "60")
    assert done.returncode == 3
    assert "rate_limit_error" in done.stderr
    assert len(messages_seen(simulator)) < 20


@pytest.mark.simulator(user_spend_limit_after=3)
def test_the_user_set_spend_limit_stops_the_run_without_an_error_line_per_request(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(200)])
    done = run_against(simulator, source, tmp_path / "out.jsonl", "--max-requests-per-minute", "60")
    assert done.returncode == 3, done.stderr
    assert "You have reached your specified API usage limits" in done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["result"]["type"] for r in records] == ["succeeded"] * 3
    statuses = Counter(s.status for s in messages_seen(simulator))
    assert statuses[200] == 3 and 0 < statuses[400] < 20
    assert "Resume:" in done.stderr


@pytest.mark.simulator(requests_per_minute=120, window_seconds=1.0)
def test_429s_pause_all_admissions_until_retry_after(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(8)])
    done = run_against(
        simulator, source, tmp_path / "out.jsonl", "--max-requests-per-minute", "6000"
    )
    assert done.returncode == 0, done.stderr
    seen = messages_seen(simulator)
    limited = [s for s in seen if s.status == 429]
    assert limited, "the burst should have met the 1-second window"
    first = min(s.time for s in limited)
    after = [s.time for s in seen if s.time > first + 0.1]
    assert after and min(after) >= first + 0.9  # retry-after is 1 s: nothing sent before
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 8


def test_stdin_to_stdout_carries_only_result_lines(simulator: Simulator) -> None:
    rows = "".join(json.dumps(request_line(n)) + "\n" for n in range(5))
    done = run_cli(
        "run",
        "-",
        "-o",
        "-",
        "--request-url",
        simulator.messages_url,
        "--api-key",
        KEY,
        "--logging-level",
        "DEBUG",
        stdin=rows,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 5 and all(r["result"]["type"] == "succeeded" for r in records)
    assert "Succeeded: 5" in done.stderr


def test_cookbook_output_format_writes_classic_arrays(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1, metadata={"row_id": 1})])
    done = run_against(simulator, source, tmp_path / "out.jsonl", "--output-format", "cookbook")
    assert done.returncode == 0, done.stderr
    ((request, response, metadata),) = read_jsonl(tmp_path / "out.jsonl")
    assert request["model"] == "claude-haiku-4-5"
    assert response["type"] == "message"
    assert metadata == {"row_id": 1}


def test_classic_command_line_runs_unchanged(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "test_requests.jsonl",
        [request_line(n, metadata={"row_id": n}) for n in range(6)],
    )
    done = run_cli(
        "api_request_parallel_processor.py",
        "--requests_filepath",
        str(source),
        "--save_filepath",
        str(tmp_path / "data" / "results.jsonl"),
        "--request_url",
        simulator.messages_url,
        "--max_requests_per_minute",
        "40",
        "--max_tokens_per_minute",
        "16000",
        "--max_attempts",
        "5",
        "--logging_level",
        "INFO",
        "--use_caching",
        "False",
        env={"ANTHROPIC_API_KEY": KEY},
        module=False,
    )
    assert done.returncode == 0, done.stderr
    lines = read_jsonl(tmp_path / "data" / "results.jsonl")
    assert len(lines) == 6
    assert all(len(line) == 3 and line[1]["type"] == "message" for line in lines)
    assert sorted(line[2]["row_id"] for line in lines) == list(range(6))
    assert KEY not in done.stderr


def test_classic_default_output_sits_beside_the_input(simulator: Simulator, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "jobs.jsonl", [request_line(1)])
    done = run_cli(
        "api_request_parallel_processor.py",
        "--requests_filepath",
        str(source),
        "--request_url",
        simulator.messages_url,
        "--api_key",
        KEY,
        "--logging_level",
        "20",
        module=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "jobs_results.jsonl")) == 1


def test_simulate_flag_runs_a_job_without_a_key(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(3)])
    done = run_cli("run", str(source), "--simulate")
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "in_results.jsonl")) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.jsonl", "--simulate"], "does not exist"),
        (
            ["run", "examples/requests.jsonl", "--simulate", "--max-requests-per-minute", "0"],
            "must be a positive number",
        ),
        (
            ["run", "examples/requests.jsonl", "-o", "examples/requests.jsonl", "--simulate"],
            "must not be the requests file",
        ),
        (["run", "examples/requests.jsonl"], "No API key"),
    ],
)
def test_user_errors_get_one_sentence_and_exit_2(args: list[str], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_request_larger_than_the_limit_is_errored_not_hung(
    simulator: Simulator, tmp_path: Path
) -> None:
    big = request_line(1, messages=[{"role": "user", "content": "word " * 3000}])
    source = write_jsonl(tmp_path / "in.jsonl", [big, request_line(2)])
    done = run_against(
        simulator, source, tmp_path / "out.jsonl", "--max-input-tokens-per-minute", "1000"
    )
    assert done.returncode == 1
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert "can never be admitted" in records["line-1"]["result"]["error"]["error"]["message"]
    assert records["line-2"]["result"]["type"] == "succeeded"


@pytest.mark.simulator(output_accounting="max_tokens", output_tokens_per_minute=6_000, latency=0.3)
@pytest.mark.parametrize(("accounting", "meets_429"), [("max_tokens", False), ("generated", True)])
def test_max_tokens_accounting_reserves_max_tokens_where_the_server_charges_it(
    simulator: Simulator, tmp_path: Path, accounting: str, meets_429: bool
) -> None:
    # The server charges max_tokens at the start: six of these fill its bucket. A client
    # reserving only the (learned, small) real output overshoots; one reserving max_tokens
    # does not. No ramp, so the difference shows at once.
    rows = [request_line(n, max_tokens=1_000) for n in range(40)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(
        simulator,
        source,
        tmp_path / "out.jsonl",
        "--no-ramp",
        "--retry-base-delay",
        "0.05",
        "--output-accounting",
        accounting,
        "--max-output-tokens-per-minute",
        "6000",
    )
    assert done.returncode == 0, done.stderr
    statuses = Counter(s.status for s in messages_seen(simulator))
    assert statuses[200] == 40
    assert (statuses[429] > 0) is meets_429


@pytest.mark.simulator(input_tokens_per_minute=1_000)
def test_a_request_larger_than_a_limit_learned_from_the_server_is_never_sent(
    simulator: Simulator, tmp_path: Path
) -> None:
    # No limits given: the first request goes alone to learn them, and the large one
    # waits behind it until the server's headers say how much an input-token bucket holds.
    big = request_line(2, messages=[{"role": "user", "content": "word " * 3000}])
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1), big])
    done = run_against(simulator, source, tmp_path / "out.jsonl")
    assert done.returncode == 1, done.stderr
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert "can never be admitted" in records["line-2"]["result"]["error"]["error"]["message"]
    assert records["line-1"]["result"]["type"] == "succeeded"
    assert [s.body["messages"] for s in messages_seen(simulator)] == [request_line(1)["messages"]]
