"""Token estimates: the cl100k encoder apiproc builds, and estimates made before it is ready."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from conftest import request_line, write_jsonl
from hypothesis import given
from hypothesis import strategies as st

from apiproc import encoder as encoder_module
from apiproc.encoder import ENCODING, Encoder, cl100k
from apiproc.engine import Engine, feed_file
from apiproc.limiter import Limits
from apiproc.providers import AnthropicProvider
from apiproc.providers.base import Usage
from apiproc.results import ResultWriter
from apiproc.settings import Settings
from apiproc.simulator import Simulator
from apiproc.tokens import (
    PER_MESSAGE_OVERHEAD,
    PER_REQUEST_OVERHEAD,
    PROVISIONAL_MAX_BYTES,
    UNLEARNED_KEEP,
    TokenEstimator,
    _prompt,
    _texts,
)

ALPHABET = "abcdefghij klmnop  \n\t\r.,!?'s'll 0123456789 çé漢字😀\u200b\ud800"


class NotYetReady(Encoder):
    """An encoder nobody builds in the background: it is ready only once asked for."""

    def start(self) -> None:
        pass


class Recording(NotYetReady):
    """A NotYetReady encoder that remembers being asked to start."""

    started = False

    def start(self) -> None:
        self.started = True


def texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(ALPHABET, k=rng.randint(0, 300))) for _ in range(count)]


def params_with(text: str, model: str = "claude-haiku-4-5") -> dict[str, Any]:
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": text}]}


def test_the_encoder_counts_exactly_as_tiktoken_does() -> None:
    reference = tiktoken.get_encoding(ENCODING)
    for text in texts(500):
        clean = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        assert cl100k().count(text) == len(reference.encode_ordinary(clean)), repr(text)


def test_without_the_direct_build_tiktoken_builds_the_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def changed() -> Any:
        raise TypeError("CoreBPE() takes other arguments")

    monkeypatch.setattr(encoder_module, "build_direct", changed)
    fallback = Encoder()
    for text in texts(50):
        assert fallback.count(text) == cl100k().count(text)


def test_a_provisional_estimate_is_never_below_the_counted_one() -> None:
    estimator = TokenEstimator(background=True, encoder=NotYetReady())
    requests = [params_with(text) for text in texts(300, seed=3)]
    provisional = [estimator.estimate(params) for params in requests]
    assert not estimator.encoder.ready
    for params, guess in zip(requests, provisional, strict=True):
        counted = estimator.estimate(params, exact=True)
        assert guess.provisional or not params["messages"][0]["content"]
        assert guess.raw_input >= counted.raw_input
        assert guess.input_tokens >= counted.input_tokens


def test_a_long_prompt_is_counted_even_before_the_encoder_is_ready() -> None:
    estimator = TokenEstimator(background=True, encoder=NotYetReady())
    estimate = estimator.estimate(params_with("word " * PROVISIONAL_MAX_BYTES))
    assert not estimate.provisional
    assert estimate.raw_input == estimator.count(params_with("word " * PROVISIONAL_MAX_BYTES))


def test_answers_to_provisional_estimates_teach_what_counted_ones_do() -> None:
    counted = TokenEstimator()
    provisional = TokenEstimator(background=True, encoder=NotYetReady())
    for n, text in enumerate(texts(30, seed=11)):
        usage = Usage(input_tokens=len(text) // 3 + 10, output_tokens=n % 7 + 1)
        counted.learn(counted.estimate(params_with(text)), usage)
        provisional.learn(provisional.estimate(params_with(text)), usage)
    assert not provisional.encoder.ready  # everything so far was learned on a byte bound
    assert provisional.learned() == counted.learned()


def test_a_byte_bound_above_a_limit_is_counted_before_the_request_is_refused(
    tmp_path: Path,
) -> None:
    # 600 bytes of text in ~100 tokens: its byte bound is over the limit, its count is not.
    text = "the " * 150
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(1, messages=[
        {"role": "user", "content": text}
    ])])  # fmt: skip
    output = tmp_path / "out.jsonl"
    limits = Limits(requests_per_minute=1_000, input_tokens_per_minute=400)

    async def scenario() -> None:
        async with Simulator() as simulator:
            url = simulator.messages_url
            settings = Settings(str(source), str(output), "sk-test", request_url=url, limits=limits)
            provider = AnthropicProvider("sk-test", url)
            estimator = TokenEstimator(background=True, encoder=NotYetReady())
            with ResultWriter(str(output)) as writer:
                engine = Engine(settings, provider, writer, estimator=estimator)
                await asyncio.wait_for(engine.run(lambda e: feed_file(e, str(source))), 30)

    asyncio.run(scenario())
    [record] = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["result"]["type"] == "succeeded", record["result"]


def test_a_lazy_estimator_bounds_every_prompt_on_its_bytes_until_asked_to_count() -> None:
    encoder = Recording()
    estimator = TokenEstimator(background=True, lazy=True, encoder=encoder)
    long = params_with("word " * PROVISIONAL_MAX_BYTES)
    guess = estimator.estimate(long)
    assert guess.provisional and guess.raw_input > PROVISIONAL_MAX_BYTES
    assert not encoder.started and not estimator.counting
    estimator.count_exactly()
    assert encoder.started and estimator.counting
    # Made again once counting has begun, a prompt too long for a byte bound is counted.
    counted = estimator.again(guess, long)
    assert not counted.provisional
    assert counted.raw_input == TokenEstimator().count(long)


def test_a_lazy_estimator_learns_outputs_at_once_and_inputs_once_it_counts() -> None:
    counted = TokenEstimator()
    lazy = TokenEstimator(background=True, lazy=True, encoder=NotYetReady())
    for n, text in enumerate(texts(30, seed=5)):
        usage = Usage(input_tokens=len(text) // 3 + 10, output_tokens=n % 5 + 2)
        counted.learn(counted.estimate(params_with(text)), usage)
        lazy.learn(lazy.estimate(params_with(text)), usage)
    assert lazy.learned() == {}  # nothing counted yet, and nothing built to count it
    assert not lazy.encoder.ready
    probe = params_with("how many?")
    assert lazy.estimate(probe).output_tokens == counted.estimate(probe).output_tokens
    lazy.count_exactly()
    assert lazy.learned() == counted.learned()


def test_a_lazy_estimator_keeps_only_the_latest_answers_to_learn_from() -> None:
    lazy = TokenEstimator(background=True, lazy=True, encoder=NotYetReady())
    for n in range(3 * UNLEARNED_KEEP):
        lazy.learn(lazy.estimate(params_with(f"line {n}")), Usage(input_tokens=9, output_tokens=1))
    lazy.count_exactly()
    [(_, answers)] = lazy.learned().values()
    assert answers == UNLEARNED_KEEP


def test_a_lazy_estimator_needs_no_encoder_for_a_prompt_without_text() -> None:
    encoder = Recording()
    estimator = TokenEstimator(background=True, lazy=True, encoder=encoder)
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    for params in (params_with(""), {**params_with(""), "messages": [
        {"role": "user", "content": [image]}
    ]}):  # fmt: skip
        estimate = estimator.estimate(params)
        assert not estimate.provisional and estimate.raw_input > 0
    assert not encoder.started and not encoder.ready and not estimator.counting


PLAIN_MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=8)}), max_size=3
)


@given(PLAIN_MESSAGES, st.one_of(st.none(), st.integers(-3, 99), st.booleans()))
def test_a_plain_request_is_estimated_as_the_full_walk_and_the_utf8_bytes_have_it(
    messages: list[dict[str, str]], max_tokens: int | bool | None
) -> None:
    params: dict[str, Any] = {"model": "m", "messages": messages, "max_tokens": max_tokens}
    text = "\n".join(piece for piece, _ in _texts(params))
    fixed = PER_REQUEST_OVERHEAD + PER_MESSAGE_OVERHEAD * len(messages)
    assert _prompt(params) == (text, fixed)
    estimator = TokenEstimator(background=True, lazy=True, encoder=Encoder())  # never built
    estimate = estimator.estimate(params)
    if text:
        assert estimate.raw_input == len(text.encode("utf-8", "surrogatepass")) + fixed
    # Nothing learned yet: the ceiling, or 0 for a request without one.
    assert estimate.output_tokens == (max(max_tokens, 0) if type(max_tokens) is int else 0)
