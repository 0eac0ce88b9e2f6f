"""The official `anthropic` SDK 2.x, as an independent judge, talks to `apiproc simulate`.

The SDK sends `anthropic-version: 2026-10-21` and the key as `Authorization: Bearer`; it
must complete messages, streams and token counts, see the API's errors as its own
exception types, and retry a 429 by its `retry-after` header.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import pytest

from apiproc.simulator import SimulatorConfig, SimulatorThread

anthropic = pytest.importorskip("anthropic", minversion="2")

MODEL = "claude-haiku-4-5"
STARTUP_SECONDS = 20.0
LISTENING = re.compile(r"Simulator listening on (http://127\.0\.0\.1:\d+)/v1/messages")
QUESTION = [{"role": "user", "content": "Where does rain come from?"}]


class SimulateProcess:
    """`apiproc simulate --port 0 ARGS` in its own process, and the address it listens on."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "apiproc", "simulate", "--port", "0", *args]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        self.base_url = self._wait_until_listening()

    def _wait_until_listening(self) -> str:
        assert self.process.stderr is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        seen = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stderr], [], [], 0.5)
            if ready:
                line = self.process.stderr.readline()
                seen += line
                if match := LISTENING.search(line):
                    return match.group(1)
                if not line:
                    break
        self.stop()
        raise RuntimeError(f"apiproc simulate did not start: {seen}")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base_url}/_sim/stats", timeout=5) as response:
            return json.load(response)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def simulate_process(*args: str) -> Iterator[SimulateProcess]:
    running = SimulateProcess(*args)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[SimulateProcess]:
    """A default `apiproc simulate`, on the date claude-sonnet-4-5 retired."""
    with simulate_process("--today", "2026-11-30") as running:
        yield running


def client(base_url: str, **options: Any) -> Any:
    return anthropic.Anthropic(base_url=base_url, api_key="sk-ant-sdk-test", **options)


def test_the_sdk_completes_a_message(server: SimulateProcess) -> None:
    message = client(server.base_url).messages.create(model=MODEL, max_tokens=64, messages=QUESTION)
    assert isinstance(message, anthropic.types.Message)
    assert message.id.startswith("msg_")
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.content[0].type == "text" and message.content[0].text
    assert 1 <= message.usage.output_tokens <= 64
    assert message.usage.input_tokens > 0


def test_the_sdk_counts_tokens_as_the_messages_endpoint_bills_them(
    server: SimulateProcess,
) -> None:
    sdk = client(server.base_url)
    counted = sdk.messages.count_tokens(model=MODEL, messages=QUESTION)
    assert isinstance(counted, anthropic.types.MessageTokensCount)
    billed = sdk.messages.create(model=MODEL, max_tokens=16, messages=QUESTION)
    assert counted.input_tokens == billed.usage.input_tokens > 0


def test_the_sdk_streams_a_message_and_assembles_what_a_plain_call_returns(
    server: SimulateProcess,
) -> None:
    sdk = client(server.base_url)
    with sdk.messages.stream(model=MODEL, max_tokens=64, messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert isinstance(final, anthropic.types.Message)
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.id.startswith("msg_") and final.model == MODEL
    assert final.stop_reason in ("end_turn", "max_tokens")
    counted = sdk.messages.count_tokens(model=MODEL, messages=QUESTION)
    assert final.usage.input_tokens == counted.input_tokens
    assert 1 <= final.usage.output_tokens <= 64


def test_the_sdk_reads_the_raw_stream_events_in_the_documented_order(
    server: SimulateProcess,
) -> None:
    events = list(
        client(server.base_url).messages.create(
            model=MODEL, max_tokens=64, messages=QUESTION, stream=True
        )
    )
    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    start, delta = events[0], events[-2]
    assert start.message.usage.input_tokens > 0 and start.message.stop_reason is None
    assert delta.delta.stop_reason in ("end_turn", "max_tokens")
    assert 1 <= delta.usage.output_tokens <= 64


def test_the_sdk_sees_a_sampling_parameter_as_a_bad_request(server: SimulateProcess) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client(server.base_url).messages.create(
            model=MODEL, max_tokens=16, messages=QUESTION, extra_body={"temperature": 0}
        )
    assert raised.value.status_code == 400
    assert raised.value.body["error"]["message"] == "temperature: Extra inputs are not permitted"


def test_the_sdk_sees_a_retired_model_as_not_found(server: SimulateProcess) -> None:
    sdk = client(server.base_url)
    with warnings.catch_warnings(), pytest.raises(anthropic.NotFoundError) as raised:
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's own notice of the date
        sdk.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=QUESTION)
    assert raised.value.body["error"]["type"] == "not_found_error"


def test_the_sdk_raises_a_rate_limit_error_carrying_retry_after() -> None:
    with simulate_process("--requests-per-minute", "1") as limited:
        sdk = client(limited.base_url, max_retries=0)
        sdk.messages.create(model=MODEL, max_tokens=16, messages=QUESTION)
        with pytest.raises(anthropic.RateLimitError) as raised:
            sdk.messages.create(model=MODEL, max_tokens=16, messages=QUESTION)
        assert raised.value.status_code == 429
        assert raised.value.body["error"]["type"] == "rate_limit_error"
        assert int(raised.value.response.headers["retry-after"]) >= 1
        assert limited.stats()["by_status"] == {"200": 1, "429": 1}


def test_the_sdk_retries_a_429_after_retry_after_and_succeeds() -> None:
    # With this seed the first request draws an injected 429 (retry-after: 1), the next none.
    with simulate_process("--rate-429", "0.5", "--seed", "1") as flaky:
        started = time.monotonic()
        message = client(flaky.base_url, max_retries=2).messages.create(
            model=MODEL, max_tokens=16, messages=QUESTION
        )
        assert message.usage.output_tokens >= 1
        assert time.monotonic() - started >= 1.0  # it waited as retry-after asked
        assert flaky.stats()["by_status"] == {"200": 1, "429": 1}


def test_what_the_sdk_sends_is_version_2026_10_21_with_a_bearer_key() -> None:
    config = SimulatorConfig(api_key="sk-ant-sdk-test", today=date(2026, 11, 30))
    with SimulatorThread(config) as simulator:
        client(simulator.base_url).messages.create(model=MODEL, max_tokens=16, messages=QUESTION)
        (seen,) = simulator.seen
    assert seen.status == 200
    assert seen.headers["anthropic-version"] == "2026-10-21"
    assert seen.headers["authorization"] == "Bearer sk-ant-sdk-test"
    assert "x-api-key" not in seen.headers
