"""Prompt-cache groups: prefix identity, warm-up, re-warm after the lifetime, bounds."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from apiproc.caching import PrefixGroups, cached_prefix, with_system_breakpoint
from apiproc.clock import ManualClock
from apiproc.encoder import Encoder
from apiproc.jobs import Job, parse_line
from apiproc.limiter import Cost
from apiproc.providers.anthropic_models import min_cacheable_tokens, model_facts
from apiproc.providers.base import Outcome, Usage, Verdict
from apiproc.tokens import TokenEstimator

MODEL = "claude-sonnet-4-6"
LONG = "a long shared document " * 400
MARK = {"type": "ephemeral"}


def request(
    question: str = "q?", system: str = LONG, ttl: str | None = None, **fields: Any
) -> dict[str, Any]:
    mark = {**MARK, "ttl": ttl} if ttl else dict(MARK)
    params = {
        "model": MODEL,
        "max_tokens": 16,
        "system": [{"type": "text", "text": system, "cache_control": mark}],
        "messages": [{"role": "user", "content": question}],
    }
    params.update(fields)
    return params


def marked(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": dict(MARK)}]


def key(params: dict[str, Any]) -> bytes | None:
    prefix = cached_prefix(params)
    return prefix.key if prefix else None


# ---- prefix identity ------------------------------------------------------------------


def test_requests_differing_only_after_the_last_breakpoint_share_a_prefix() -> None:
    assert key(request("first?")) == key(request("second?", max_tokens=99))


def test_the_model_and_the_cached_text_make_the_prefix() -> None:
    assert key(request()) != key(request(model="claude-opus-4-1"))
    assert key(request()) != key(request(system=LONG + "!"))


def test_a_request_without_breakpoints_has_no_prefix() -> None:
    plain = {"model": MODEL, "max_tokens": 16, "system": LONG, "messages": []}
    assert cached_prefix(plain) is None


def test_a_string_and_a_single_text_block_are_the_same_prefix() -> None:
    as_blocks = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": LONG}]},
            {"role": "user", "content": marked("q")},
        ],
    }
    as_string = copy.deepcopy(as_blocks)
    as_string["messages"][0]["content"] = LONG
    assert key(as_blocks) == key(as_string)


def unmarked(question: str, **fields: Any) -> dict[str, Any]:
    params = request(question, **fields)
    params["system"] = LONG
    return params


def test_top_level_cache_control_alone_makes_the_whole_prompt_the_prefix() -> None:
    automatic = unmarked("q?", cache_control={"type": "ephemeral", "ttl": "1h"})
    prefix = cached_prefix(automatic)
    assert prefix is not None and prefix.ttl_seconds == 3600.0
    assert key(automatic) != key(unmarked("x", cache_control=MARK))


def test_a_marked_final_block_groups_by_the_breakpoint_before_it() -> None:
    own_question = request(messages=[{"role": "user", "content": marked("first?")}])
    other_question = request(messages=[{"role": "user", "content": marked("second?")}])
    assert key(own_question) == key(other_question) == key(request())
    automatic = request("third?", cache_control=dict(MARK))
    assert key(automatic) == key(request())


def test_the_lifetime_is_the_last_breakpoints_ttl() -> None:
    prefix = cached_prefix(request(ttl="1h"))
    assert prefix is not None and prefix.ttl_seconds == 3600.0
    assert key(request(ttl="1h")) == key(request())


def test_tool_choice_changes_a_messages_prefix_only() -> None:
    in_system = request()
    conversation = [
        {"role": "user", "content": marked(LONG)},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "q?"},
    ]
    in_messages = unmarked("q?", messages=conversation)
    choice = {"tool_choice": {"type": "any"}}
    assert key(in_system) == key({**in_system, **choice})
    assert key(in_messages) != key({**in_messages, **choice})


def test_use_caching_turns_a_string_system_prompt_into_a_marked_block() -> None:
    params = request(system=LONG)
    params["system"] = LONG
    before = copy.deepcopy(params)
    marked = with_system_breakpoint(params)
    assert marked is not None
    assert marked["system"] == [{"type": "text", "text": LONG, "cache_control": MARK}]
    assert params == before  # the request as read stays as it was


def test_use_caching_leaves_a_request_with_its_own_breakpoint_alone() -> None:
    params = {
        "model": MODEL,
        "system": LONG,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": MARK}]}
        ],
    }
    before = copy.deepcopy(params)
    assert with_system_breakpoint(params) is None
    assert params == before


def test_minimum_cacheable_length_follows_the_model_family() -> None:
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4_096
    assert min_cacheable_tokens("claude-sonnet-4-0") == 1_024
    assert min_cacheable_tokens("claude-3-5-haiku-latest") == 2_048
    assert min_cacheable_tokens("claude-opus-4-9") is None


# ---- warm-up ----------------------------------------------------------------------------


class Harness:
    """PrefixGroups on a manual clock; released jobs are collected in order."""

    def __init__(self, **options: Any) -> None:
        self.clock = ManualClock(1_000.0)
        self.released: list[str] = []
        self.wakes: list[tuple[float, Callable[[], None]]] = []
        self.groups = PrefixGroups(
            self.clock,
            TokenEstimator(),
            release=lambda jobs: self.released.extend(job.custom_id for job in jobs),
            wake=lambda delay, callback: self.wakes.append((delay, callback)),
            facts=model_facts,
            **options,
        )
        self.jobs: dict[str, Job] = {}

    def park(self, custom_id: str, **fields: Any) -> bool:
        job = self.jobs.setdefault(custom_id, Job(custom_id, request(custom_id, **fields), 1))
        return self.groups.park(job)

    def answer(self, custom_id: str, written: int = 0, read: int = 0) -> None:
        usage = Usage(
            input_tokens=10, cache_creation_input_tokens=written, cache_read_input_tokens=read
        )
        self.groups.answered(self.jobs[custom_id], Outcome(Verdict.SUCCESS, 200, {}, usage))

    def fail(self, custom_id: str, status: int = 529) -> None:
        outcome = Outcome(Verdict.RETRY, status, error={"type": "overloaded_error"})
        outcome.rate_limited = status == 429
        self.groups.answered(self.jobs[custom_id], outcome)


def test_the_first_job_of_a_prefix_goes_alone_and_releases_its_group() -> None:
    h = Harness()
    assert not h.park("w")
    assert h.park("a") and h.park("b")
    assert h.released == []
    h.answer("w", written=3_000)
    assert h.released == ["a", "b"]
    assert not h.park("a") and not h.park("b")


def test_jobs_of_another_prefix_are_not_held_by_a_warm_up() -> None:
    h = Harness()
    assert not h.park("w")
    assert not h.park("other", system=LONG + " other")


def test_a_lapsed_prefix_is_warmed_again() -> None:
    h = Harness()
    h.park("w")
    h.answer("w", written=3_000)
    h.clock.advance(300.0)
    assert not h.park("rewarm")
    assert h.park("waits")


def test_every_hit_refreshes_the_lifetime() -> None:
    h = Harness()
    h.park("w")
    h.answer("w", written=3_000)
    h.clock.advance(200.0)
    assert not h.park("reader")
    h.answer("reader", read=3_000)
    h.clock.advance(200.0)
    assert not h.park("later")
    assert not h.park("also-reads")


def test_a_one_hour_prefix_stays_warm_past_five_minutes() -> None:
    h = Harness()
    h.park("w", ttl="1h")
    h.answer("w", written=3_000)
    h.clock.advance(1_800.0)
    assert not h.park("a", ttl="1h") and not h.park("b", ttl="1h")


def test_a_failed_warm_up_releases_the_group_and_the_next_job_warms() -> None:
    h = Harness()
    h.park("w")
    h.park("a")
    h.park("b")
    h.fail("w")
    assert h.released == ["a", "b"]
    assert not h.park("a")
    assert h.park("b")
    assert h.park("w")


def test_after_repeated_failed_warm_ups_the_group_goes_without_waiting() -> None:
    h = Harness()
    for attempt in range(3):
        assert not h.park(f"w{attempt}")
        h.fail(f"w{attempt}")
    assert not h.park("x") and not h.park("y")


def test_a_rate_limited_warmer_is_not_a_failed_warm_up() -> None:
    h = Harness()
    for attempt in range(5):
        assert not h.park(f"w{attempt}")
        h.fail(f"w{attempt}", status=429)
    assert not h.park("warmer")
    assert h.park("waits")


def test_parked_jobs_go_when_the_warmer_is_slower_than_the_patience() -> None:
    h = Harness(patience=30.0)
    h.park("slow")
    h.park("a")
    ((delay, callback),) = h.wakes
    assert delay == 30.0
    h.clock.advance(30.0)
    callback()
    assert h.released == ["a"]
    assert not h.park("a")  # counted as written: the slow answer has begun


def test_an_answer_with_nothing_cached_ends_warm_up_for_the_group() -> None:
    h = Harness()
    h.park("w")
    h.park("a")
    h.answer("w")
    assert h.released == ["a"]
    assert not h.park("a") and not h.park("b")


def test_the_parked_cap_says_when_to_stop_reading_input() -> None:
    h = Harness(max_parked=2)
    h.park("w")
    h.park("a")
    assert not h.groups.full
    h.park("b")
    assert h.groups.full
    h.answer("w", written=3_000)
    assert not h.groups.full


def test_release_all_lets_every_parked_job_go() -> None:
    h = Harness()
    h.park("w")
    h.park("a")
    h.park("other-w", system=LONG + " other")
    h.park("other-a", system=LONG + " other")
    assert h.groups.release_all()
    assert sorted(h.released) == ["a", "other-a"]
    assert not h.groups.release_all()


def test_without_warm_up_nothing_waits() -> None:
    h = Harness(warmup=False)
    assert not h.park("w") and not h.park("a")


# ---- cache-aware cost -------------------------------------------------------------------


def warm_cost(h: Harness, custom_id: str, model: str = MODEL) -> tuple[float, float]:
    h.park("w", model=model)
    h.answer("w", written=3_000)
    job = h.jobs.setdefault(custom_id, Job(custom_id, request("a short question", model=model), 2))
    assert not h.groups.park(job)
    job.estimate = h.groups.estimator.estimate(job.params)
    full = Cost(requests=1, input_tokens=job.estimate.input_tokens, output_tokens=16)
    return full.input_tokens, h.groups.cost(job, full).input_tokens


def test_a_warm_prefix_is_left_out_of_the_input_estimate() -> None:
    full, charged = warm_cost(Harness(), "reader")
    assert full > 1_500
    assert 0 < charged < 30


def test_a_warm_prefix_still_counts_for_models_whose_reads_count() -> None:
    full, charged = warm_cost(Harness(), "reader", model="claude-3-5-haiku-20241022")
    assert charged == full


def test_cache_aware_limits_can_be_turned_off() -> None:
    full, charged = warm_cost(Harness(cache_aware=False), "reader")
    assert charged == full


# ---- warnings ----------------------------------------------------------------------------


def test_a_prefix_below_the_models_minimum_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    for n in range(5):
        h.park(f"short-{n}", system="brief instructions")
    h.answer("short-0")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "short-0" in warnings[0] and "1,024" in warnings[0]


def test_a_prefix_that_is_the_whole_prompt_is_counted_once_with_the_estimate() -> None:
    counted: list[int] = []

    class CountingEncoder(Encoder):
        def count(self, text: str) -> int:
            counted.append(1)
            return super().count(text)

    estimator = TokenEstimator(encoder=CountingEncoder())
    groups = PrefixGroups(ManualClock(), estimator, release=lambda jobs: None)
    job = Job("auto", unmarked("unique question", cache_control=dict(MARK)), 1)
    groups.park(job)
    assert job.estimate is not None and len(counted) == 1


def test_a_breakpoint_written_with_escapes_in_the_line_still_groups_its_job() -> None:
    h = Harness()
    assert not h.park("w")
    line = json.dumps({"custom_id": "a", **request("a")}).replace(
        "cache_control", "cache\\u005fcontrol"
    )
    job = parse_line(line.encode(), 2)
    assert isinstance(job, Job) and not job.unmarked
    assert h.groups.park(job)  # waits for the warm-up, as the same line unescaped would


def test_a_line_without_a_breakpoint_is_sent_without_a_prefix() -> None:
    h = Harness()
    plain = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "q"}]}
    job = parse_line(json.dumps(plain).encode(), 1)
    assert isinstance(job, Job) and job.unmarked and cached_prefix(job.params) is None
    assert not h.groups.park(job)
