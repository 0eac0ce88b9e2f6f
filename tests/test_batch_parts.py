"""The parts of batch mode on their own: polling schedule, pacing, journal, planner."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import request_line, write_jsonl

from apiproc.batch.calls import READ_ATTEMPTS, BatchCalls, Pacer, PollSchedule
from apiproc.batch.journal import Journal, Span, read_state
from apiproc.batch.planner import BatchRules, Planner, read_members
from apiproc.clock import ManualClock
from apiproc.errors import OutputError, ResumeMismatch
from apiproc.providers import AnthropicProvider
from apiproc.providers.anthropic_batches import AnthropicBatches, parse_time
from apiproc.providers.base import Verdict
from apiproc.providers.batches import BatchApiError, BatchCounts, BatchInfo, BatchLimits
from apiproc.resume import Finished

# ---- polling and pacing -----------------------------------------------------------------


def test_polling_backs_off_by_half_while_nothing_changes_and_resets_on_a_change() -> None:
    schedule = PollSchedule(interval=10, longest=40)
    assert [schedule.next(changed=False) for _ in range(5)] == [15, 22.5, 33.75, 40, 40]
    assert schedule.next(changed=True) == 10


def test_polling_slows_to_ten_intervals_at_most_by_default() -> None:
    schedule = PollSchedule(interval=1)
    assert max(schedule.next(changed=False) for _ in range(50)) == 10


def test_the_pacer_spaces_calls_at_the_rate_and_a_pause_holds_them_back() -> None:
    clock = ManualClock()
    pacer = Pacer(per_minute=60, clock=clock)

    async def calls(count: int) -> list[float]:
        times = []
        for _ in range(count):
            await pacer.wait()
            times.append(clock.now())
        return times

    assert asyncio.run(calls(3)) == [0, 1, 2]
    pacer.pause(30)
    assert asyncio.run(calls(1)) == [clock.now()] and clock.now() == pytest.approx(32)


class FlakyApi:
    """A batch service whose retrieve answers 429 `failures` times first."""

    def __init__(self, failures: int, retry_after: float | None = 5.0) -> None:
        self.failures = failures
        self.retry_after = retry_after
        self.retrieves = 0
        self.creates = 0

    async def retrieve(self, batch_id: str) -> BatchInfo:
        self.retrieves += 1
        if self.retrieves <= self.failures:
            raise BatchApiError(
                "HTTP 429", verdict=Verdict.RETRY, status=429, retry_after=self.retry_after
            )
        return BatchInfo(batch_id, "in_progress", BatchCounts(processing=1), created_at=0)

    async def create(self, entries: Any, size: int, tag: str) -> BatchInfo:
        self.creates += 1
        raise BatchApiError("HTTP 500", verdict=Verdict.RETRY, status=500, uncertain=True)


def test_a_429_on_a_read_is_retried_after_its_retry_after() -> None:
    clock = ManualClock()
    api = FlakyApi(failures=2)
    calls = BatchCalls(api, Pacer(6000, clock), clock)  # type: ignore[arg-type]
    info = asyncio.run(calls.retrieve("b"))
    assert info.id == "b" and api.retrieves == 3
    assert clock.now() >= 10  # two pauses of retry-after 5 s
    assert calls.rate_limited == 2


def test_reads_give_up_after_a_bounded_number_of_attempts() -> None:
    clock = ManualClock()
    api = FlakyApi(failures=100, retry_after=None)
    calls = BatchCalls(api, Pacer(6000, clock), clock)  # type: ignore[arg-type]
    with pytest.raises(BatchApiError):
        asyncio.run(calls.retrieve("b"))
    assert api.retrieves == READ_ATTEMPTS


def test_create_is_never_retried_by_the_calls_themselves() -> None:
    clock = ManualClock()
    api = FlakyApi(failures=0)
    calls = BatchCalls(api, Pacer(6000, clock), clock)  # type: ignore[arg-type]
    with pytest.raises(BatchApiError) as failed:
        asyncio.run(calls.create(None, 0, "tag"))
    assert failed.value.uncertain and api.creates == 1


def test_rfc3339_times_with_any_fraction_parse_to_unix_seconds() -> None:
    assert parse_time("2024-09-24T18:37:24.100435Z") == pytest.approx(1727203044.100435)
    assert parse_time("2024-09-24T18:37:24.100435123Z") == pytest.approx(1727203044.100435)
    assert parse_time("2024-09-24T18:37:24Z") == 1727203044.0
    assert parse_time(None) is None and parse_time("soon") is None


# ---- the journal ----------------------------------------------------------------------------


def intend(journal: Journal, spans: list[Span], **extra: Any) -> int:
    fields: dict[str, Any] = {
        "purpose": "new", "spans": spans, "count": sum(s.lines for s in spans), "size": 10,
        "digest": "d", "at": 1.0, "pool": [], "rest": None, "new": None,
    }  # fmt: skip
    fields.update(extra)
    return journal.intend(**fields)


def test_the_journal_replays_intents_batches_and_the_pool(tmp_path: Path) -> None:
    path = str(tmp_path / "state.jsonl")
    with Journal.open(path) as journal:
        first = intend(journal, [Span(1, 0, 10)], new=(500, 11))
        journal.created(first, "b1", 2.0)
        second = intend(journal, [Span(11, 500, 5)], new=(750, 16))
        journal.not_created(second, "refused")
        journal.written(first, [Span(3, 100, 2, 1)], {"succeeded": 8}, output_bytes=900)
    state = read_state(path)
    assert (state.next_offset, state.next_line) == (750, 16)
    assert state.intents[1].batch_id == "b1" and state.intents[1].written
    assert sorted(state.pool) == [3, 11]  # sent again, and never sent
    assert state.pool[3] == Span(3, 100, 2, 1)
    with Journal.open(path) as journal:
        third = intend(journal, [Span(3, 100, 2, 1), Span(11, 500, 3)], pool=[3, 11],
                       rest=Span(14, 650, 2))  # fmt: skip
        assert journal.state.intents[third].count == 5
    assert list(read_state(path).pool.values()) == [Span(14, 650, 2)]


def test_a_torn_last_journal_line_is_removed_as_a_step_never_taken(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    with Journal.open(str(path)) as journal:
        seq = intend(journal, [Span(1, 0, 3)])
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"event":"created","seq":1,"batch')
    with Journal.open(str(path)) as journal:
        assert journal.repaired_bytes > 0
        assert journal.state.intents[seq].state == "intended"
    assert path.read_bytes() == whole


def test_a_second_run_cannot_open_a_journal_in_use(tmp_path: Path) -> None:
    path = str(tmp_path / "state.jsonl")
    with Journal.open(path), pytest.raises(OutputError, match="Another apiproc run"):
        Journal.open(path)


# ---- the planner ----------------------------------------------------------------------------


def planner_for(
    path: Path, state_path: Path, finished: Finished | None = None, **limits: int
) -> tuple[Planner, list[Any], BatchLimits]:
    api = AnthropicBatches(AnthropicProvider(api_key="k"), session=None)  # type: ignore[arg-type]
    bad: list[Any] = []
    handle = open(path, "rb")  # noqa: SIM115 - closed by the test's tmp_path cleanup
    journal = Journal.open(str(state_path))
    planner = Planner(handle, BatchRules(api), journal.state, finished, bad.append)
    chosen = BatchLimits(limits.get("requests", 100_000), limits.get("size", 10**9), 10**9)
    planner.journal = journal  # type: ignore[attr-defined]
    return planner, bad, chosen


def test_chunks_hold_consecutive_lines_as_one_span_and_respect_the_count(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(5)])
    planner, _, limits = planner_for(source, tmp_path / "s", requests=2)
    first = planner.next_chunk(limits)
    assert first is not None and first.count == 2 and len(first.spans) == 1
    assert first.spans[0].line == 1 and first.spans[0].lines == 2
    second = planner.next_chunk(limits)
    third = planner.next_chunk(limits)
    assert second is not None and third is not None and third.count == 1
    assert planner.next_chunk(limits) is None
    offsets = [first.spans[0].offset, second.spans[0].offset, third.spans[0].offset]
    assert offsets == sorted(offsets) and offsets[0] == 0


def test_bad_and_finished_lines_break_spans_and_stay_out(tmp_path: Path) -> None:
    rows = [request_line(0), "oops", request_line(2), request_line(3)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    finished = Finished(ids={"line-4": None})
    planner, bad, limits = planner_for(source, tmp_path / "s", finished)
    chunk = planner.next_chunk(limits)
    assert chunk is not None and [(s.line, s.lines) for s in chunk.spans] == [(1, 1), (3, 1)]
    assert [b.code for b in bad] == ["invalid_json_line"] and planner.skipped == 1


def test_members_read_back_match_and_a_changed_input_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(3)])
    planner, _, limits = planner_for(source, tmp_path / "s")
    chunk = planner.next_chunk(limits)
    assert chunk is not None
    with open(source, "rb") as handle:
        members = list(read_members(handle, chunk.spans, chunk.digest))
    assert [m.job.custom_id for m in members] == ["line-1", "line-2", "line-3"]
    changed = [request_line(n) for n in range(3)]
    changed[1]["max_tokens"] = 65
    write_jsonl(source, changed)
    with open(source, "rb") as handle, pytest.raises(ResumeMismatch, match="changed"):
        list(read_members(handle, chunk.spans, chunk.digest))


def test_appending_to_an_input_without_a_final_newline_keeps_its_batches_valid(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(request_line(0)))  # no newline at the end
    planner, _, limits = planner_for(source, tmp_path / "s")
    chunk = planner.next_chunk(limits)
    assert chunk is not None
    with open(source, "a") as handle:
        handle.write("\n" + json.dumps(request_line(1)) + "\n")
    with open(source, "rb") as handle:
        assert len(list(read_members(handle, chunk.spans, chunk.digest))) == 1


def test_a_pool_span_too_big_for_the_chunk_leaves_its_rest_in_the_pool(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(n) for n in range(6)])
    planner, _, limits = planner_for(source, tmp_path / "s", requests=4)
    planner.state.pool[1] = Span(1, 0, 6, 1)
    planner.input_done = True
    planner._waiting = None
    chunk = planner.next_chunk(limits, new_input=False)
    assert chunk is not None and chunk.count == 4 and chunk.pool_keys == [1]
    assert chunk.rest is not None and (chunk.rest.line, chunk.rest.lines) == (5, 2)
    assert chunk.spans == [Span(1, 0, 4, 1)]
