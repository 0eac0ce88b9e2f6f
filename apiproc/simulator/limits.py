"""Rate limits: continuously refilled token buckets, one set per model class (§B).

    pool = RatePool.create(config, now)
    rejection = pool.admit(input_tokens=1_200, output_need=1, now=now)  # None: charged
    headers = pool.headers(now)  # the 12 anthropic-ratelimit-* headers

Each pool holds the three documented limits (requests, input tokens, output tokens); the
server keeps one pool per ``ModelSpec.rate_pool``, as the docs say limits apply per model.
Also here: the wording of the rate-limit and spend-cap 429 messages and of the spend-limit 400.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from apiproc.simulator.config import SimulatorConfig


@dataclass(slots=True)
class TokenBucket:
    """A continuously refilled bucket; its level goes negative when usage is settled late."""

    capacity: float
    rate: float  # units per second
    level: float
    updated: float  # event-loop time of the last refill

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def seconds_until(self, amount: float, now: float) -> float:
        """Seconds until the level reaches ``amount``; infinite if it never can."""
        self.refill(now)
        if amount > self.capacity:
            return math.inf
        return max(0.0, (amount - self.level) / self.rate)

    def seconds_until_full(self, now: float) -> float:
        self.refill(now)
        return (self.capacity - self.level) / self.rate

    def add(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)


@dataclass(slots=True)
class Limit:
    """One documented limit (RPM, ITPM or OTPM), optionally also enforced over a short window."""

    unit: str  # as the 429 message names it: "requests", "input tokens", "output tokens"
    per_minute: float
    minute: TokenBucket
    window: TokenBucket | None

    @classmethod
    def create(cls, unit: str, per_minute: float, window: float | None, now: float) -> Limit:
        rate = per_minute / 60.0
        short = None if window is None else TokenBucket(rate * window, rate, rate * window, now)
        return cls(unit, per_minute, TokenBucket(per_minute, rate, per_minute, now), short)

    def seconds_until(self, amount: float, now: float) -> float:
        wait = self.minute.seconds_until(amount, now)
        if self.window is not None:
            # A request bigger than the short window waits for a full window, so a
            # sub-minute interval shapes bursts without banning large requests.
            short_need = min(amount, self.window.capacity)
            wait = max(wait, self.window.seconds_until(short_need, now))
        return wait

    def retry_after(self, amount: float, now: float) -> int:
        wait = self.seconds_until(amount, now)
        if math.isinf(wait):
            # More than a minute's limit can never be admitted; a full bucket is the best hope.
            wait = self.minute.seconds_until_full(now)
        return max(1, math.ceil(wait))

    def add(self, amount: float, now: float) -> None:
        self.minute.add(amount, now)
        if self.window is not None:
            self.window.add(amount, now)


@dataclass(slots=True)
class Rejection:
    limit: Limit
    retry_after: int


@dataclass(slots=True)
class RatePool:
    """The three limits one model class shares (§B.1)."""

    requests: Limit
    input: Limit
    output: Limit

    @classmethod
    def create(cls, config: SimulatorConfig, now: float) -> RatePool:
        window = config.window_seconds
        return cls(
            Limit.create("requests", config.requests_per_minute, window, now),
            Limit.create("input tokens", config.input_tokens_per_minute, window, now),
            Limit.create("output tokens", config.output_tokens_per_minute, window, now),
        )

    def admit(self, input_tokens: int, output_need: int, now: float) -> Rejection | None:
        """Charge a request if every limit has room; otherwise say which limit refused it."""
        needs = ((self.requests, 1), (self.input, input_tokens), (self.output, output_need))
        waits = [(limit.seconds_until(need, now), limit, need) for limit, need in needs]
        wait, limit, need = max(waits, key=lambda item: item[0])
        if wait > 0:
            return Rejection(limit, limit.retry_after(need, now))
        self.requests.add(-1, now)
        self.input.add(-input_tokens, now)
        return None

    def headers(self, now: float) -> dict[str, str]:
        """The 12 ``anthropic-ratelimit-*`` headers, from the per-minute buckets."""
        wall = time.time()
        headers: dict[str, str] = {}
        for name, limit in (
            ("requests", self.requests),
            ("input-tokens", self.input),
            ("output-tokens", self.output),
        ):
            bucket = limit.minute
            bucket.refill(now)
            remaining = _floor(bucket.level) if name == "requests" else _thousands(bucket.level)
            headers[f"anthropic-ratelimit-{name}-limit"] = str(round(limit.per_minute))
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = _reset_time(bucket, now, wall)
        tokens_limit = round(self.input.per_minute + self.output.per_minute)
        tokens_left = max(0.0, self.input.minute.level) + max(0.0, self.output.minute.level)
        buckets = (self.input.minute, self.output.minute)
        later = max(buckets, key=lambda bucket: bucket.seconds_until_full(now))
        headers["anthropic-ratelimit-tokens-limit"] = str(tokens_limit)
        headers["anthropic-ratelimit-tokens-remaining"] = str(_thousands(tokens_left))
        headers["anthropic-ratelimit-tokens-reset"] = _reset_time(later, now, wall)
        return headers


def _floor(level: float) -> int:
    return max(0, math.floor(level))


def _thousands(level: float) -> int:
    """Round to the nearest thousand, as the docs say token ``remaining`` values are."""
    return max(0, math.floor(level / 1000 + 0.5) * 1000)


def _reset_time(bucket: TokenBucket, now: float, wall: float) -> str:
    """RFC 3339 UTC time, whole seconds, at which the bucket will be full again."""
    deficit_seconds = bucket.seconds_until_full(now)
    # Round up a pending refill so a client waiting until then is never early.
    moment = math.ceil(wall + deficit_seconds) if deficit_seconds > 0 else math.floor(wall)
    return datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rate_limit_message(limit: Limit, org_id: str, model: str) -> str:
    """The 429 message naming the limit that refused the request, as the API words it."""
    amount = f"{round(limit.per_minute):,}"
    return (
        f"This request would exceed your organization's rate limit of {amount} {limit.unit} "
        f"per minute (org: {org_id}, model: {model}). For details, refer to: "
        "https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
        "current usage. Please reduce the prompt length or the maximum tokens requested, or "
        "try again later. You may also contact sales at https://www.anthropic.com/contact-sales "
        "to discuss your options for a rate limit increase."
    )


def spend_cap_message() -> str:
    """The 429 message of an organisation past its monthly spend limit."""
    return (
        "You have reached your API usage limits: your organization has crossed its monthly "
        "API usage threshold, set based on your organization's API tier. You will regain "
        f"access on {_first_of_next_month()} at 00:00 UTC."
    )


def _first_of_next_month() -> str:
    today = datetime.now(timezone.utc).date()
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return f"{year:04d}-{month:02d}-01"


def user_spend_limit_message() -> str:
    """The 400 message of an organisation past a spend limit it set itself."""
    # Only the opening words are documented; the rest mirrors the spend-cap message (a guess).
    return (
        "You have reached your specified API usage limits. You will regain access on "
        f"{_first_of_next_month()} at 00:00 UTC."
    )
