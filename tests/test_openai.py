"""OpenAI-compatible Chat Completions: the provider's rules, the simulated endpoint (judged by
the official `openai` SDK), and `apiproc run --api openai` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from conftest import read_jsonl, run_cli, write_jsonl

from apiproc.clock import ManualClock
from apiproc.limiter import Cost, Limits, RateLimiter
from apiproc.providers import Verdict, build_provider
from apiproc.providers.openai import (
    OpenAIProvider,
    chat_url,
    duration_seconds,
    validate_chat,
)
from apiproc.simulator import Simulator, SimulatorConfig, SimulatorThread

KEY = "sk-openai-test-key-do-not-log"
MODEL = "gpt-4o-mini"

provider = OpenAIProvider(api_key="sk-test")


def chat_line(n: int, **extra: object) -> dict:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": f"Say something about the number {n}."},
        ],
        **extra,
    }


def error_body(message: str, kind: str | None, code: str | None) -> bytes:
    error = {"message": message, "type": kind, "param": None, "code": code}
    return json.dumps({"error": error}).encode()


def client_for(simulator: Simulator, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=simulator.base_url + "/v1", api_key=key, max_retries=0)


def run_openai(simulator: Simulator, source: Path, output: Path, *extra: str):
    return run_cli(
        "run",
        str(source),
        "-o",
        str(output),
        "--api",
        "openai",
        "--request-url",
        simulator.base_url + "/v1",
        *extra,
        env={"OPENAI_API_KEY": KEY},
    )


# ---- the provider's rules -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("2s81ms", 2.081),
        ("1.5s", 1.5),
        ("1h2m3s", 3723.0),
        ("0", 0.0),
        ("12", 12.0),
        ("soon", None),
        ("6m0", None),
        ("", None),
    ],
)
def test_reset_durations_are_read_as_go_style_durations(text: str, seconds: float | None) -> None:
    found = duration_seconds(text)
    assert found == pytest.approx(seconds) if seconds is not None else found is None


def test_a_base_url_or_the_endpoint_itself_both_reach_chat_completions() -> None:
    assert chat_url("http://localhost:8000/v1") == "http://localhost:8000/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    assert chat_url(None) == "https://api.openai.com/v1/chat/completions"


def test_requests_carry_a_bearer_key_and_the_body_as_given() -> None:
    request = provider.request(chat_line(1, max_tokens=5))
    assert provider.session_headers["authorization"] == "Bearer sk-test"
    assert json.loads(request.body) == chat_line(1, max_tokens=5)
    assert request.url == "https://api.openai.com/v1/chat/completions"


def test_usage_counts_cached_prompt_tokens_apart() -> None:
    completion = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {
            "prompt_tokens": 1_200,
            "completion_tokens": 30,
            "total_tokens": 1_230,
            "prompt_tokens_details": {"cached_tokens": 1_024},
        },
    }
    outcome = provider.classify(200, {"x-request-id": "req_9"}, json.dumps(completion).encode())
    assert outcome.verdict is Verdict.SUCCESS
    assert outcome.usage is not None
    assert (outcome.usage.input_tokens, outcome.usage.cache_read_input_tokens) == (176, 1_024)
    assert outcome.usage.output_tokens == 30
    assert outcome.usage.total_input == 1_200
    assert outcome.request_id == "req_9"


@pytest.mark.parametrize(
    ("status", "kind", "code", "verdict"),
    [
        (400, "invalid_request_error", None, Verdict.PERMANENT),
        (401, "invalid_request_error", "invalid_api_key", Verdict.FATAL),
        (403, "invalid_request_error", "unsupported_country_region_territory", Verdict.FATAL),
        (404, "invalid_request_error", "model_not_found", Verdict.PERMANENT),
        (408, None, None, Verdict.RETRY),
        (409, None, None, Verdict.RETRY),
        (429, "tokens", "rate_limit_exceeded", Verdict.RETRY),
        (429, "insufficient_quota", "insufficient_quota", Verdict.FATAL),
        (500, "server_error", None, Verdict.RETRY),
        (503, "server_error", None, Verdict.RETRY),
    ],
)
def test_error_answers_are_classified_by_status_and_code(
    status: int, kind: str | None, code: str | None, verdict: Verdict
) -> None:
    outcome = provider.classify(status, {}, error_body("never consulted", kind, code))
    assert outcome.verdict is verdict
    assert outcome.rate_limited == (status == 429 and verdict is Verdict.RETRY)
    assert outcome.error is not None and outcome.error["type"]  # always named in the record


def test_x_should_retry_decides_before_the_status() -> None:
    body = error_body("x", "invalid_request_error", None)
    assert provider.classify(400, {"x-should-retry": "true"}, body).verdict is Verdict.RETRY
    assert provider.classify(500, {"x-should-retry": "false"}, body).verdict is Verdict.PERMANENT


def test_rate_limit_headers_become_requests_and_one_tokens_budget() -> None:
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    server = provider.classify(500, headers, b"").server
    assert server["requests"].limit == 60 and server["requests"].remaining == 59
    assert server["tokens"].limit == 150_000 and server["tokens"].remaining == 149_984
    unknown = {"x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1"}
    assert provider.classify(500, unknown, b"").server == {}


def test_a_429_without_retry_after_waits_only_for_a_budget_longer_than_a_minute() -> None:
    body = error_body("Rate limit reached", "tokens", "rate_limit_exceeded")
    per_minute = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "12s"}
    assert provider.classify(429, per_minute, body).retry_after is None
    per_day = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    assert provider.classify(429, per_day, body).retry_after == 360.0
    told = {**per_day, "retry-after-ms": "1500"}
    assert provider.classify(429, told, body).retry_after == 1.5


def test_the_tokens_budget_reported_alone_becomes_a_bucket() -> None:
    clock = ManualClock()
    limiter = RateLimiter(Limits(requests_per_minute=600), clock=clock, ramp=False)
    outcome = provider.classify(
        500,
        {"x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": "2000"},
        b"",
    )
    limiter.observe(outcome.server)
    assert limiter.limit("tokens") == 30_000
    # 2,000 remain: a request of 2,500 tokens waits for 500 at 500 per second.
    assert limiter.wait_time(Cost(requests=1, input_tokens=2_000, output_tokens=500), 0.0) == (
        pytest.approx(1.0)
    )


def test_a_combined_figure_beside_input_and_output_limits_is_not_a_bucket() -> None:
    limiter = RateLimiter(Limits(requests_per_minute=600), clock=ManualClock())
    anthropic_like = build_provider("anthropic", api_key="sk-test").classify(
        500,
        {
            "anthropic-ratelimit-input-tokens-limit": "80000",
            "anthropic-ratelimit-output-tokens-limit": "16000",
            "anthropic-ratelimit-tokens-limit": "96000",
        },
        b"",
    )
    limiter.observe(anthropic_like.server)
    assert limiter.limit("input_tokens") == 80_000
    assert limiter.limit("tokens") is None


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        (chat_line(1), None),
        (chat_line(1, max_completion_tokens=10), None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
        ({"model": MODEL}, "messages: Field required"),
        ({"model": MODEL, "messages": []}, "messages: must be a non-empty list"),
        (chat_line(1, max_tokens="9"), "max_tokens: must be an integer"),
        (chat_line(1, max_tokens=0), "max_tokens: must be at least 1"),
        (chat_line(1, stream=True), "stream: apiproc reads whole answers"),
        (
            {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
            "messages.0: role must be one of",
        ),
    ],
)
def test_chat_bodies_are_checked_before_sending(params: dict, problem: str | None) -> None:
    found = validate_chat(params)
    assert found == problem if problem is None else (found or "").startswith(problem)


# ---- the simulated endpoint, judged by the official SDK -----------------------------


def test_the_sdk_reads_the_simulated_completion_and_its_rate_limit_headers(
    simulator: Simulator,
) -> None:
    client = client_for(simulator)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=8
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    headers = raw.headers
    assert headers["x-ratelimit-limit-requests"] == "4000"
    assert int(headers["x-ratelimit-remaining-requests"]) == 3999
    assert headers["x-ratelimit-limit-tokens"] == "2400000"
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert duration_seconds(headers[name]) is not None, headers[name]
    assert raw.request_id is not None and raw.request_id.startswith("req_")
    seen = simulator.seen[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"


def test_the_sdk_sees_the_documented_errors(simulator: Simulator) -> None:
    client = client_for(simulator)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[])
    assert bad.value.code == "empty_array" and bad.value.param == "messages"


@pytest.mark.simulator(api_key="sk-the-right-key")
def test_the_sdk_sees_a_wrong_key_as_an_authentication_error(simulator: Simulator) -> None:
    with pytest.raises(openai.AuthenticationError) as wrong:
        client_for(simulator, key="sk-a-wrong-key").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )
    assert wrong.value.code == "invalid_api_key"


@pytest.mark.simulator(spend_limit_after=0)
def test_the_sdk_sees_insufficient_quota_as_a_rate_limit_error_it_must_not_retry(
    simulator: Simulator,
) -> None:
    with pytest.raises(openai.RateLimitError) as quota:
        client_for(simulator).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )
    assert quota.value.code == "insufficient_quota"
    assert quota.value.type == "insufficient_quota"


@pytest.mark.simulator(requests_per_minute=2)
def test_the_simulated_requests_budget_refuses_with_rate_limit_exceeded(
    simulator: Simulator,
) -> None:
    client = client_for(simulator)
    for _ in range(2):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert limited.value.code == "rate_limit_exceeded" and limited.value.type == "requests"
    headers = limited.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < duration_seconds(headers["x-ratelimit-reset-requests"]) <= 60
    assert simulator.stats.rate_limited == 1


@pytest.mark.simulator(tokens_per_minute=1_000)
def test_the_tokens_budget_reserves_max_tokens_when_the_request_starts(
    simulator: Simulator,
) -> None:
    client = client_for(simulator)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=5_000
        )
    assert limited.value.type == "tokens"
    assert "Request too large" in limited.value.message
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=500
    )


# ---- apiproc run --api openai ---------------------------------------------------------


def test_bare_chat_bodies_and_batch_lines_each_get_one_record_with_the_completion_inside(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [chat_line(n, max_tokens=32) for n in range(10)] + [
        {
            "custom_id": f"req-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": chat_line(100 + n, max_tokens=32),
        }
        for n in range(10)
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_openai(simulator, source, tmp_path / "out.jsonl")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in records) == sorted(
        [f"line-{n}" for n in range(1, 11)] + [f"req-{n}" for n in range(10)]
    )
    for record in records:
        assert record["result"]["type"] == "succeeded"
        completion = record["result"]["message"]
        assert completion["object"] == "chat.completion"
        openai.types.chat.ChatCompletion.model_validate(completion)
        assert record["request_id"].startswith("req_")
    seen = [s for s in simulator.seen if s.path == "/v1/chat/completions"]
    assert len(seen) == 20
    assert all(s.headers["authorization"] == f"Bearer {KEY}" for s in seen)
    assert {json.dumps(s.body, sort_keys=True) for s in seen} == {
        json.dumps(row.get("body", row), sort_keys=True) for row in rows
    }
    assert KEY not in done.stderr
    assert "cost unknown for gpt-4o-mini" in done.stderr


def test_without_an_openai_key_the_run_says_which_variable_to_set(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat_line(1)])
    done = run_cli("run", str(source), "--api", "openai", env={"OPENAI_API_KEY": ""})
    assert done.returncode == 2
    assert "OPENAI_API_KEY" in done.stderr and "Traceback" not in done.stderr


def test_anthropic_bodies_sent_to_openai_are_bad_lines_not_requests(
    simulator: Simulator, tmp_path: Path
) -> None:
    bad = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}
    source = write_jsonl(tmp_path / "in.jsonl", [chat_line(1), bad])
    done = run_openai(simulator, source, tmp_path / "out.jsonl")
    assert done.returncode == 1
    errored = [r for r in read_jsonl(tmp_path / "out.jsonl") if r["result"]["type"] == "errored"]
    assert len(errored) == 1 and "role must be one of" in json.dumps(errored[0])
    assert len([s for s in simulator.seen if s.path == "/v1/chat/completions"]) == 1


@pytest.mark.simulator(spend_limit_after=3)
def test_insufficient_quota_stops_the_run_with_exit_status_3(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat_line(n) for n in range(30)])
    done = run_openai(simulator, source, tmp_path / "out.jsonl", "--max-concurrency", "1")
    assert done.returncode == 3, done.stderr
    assert "insufficient_quota" in done.stderr
    assert len([s for s in simulator.seen if s.status == 429]) == 1


@pytest.mark.simulator(requests_per_minute=120, tokens_per_minute=3_000, latency=0.05)
def test_a_run_follows_the_tokens_budget_it_learns_from_the_headers(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [chat_line(n, max_tokens=40) for n in range(12)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_openai(simulator, source, tmp_path / "out.jsonl", "--max-requests-per-minute", "120")
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 12
    assert simulator.stats.rate_limited <= 1


def test_a_server_without_rate_limit_headers_runs_on_the_given_limits(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat_line(n) for n in range(6)])
    config = SimulatorConfig(rate_limit_headers=False)
    with SimulatorThread(config) as bare:
        given = run_openai(bare, source, tmp_path / "a.jsonl", "--max-requests-per-minute", "600")
        assert given.returncode == 0, given.stderr
        assert "no rate-limit headers" not in given.stderr
        nothing = run_openai(bare, source, tmp_path / "b.jsonl")
        assert nothing.returncode == 0, nothing.stderr
        assert "The server sent no rate-limit headers and no limits were given" in nothing.stderr
        assert "--max-requests-per-minute" in nothing.stderr
    assert len(read_jsonl(tmp_path / "b.jsonl")) == 6


def test_the_bundled_simulator_serves_openai_runs(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat_line(n) for n in range(3)])
    done = run_cli(
        "run", str(source), "-o", str(tmp_path / "out.jsonl"), "--api", "openai", "--simulate"
    )
    assert done.returncode == 0, done.stderr
    assert all(
        r["result"]["message"]["object"] == "chat.completion"
        for r in read_jsonl(tmp_path / "out.jsonl")
    )


def test_use_caching_is_refused_for_an_api_without_cache_breakpoints(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat_line(1)])
    done = run_cli(
        "run",
        str(source),
        "--api",
        "openai",
        "--simulate",
        "--use-caching",
        "-o",
        str(tmp_path / "o.jsonl"),
    )
    assert done.returncode == 2
    assert "--use-caching" in done.stderr and "Traceback" not in done.stderr


def test_openai_base_url_from_the_environment_is_used_and_checked_like_the_option(
    simulator: Simulator, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat_line(1)])
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": simulator.base_url + "/v1"}
    done = run_cli("run", str(source), "-o", str(tmp_path / "a.jsonl"), "--api", "openai", env=env)
    assert done.returncode == 0, done.stderr
    assert [s.path for s in simulator.seen] == ["/v1/chat/completions"]
    env["OPENAI_BASE_URL"] = "http://example.com/v1"
    refused = run_cli(
        "run", str(source), "-o", str(tmp_path / "b.jsonl"), "--api", "openai", env=env
    )
    assert refused.returncode == 2
    assert "Refusing to send the API key in clear text to example.com" in refused.stderr


def test_progress_shows_the_one_tokens_budget_against_its_limit() -> None:
    from apiproc.report import Snapshot, progress_line

    shot = Snapshot(
        done=5, total=10, succeeded=5, errored=0, skipped=0, in_flight=2, retries=0,
        rate_limited=0, requests_per_minute=60, input_per_minute=9_000, output_per_minute=1_000,
        limits={"requests": 600, "input_tokens": None, "output_tokens": None, "tokens": 30_000},
        eta_seconds=5, cost="cost unknown for gpt-4o-mini", cache=None, elapsed=5,
    )  # fmt: skip
    assert "10,000/30,000 tokens" in progress_line(shot)
    shot.limits["tokens"] = None
    assert "/30,000 tokens" not in progress_line(shot)
