"""The provider protocol and the plain data types every part of apiproc speaks.

    provider: Provider = build_provider("openai", api_key=key)
    problem = provider.validate(job.params)          # None, or why the API would refuse it
    request = provider.request(job.params)           # url, body, headers of one attempt
    outcome = provider.classify(status, headers, body)
    decoder = provider.decoder(status, headers)      # a streamed answer: feed(), finish()
    facts = provider.model("claude-haiku-4-5")        # limit class, prices, cache rules

Everything that differs between APIs lives behind `Provider`: which requests it would
certainly refuse, how a request is built, what an answer means (success, retry,
permanent, fatal, rate limited), the usage and the rate-limit headers it reports, and the
facts of each model. The engine, the limiter, the prompt-cache planner and the report
see only the types defined here. This module imports nothing from apiproc, so
dependencies point one way: into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Any, Protocol


@dataclass(slots=True)
class Usage:
    """Token usage as an API reports it for one response."""

    input_tokens: int = 0  # uncached input
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part of cache_creation_input_tokens kept for 1 h

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_creation_input_tokens += other.cache_creation_input_tokens
        self.cache_read_input_tokens += other.cache_read_input_tokens
        self.cache_write_1h_tokens += other.cache_write_1h_tokens


@dataclass(slots=True)  # made for every answer: a frozen record costs several times as much
class ServerLimit:
    """One dimension of the server's rate-limit headers, per minute."""

    limit: float | None = None
    remaining: float | None = None


# The Message Batches APIs charge half of every token category.
BATCH_DISCOUNT = 0.5


@dataclass(slots=True, frozen=True)
class Price:
    """USD per million tokens, for one request.

    A tiered price has `long_prompt`: the rates of every token, output included, of a
    request whose prompt (input + cache writes + cache reads) is longer than
    `long_prompt_over` tokens. So a request is priced on its own usage, never a sum.
    """

    input: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    output: float
    long_prompt: Price | None = None
    long_prompt_over: int = 0

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The rates of a request whose prompt is `prompt_tokens` long."""
        if self.long_prompt is not None and prompt_tokens > self.long_prompt_over:
            return self.long_prompt
        return self

    def cost(self, usage: Usage, batch: bool = False) -> float:
        """Dollars for one request's usage."""
        return self.for_prompt(usage.total_input).tier_cost(usage, batch)

    def uncached_cost(self, usage: Usage, batch: bool = False) -> float:
        """What the same request would cost with no prompt caching at all."""
        return self.for_prompt(usage.total_input).tier_uncached_cost(usage, batch)

    def tier_cost(self, usage: Usage, batch: bool = False) -> float:
        """Dollars for `usage` at these very rates, whatever its prompt's length: the usage
        of one request, or the sum of requests that all fall in this tier."""
        write_1h = usage.cache_write_1h_tokens
        dollars = (
            usage.input_tokens * self.input
            + (usage.cache_creation_input_tokens - write_1h) * self.cache_write_5m
            + write_1h * self.cache_write_1h
            + usage.cache_read_input_tokens * self.cache_read
            + usage.output_tokens * self.output
        ) / 1_000_000
        return dollars * BATCH_DISCOUNT if batch else dollars

    def tier_uncached_cost(self, usage: Usage, batch: bool = False) -> float:
        """`tier_cost` with every prompt token at the uncached input rate."""
        dollars = (usage.total_input * self.input + usage.output_tokens * self.output) / 1_000_000
        return dollars * BATCH_DISCOUNT if batch else dollars


@dataclass(slots=True, frozen=True)
class ModelFacts:
    """What apiproc needs to know of one model, whichever API serves it."""

    limit_class: str  # models that share one set of rate limits
    token_ratio: float  # first guess of the model's tokens per cl100k token, before learning
    min_cacheable_tokens: int | None = None  # shortest prefix cached; None: not known
    cache_reads_count: bool = False  # cache reads count toward the input-tokens limit
    price: Price | None = None
    end_of_life: date | None = None


class Verdict(Enum):
    SUCCESS = "success"
    RETRY = "retry"  # transient: try again after a back-off
    PERMANENT = "permanent"  # this request will never succeed as it is
    FATAL = "fatal"  # no request will succeed (bad key, spend limit): stop the run


@dataclass(slots=True)
class Outcome:
    """One attempt's answer, classified."""

    verdict: Verdict
    status: int | None = None
    message: dict[str, Any] | None = None
    usage: Usage | None = None
    error: dict[str, Any] | None = None
    request_id: str | None = None
    retry_after: float | None = None
    rate_limited: bool = False
    server: dict[str, ServerLimit] = field(default_factory=dict)
    # The API itself answered (a 2xx or 4xx JSON answer): missing rate-limit headers then
    # mean it sends none. Not so for a dropped connection, a timeout, a bare 5xx or HTML.
    api_answer: bool = False

    @property
    def error_type(self) -> str:
        return str((self.error or {}).get("type", "api_error"))


# How requests travel: streamed when the line asks or max_tokens calls for it (auto), always
# streamed, or never (plain).
TRANSPORTS = ("auto", "stream", "plain")


@dataclass(slots=True)
class HttpRequest:
    """One attempt on the wire; `headers` add to the session's own."""

    url: str
    body: bytes
    headers: Mapping[str, str] | None = None  # most requests add none
    stream: bool = False  # the answer comes as a stream of events
    time_limit: float | None = None  # seconds the whole attempt may take; None: the run's


class StreamDecoder(Protocol):
    """Reads one streamed answer as its bytes arrive; the provider makes one per attempt."""

    def feed(self, chunk: bytes) -> Usage | None:
        """Take the next bytes; the usage so far when they reported new figures, else None."""

    def finish(self) -> Outcome:
        """The attempt's outcome, once the stream has ended."""


class Provider(Protocol):
    """One API: how to talk to it and what its answers mean."""

    name: str
    prices_as_of: str
    # How the API counts output against its limits unless told otherwise: "generated"
    # (tokens as they are produced) or "max_tokens" (the ceiling, reserved at the start).
    output_accounting: str
    # Whether requests may carry cache breakpoints (`cache_control`) for apiproc to add.
    cache_breakpoints: bool

    @property
    def session_headers(self) -> Mapping[str, str]:
        """Headers sent with every request of the run."""

    def validate(self, params: dict[str, Any]) -> str | None:
        """Why the API would certainly refuse `params`, saying what to do; None if it would
        not. `params` already names a model; the rest (messages, `max_tokens`, roles,
        content) is the API's own."""

    def request(self, params: dict[str, Any]) -> HttpRequest:
        """The HTTP request that sends `params`."""

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, figures: bool = True
    ) -> Outcome:
        """Turn one HTTP answer into an Outcome. Without `figures`, a success's rate-limit
        headers are left unread (`Outcome.server` empty): the engine reads them only when
        they can matter; an error's are always read."""

    def decoder(self, status: int, headers: Mapping[str, str]) -> StreamDecoder | None:
        """A decoder when this answer is a stream of events; None: read the body whole."""

    def model(self, model: str) -> ModelFacts:
        """The facts of `model` (a safe default for a model this provider does not know)."""

    def transient_error(self, error_type: str) -> bool:
        """An error of this type may well not recur when the request is sent again later
        (rate limited, overloaded, a server error), unlike an answer to the request itself."""
