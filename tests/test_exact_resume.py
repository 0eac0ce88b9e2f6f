"""Resume skips an id only when its line still asks what its result answered."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from conftest import read_jsonl, request_line, run_against, run_cli, write_jsonl

from apiproc.jobs import request_fingerprint
from apiproc.simulator import Simulator

KEY = "sk-ant-exact-resume-key"


def run(simulator: Simulator, source: Path, output: Path | str, *extra: str):
    return run_against(simulator, source, output, *extra, key=KEY)


def completed(simulator: Simulator) -> list[dict]:
    return [s.body for s in simulator.seen if s.path == "/v1/messages" and s.status == 200]


def ids_in(path: Path) -> Counter:
    return Counter(record["custom_id"] for record in read_jsonl(path))


def regenerated(rows: list[dict], line: int, **change: object) -> list[dict]:
    """The same input with line `line` (1-based) asking something else."""
    return [{**row, **change} if n == line - 1 else row for n, row in enumerate(rows)]


def test_every_result_carries_the_fingerprint_of_the_request_as_read(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [request_line(n) for n in range(3)]
    output = tmp_path / "out.jsonl"
    assert run(simulator, write_jsonl(tmp_path / "in.jsonl", rows), output).returncode == 0
    by_id = {r["custom_id"]: r["fingerprint"] for r in read_jsonl(output)}
    assert by_id == {f"line-{n + 1}": request_fingerprint(row) for n, row in enumerate(rows)}


def test_a_regenerated_input_whose_line_5_changed_is_refused_before_anything_is_sent(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [request_line(n) for n in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    before = output.read_bytes()
    write_jsonl(source, regenerated(rows, 5, max_tokens=99))
    refused = run(simulator, source, output)
    assert refused.returncode == 2
    assert "1 line of" in refused.stderr and "differs from" in refused.stderr
    assert "(line-5)" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert len(completed(simulator)) == 10  # nothing was sent
    assert output.read_bytes() == before


def test_with_force_a_changed_line_is_sent_again_and_its_old_result_replaced(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [request_line(n) for n in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    new_rows = regenerated(rows, 5, max_tokens=99)
    write_jsonl(source, new_rows)
    forced = run(simulator, source, output, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Skipped:   9 already in the output" in forced.stderr
    assert [body["max_tokens"] for body in completed(simulator)[10:]] == [99]
    assert ids_in(output) == Counter({f"line-{n}": 1 for n in range(1, 11)})
    fifth = next(r for r in read_jsonl(output) if r["custom_id"] == "line-5")
    assert fifth["fingerprint"] == request_fingerprint(new_rows[4])


def test_key_order_and_spacing_are_not_a_change(simulator: Simulator, tmp_path: Path) -> None:
    rows = [request_line(n) for n in range(4)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    source.write_text(
        "".join(json.dumps(dict(reversed(row.items())), indent=None) + "  \n" for row in rows)
    )
    again = run(simulator, source, output)
    assert again.returncode == 0, again.stderr
    assert len(completed(simulator)) == 4


def test_a_changed_line_read_from_stdin_is_not_sent_and_is_reported(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [request_line(n) for n in range(6)]
    output = tmp_path / "out.jsonl"
    assert run(simulator, write_jsonl(tmp_path / "in.jsonl", rows), output).returncode == 0
    changed = "".join(json.dumps(row) + "\n" for row in regenerated(rows, 5, max_tokens=99))
    done = run_cli(
        "run",
        "-",
        "-o",
        str(output),
        "--request-url",
        simulator.messages_url,
        "--api-key",
        KEY,
        stdin=changed,
    )
    assert done.returncode == 2, done.stderr
    assert "Changed:   1 not sent" in done.stderr and "(line-5)" in done.stderr
    assert len(completed(simulator)) == 6
    assert ids_in(output) == Counter({f"line-{n}": 1 for n in range(1, 7)})


def test_an_output_without_fingerprints_resumes_by_id_with_one_warning(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [request_line(n) for n in range(5)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    older = [{k: v for k, v in r.items() if k != "fingerprint"} for r in read_jsonl(output)]
    write_jsonl(output, older[:3])  # as an older apiproc left it, stopped after three
    again = run(simulator, source, output)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("matched by id only") == 1
    assert len(completed(simulator)) == 5 + 2
    assert ids_in(output) == Counter({f"line-{n}": 1 for n in range(1, 6)})


def errored(record: dict, kind: str) -> dict:
    error = {"type": "error", "error": {"type": kind, "message": "..."}, "request_id": None}
    return {**record, "result": {"type": "errored", "error": error}}


def test_retry_errored_resends_what_a_rerun_may_fix_and_all_resends_the_rest(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [request_line(n) for n in range(4)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    assert run(simulator, source, output).returncode == 0
    records = read_jsonl(output)
    records[0] = errored(records[0], "overloaded_error")
    records[1] = errored(records[1], "connection_error")
    records[2] = errored(records[2], "invalid_request_error")
    write_jsonl(output, records)
    fixable = run(simulator, source, output, "--retry-errored")
    assert fixable.returncode == 0, fixable.stderr
    assert len(completed(simulator)) == 4 + 2
    everything = run(simulator, source, output, "--retry_errored", "all")  # classic spelling
    assert everything.returncode == 0, everything.stderr
    assert len(completed(simulator)) == 4 + 2 + 1
    assert ids_in(output) == Counter({f"line-{n}": 1 for n in range(1, 5)})
    assert all(r["result"]["type"] == "succeeded" for r in read_jsonl(output))


def classic(simulator: Simulator, source: Path, output: Path):
    return run_cli(
        "api_request_parallel_processor.py",
        "--requests_filepath",
        str(source),
        "--save_filepath",
        str(output),
        "--request_url",
        simulator.messages_url,
        "--max_requests_per_minute",
        "600",
        "--max_tokens_per_minute",
        "100000",
        "--use_caching",
        "True",
        env={"ANTHROPIC_API_KEY": KEY},
        module=False,
    )


def test_the_classic_command_with_caching_run_twice_sends_nothing_the_second_time(
    simulator: Simulator, tmp_path: Path
) -> None:
    system = "You are a careful assistant. " * 200
    rows = [request_line(n, system=system) for n in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    first = classic(simulator, source, output)
    assert first.returncode == 0, first.stderr
    assert all(isinstance(body["system"], list) for body in completed(simulator))  # marked
    second = classic(simulator, source, output)
    assert second.returncode == 0, second.stderr
    assert len(completed(simulator)) == 10
    lines = read_jsonl(output)
    assert len(lines) == 10
    assert all(line[0]["system"] == system for line in lines)  # the request as read


def test_a_bad_line_in_the_cookbook_format_is_written_once(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1), "{not json"])
    output = tmp_path / "out.jsonl"
    first = run(simulator, source, output, "--output-format", "cookbook")
    assert first.returncode == 1, first.stderr
    again = run(simulator, source, output, "--output-format", "cookbook")
    assert again.returncode == 0, again.stderr
    assert "Skipped:   2 already in the output" in again.stderr
    lines = read_jsonl(output)
    assert sorted(str(line[0]) for line in lines).count("{not json") == 1
    assert len(lines) == 2
