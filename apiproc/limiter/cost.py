"""What the limiter counts: costs, limits, reservations, and what an attempt reports.

    cost = Cost(requests=1, input_tokens=900, output_tokens=200)
    Limits(requests_per_minute=3_000).by_dimension()      # {"requests": 3000.0}
    AttemptReport(used=cost, server=headers, succeeded=True, api_answer=True)

Plain records shared by the buckets, the ramp, discovery and the engine. A limited
dimension is one of `DIMENSIONS`: requests, input tokens, output tokens, and the classic
combined tokens (input + output).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from apiproc.providers.base import ServerLimit

DIMENSIONS = ("requests", "input_tokens", "output_tokens", "tokens")


class RequestTooLarge(ValueError):
    """A single request needs more than a bucket can ever hold."""

    def __init__(self, dimension: str, needed: float, limit: float) -> None:
        self.dimension = dimension
        self.needed = needed
        self.limit = limit
        super().__init__(
            f"needs {needed:,.0f} {dimension.replace('_', ' ')} but the limit is "
            f"{limit:,.0f} per minute, so it can never be admitted"
        )


@dataclass(slots=True)  # several are built per request: a frozen one costs far more to build
class Cost:
    """What one attempt takes from the buckets; never changed once made."""

    requests: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0

    def of(self, dimension: str) -> float:
        if dimension == "tokens":
            return self.input_tokens + self.output_tokens
        if dimension == "requests":
            return self.requests
        if dimension == "input_tokens":
            return self.input_tokens
        return self.output_tokens

    def amounts(self) -> tuple[float, float, float, float]:
        """What it takes of each of DIMENSIONS, in that order: `of` for every bucket at once."""
        return (
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.input_tokens + self.output_tokens,
        )

    def plus(self, other: Cost) -> Cost:
        return Cost(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )

    def minus(self, other: Cost) -> Cost:
        return Cost(
            self.requests - other.requests,
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
        )

    def most(self, other: Cost) -> Cost:
        """The larger of the two in every field."""
        return Cost(
            max(self.requests, other.requests),
            max(self.input_tokens, other.input_tokens),
            max(self.output_tokens, other.output_tokens),
        )


NOTHING = Cost()


@dataclass(slots=True, frozen=True)
class Limits:
    """Per-minute limits; None means not set (learned from the server if it tells)."""

    requests_per_minute: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def by_dimension(self) -> dict[str, float]:
        values = {
            "requests": self.requests_per_minute,
            "input_tokens": self.input_tokens_per_minute,
            "output_tokens": self.output_tokens_per_minute,
            "tokens": self.tokens_per_minute,
        }
        return {name: value for name, value in values.items() if value is not None}

    def over(self, fallback: Limits) -> Limits:
        """These limits, with `fallback`'s for the dimensions these leave unset."""
        return Limits(
            _first(self.requests_per_minute, fallback.requests_per_minute),
            _first(self.input_tokens_per_minute, fallback.input_tokens_per_minute),
            _first(self.output_tokens_per_minute, fallback.output_tokens_per_minute),
            _first(self.tokens_per_minute, fallback.tokens_per_minute),
        )


def _first(value: float | None, fallback: float | None) -> float | None:
    return fallback if value is None else value


@dataclass(slots=True)
class Reservation:
    """What an admitted attempt holds until it is finished."""

    limit_class: str
    seq: int
    cost: Cost  # reserved at admission
    charged: Cost  # taken from the buckets so far: the reservation, or more as reported
    settled: bool = False
    # All the class had admitted up to this one (requests, input and output tokens): what
    # came after it, the server's answer to it may not have counted yet.
    admitted: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(slots=True)  # one per attempt, read once: frozen would only make it slower to build
class AttemptReport:
    """What one admitted attempt came back with, handed to `finish()`."""

    used: Cost | None  # what the server counted; None: unknown, so the reservation stays
    server: Mapping[str, ServerLimit] = field(default_factory=lambda: MappingProxyType({}))
    rate_limited: bool = False  # a 429 from pacing: it consumed nothing
    retry_after: float | None = None
    succeeded: bool = False
    # The API itself answered (2xx or 4xx JSON), so missing headers mean it sends none;
    # a dropped connection, a bare 5xx/529 or a proxy's HTML page says nothing of limits.
    api_answer: bool = False
