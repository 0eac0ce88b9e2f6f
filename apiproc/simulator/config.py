"""The simulator's settings and the records it keeps of the traffic it answered.

    config = SimulatorConfig(requests_per_minute=60, rate_529=0.05, seed=7)
    check_config(config)  # ValueError on a setting that cannot work
    sim.stats.as_dict()["by_status"], sim.seen[0].headers["x-api-key"]

Tests and benchmarks read ``SimulatorStats`` and ``SeenRequest`` to judge a client by what
the server saw, never by what the client says it did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any


@dataclass(slots=True)
class SimulatorConfig:
    """How the simulated API behaves; defaults are a generous, fault-free org."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    requests_per_minute: float = 4_000
    input_tokens_per_minute: float = 2_000_000
    output_tokens_per_minute: float = 400_000
    # The OpenAI endpoint's single budget for input and output tokens together.
    tokens_per_minute: float = 2_400_000
    # False: the OpenAI endpoint sends no x-ratelimit-* headers, as vLLM and llama-stack.
    rate_limit_headers: bool = True
    # "generated": OTPM counts generated tokens only, charged when generation ends (2026
    # docs). "max_tokens": max_tokens reserved at the start, corrected at the end (2025 docs).
    output_accounting: str = "generated"
    # Also enforce every limit over this interval: buckets of rate * window_seconds.
    window_seconds: float | None = None
    latency: float = 0.0  # seconds before the response begins (time to first token)
    latency_jitter: float = 0.0  # uniform extra 0..jitter seconds
    output_tokens_per_second: float = 0.0  # 0: generation takes no extra time
    output_tokens: tuple[int, int] = (16, 128)  # drawn per request, clipped to max_tokens
    rate_429: float = 0.0  # injected faults: probability per request
    rate_529: float = 0.0
    rate_500: float = 0.0
    rate_502_html: float = 0.0  # non-JSON 502 page, as a proxy would send
    rate_drop: float = 0.0  # close the connection without any response
    rate_stall: float = 0.0  # hold the connection stall_seconds, then close it
    stall_seconds: float = 30.0
    # overloaded_error partway through an answer: an `error` event in a stream, else a 529
    rate_stream_error: float = 0.0
    # Seconds of silence in a stream before a ping event; 0 sends none. A guess: the API's
    # interval is undocumented (reported as roughly 15-30 s).
    ping_interval: float = 15.0
    seed: int = 0
    api_key: str | None = None  # None: any non-empty key is accepted
    spend_limit_after: int | None = None  # accepted requests before the spend-cap 429
    # accepted requests before the 400 of a spend limit the organisation set itself
    user_spend_limit_after: int | None = None
    record: bool = True  # keep a SeenRequest per request
    # Batches (the OpenAI Batch API here): how long a batch takes, what its results hold.
    batch_processing_seconds: float = 1.0  # from creation until a batch ends
    batch_cancel_seconds: float = 0.1  # from a cancel until the batch ends
    batch_errored_rate: float = 0.0  # share of results errored for a transient reason
    batch_expired_rate: float = 0.0  # share of results expired
    # The simulated API's date (models past their end of life answer 404); None: the real
    # UTC date, read at each request.
    today: date | None = None
    # Message Batches (§E): how long a batch takes, what its results hold, its limits.
    batch_processing_seconds: float = 1.0  # from creation until a batch ends
    batch_cancel_seconds: float = 0.1  # from a cancel until the batch ends
    batch_create_latency: float = 0.0  # seconds a create takes; the batch exists halfway
    batch_errored_rate: float = 0.0  # share of results errored for a transient reason
    batch_expired_rate: float = 0.0  # share of results expired
    batch_requests_per_minute: float = 1_000  # every batch endpoint together (2026 copy)
    batch_queue_limit: int = 200_000  # requests in unfinished batches (2026 copy)
    batch_max_requests: int = 100_000
    batch_max_bytes: int = 256_000_000  # "256 MB", read as the smaller figure
    batch_results_days: float = 29.0
    # Tests: awaited at points of a batch's life ("create", "created", "retrieve", "results");
    # returning True drops the connection there.
    batch_hook: Callable[[str, dict[str, Any]], Awaitable[bool | None]] | None = None


@dataclass(slots=True)
class SeenRequest:
    """One request as the simulator saw and answered it; status 0 means no response."""

    time: float  # wall-clock arrival time
    path: str
    status: int
    headers: dict[str, str]  # request headers, lower-cased names
    body: dict[str, Any] | None
    response_usage: dict[str, Any] | None
    request_id: str | None


@dataclass(slots=True)
class SimulatorStats:
    """Counters over the generation endpoints (``POST /v1/messages`` and
    ``POST /v1/chat/completions``); status 0 counts requests left without a response.

    ``rate_limited`` counts rate-limit 429s only; injected faults (including injected 429s)
    are in ``faults_injected``; spend-cap 429s and spend-limit 400s only in ``by_status``.
    Token sums are over successful responses. Times are wall-clock seconds.
    """

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    faults_injected: int = 0
    succeeded: int = 0
    streamed: int = 0  # answers begun as an event stream ("stream": true)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_writes: int = 0  # successful responses that wrote to the prompt cache
    cache_reads: int = 0  # successful responses that read from it
    max_in_flight: int = 0
    first_request_at: float | None = None
    last_response_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters (``by_status`` keys become strings)."""
        data = dataclasses.asdict(self)
        data["by_status"] = {str(status): n for status, n in sorted(self.by_status.items())}
        return data


def check_config(config: SimulatorConfig) -> None:
    """Refuse settings the simulator cannot run with; raises ValueError."""
    limits = (
        config.requests_per_minute,
        config.input_tokens_per_minute,
        config.output_tokens_per_minute,
        config.tokens_per_minute,
    )
    if min(limits) <= 0:
        raise ValueError("simulator rate limits must be positive numbers per minute")
    if config.output_accounting not in ("generated", "max_tokens"):
        raise ValueError("output_accounting must be 'generated' or 'max_tokens'")
    if config.window_seconds is not None and config.window_seconds <= 0:
        raise ValueError("window_seconds must be positive (or None)")
    if config.ping_interval < 0:
        raise ValueError("ping_interval must not be negative (0 sends no pings)")
    low, high = config.output_tokens
    if not 0 <= low <= high:
        raise ValueError("output_tokens must be a (low, high) range with 0 <= low <= high")
    shares = (config.batch_errored_rate, config.batch_expired_rate)
    if min(shares) < 0 or sum(shares) > 1:
        raise ValueError("batch_errored_rate and batch_expired_rate must be shares adding to <= 1")
    if config.batch_requests_per_minute <= 0 or config.batch_queue_limit < 1:
        raise ValueError("the Batches API limits must be positive")
    if config.batch_processing_seconds < 0 or config.batch_cancel_seconds < 0:
        raise ValueError("batch processing and cancel times must not be negative")
