"""End to end: the API version a run speaks, the lines it refuses before sending, and the
models that retire."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, request_line, run_against, run_cli, write_jsonl

from apiproc.preflight import preflight
from apiproc.providers.anthropic_models import model_facts
from apiproc.report import retirement_text
from apiproc.simulator import Simulator

KEY = "sk-ant-test-key"
NEW = ("--anthropic-version", "2026-10-21")
FIX = "or run with --anthropic-version 2023-06-01"
DOCUMENT = {
    "type": "document",
    "source": {"type": "text", "media_type": "text/plain", "data": "Water evaporates."},
}
CITATION = {
    "type": "char_location",
    "cited_text": "Water",
    "document_index": 0,
    "document_title": None,
    "start_char_index": 0,
    "end_char_index": 5,
}


def mixed_file(path: Path) -> Path:
    """Lines 1, 3 and 7 are sound under both versions; the others only under 2023-06-01."""
    assistant_document = [
        {"role": "user", "content": "Read this."},
        {"role": "assistant", "content": [DOCUMENT]},
        {"role": "user", "content": "Now summarise it."},
    ]
    cited = [{"type": "text", "text": "Water evaporates.", "citations": [CITATION]}]
    user_citations = [{"role": "user", "content": cited}]
    rows: list[Any] = [
        request_line(1),
        request_line(2, temperature=0),
        request_line(3),
        request_line(4, top_p=0.9, top_k=40),
        request_line(5, messages=assistant_document),
        {"custom_id": "cited", "params": request_line(6, messages=user_citations)},
        request_line(7),
    ]
    return write_jsonl(path, rows)


def messages_seen(simulator: Simulator) -> list:
    return [seen for seen in simulator.seen if seen.path == "/v1/messages"]


def error_of(record: dict[str, Any]) -> dict[str, Any]:
    assert record["result"]["type"] == "errored"
    return record["result"]["error"]["error"]


def test_lines_2026_10_21_refuses_are_bad_lines_and_never_sent(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = mixed_file(tmp_path / "in.jsonl")
    done = run_against(simulator, source, tmp_path / "out.jsonl", *NEW, key=KEY)
    assert done.returncode == 1, done.stderr
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert {cid for cid, r in records.items() if r["result"]["type"] == "succeeded"} == {
        "line-1",
        "line-3",
        "line-7",
    }
    bad = {cid: error_of(r) for cid, r in records.items() if r["result"]["type"] == "errored"}
    assert set(bad) == {"line-2", "line-4", "line-5", "cited"}
    assert all(error["type"] == "invalid_request_error" for error in bad.values())
    assert all(records[cid]["attempts"] == 0 for cid in bad)
    assert bad["line-2"]["message"] == (
        "line 2: temperature: anthropic-version 2026-10-21 refuses it at any value (the API "
        f"answers 400); remove temperature from the line, {FIX}"
    )
    assert bad["line-4"]["message"].startswith(
        "line 4: top_p, top_k: anthropic-version 2026-10-21 refuses them"
    )
    assert bad["line-5"]["message"].startswith(
        "line 5: messages.1.content.0: anthropic-version 2026-10-21 refuses a document block "
        "directly in an assistant message; move it to a user message"
    )
    assert bad["cited"]["message"].startswith(
        "line 6: messages.0.content.0.citations: anthropic-version 2026-10-21 refuses citations"
    )
    assert all(error["message"].endswith(FIX) for error in bad.values())
    seen = messages_seen(simulator)
    assert len(seen) == 3  # nothing was sent for the four bad lines
    assert {s.headers["anthropic-version"] for s in seen} == {"2026-10-21"}
    assert all(s.status == 200 for s in seen)


def test_under_the_default_2023_06_01_the_same_lines_are_sent_and_succeed(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = mixed_file(tmp_path / "in.jsonl")
    done = run_against(simulator, source, tmp_path / "out.jsonl", key=KEY)
    assert done.returncode == 0, done.stderr
    assert all(r["result"]["type"] == "succeeded" for r in read_jsonl(tmp_path / "out.jsonl"))
    seen = messages_seen(simulator)
    assert len(seen) == 7
    assert {s.headers["anthropic-version"] for s in seen} == {"2023-06-01"}
    assert any(s.body.get("temperature") == 0 for s in seen)


def test_estimate_reports_the_lines_the_chosen_version_refuses(tmp_path: Path) -> None:
    source = mixed_file(tmp_path / "in.jsonl")
    done = run_cli("estimate", str(source), *NEW)
    assert done.returncode == 1
    assert "valid requests 3; bad lines 4" in done.stdout
    assert "bad line 2: temperature: anthropic-version 2026-10-21 refuses it" in done.stdout
    assert "bad line 5: messages.1.content.0:" in done.stdout
    unchanged = run_cli("estimate", str(source))
    assert unchanged.returncode == 0
    assert "valid requests 7; bad lines 0" in unchanged.stdout


def test_an_unknown_version_is_a_usage_error_before_anything_is_sent(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1)])
    done = run_cli("run", str(source), "--simulate", "--anthropic-version", "2025-01-01")
    assert done.returncode == 2
    assert "2026-10-21" in done.stderr  # the choices are named
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- retirement


@pytest.mark.simulator(today=date(2026, 12, 1))
def test_a_retired_model_is_recorded_as_a_permanent_not_found_error(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [request_line(1, model="claude-sonnet-4-5"), request_line(2)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_against(simulator, source, tmp_path / "out.jsonl", key=KEY)
    assert done.returncode == 1, done.stderr
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert error_of(records["line-1"])["type"] == "not_found_error"
    assert records["line-1"]["attempts"] == 1  # permanent: never retried
    assert records["line-2"]["result"]["type"] == "succeeded"
    assert sorted(s.status for s in messages_seen(simulator)) == [200, 404]


@pytest.mark.simulator(today=date(2026, 11, 29))
def test_a_model_is_served_until_the_day_before_its_end_of_life(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1, model="claude-sonnet-4-5")])
    done = run_against(simulator, source, tmp_path / "out.jsonl", key=KEY)
    assert done.returncode == 0, done.stderr


def test_estimate_warns_of_a_model_past_its_end_of_life_with_the_date(tmp_path: Path) -> None:
    rows = [request_line(1, model="claude-sonnet-4-5-20250929"), request_line(2)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_cli("estimate", str(source))
    assert done.returncode == 0
    assert (
        "Warning: claude-sonnet-4-5-20250929 reached its end of life on 2026-11-30" in done.stdout
    )
    assert "claude-haiku-4-5 reach" not in done.stdout


def test_models_near_their_end_of_life_are_named_within_30_days_only(tmp_path: Path) -> None:
    rows = [
        request_line(1, model="claude-opus-4-5"),
        request_line(2, model="claude-sonnet-4-5"),
        request_line(3, model="claude-sonnet-5-5"),
    ]
    report = preflight(str(write_jsonl(tmp_path / "in.jsonl", rows)), model_facts)
    early = date(2026, 10, 30)  # 31 days before the first end of life
    assert report.retiring(early, within_days=30) == []
    near = date(2026, 12, 23)
    assert report.retiring(near, within_days=30) == [
        ("claude-opus-4-5", date(2027, 1, 22)),
        ("claude-sonnet-4-5", date(2026, 11, 30)),
    ]
    assert retirement_text("claude-opus-4-5", date(2027, 1, 22), near) == (
        "claude-opus-4-5 reaches its end of life on 2027-01-22 (in 30 days); from then on "
        "the API answers 404 for it."
    )
