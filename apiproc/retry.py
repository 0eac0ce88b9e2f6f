"""How long to wait before the next attempt of a request that failed transiently.

    delay = backoff_delay(attempt=2, retry_after=None, rng=random.Random(7))

The server's `retry-after` wins when it gives one. Otherwise exponential back-off with
full jitter: a uniform draw between 0 and min(cap, base * 2^(attempt - 1)), which spreads
the retries of many requests that failed together instead of sending them back as one
wave.
"""

from __future__ import annotations

import random

BASE_DELAY = 1.0
MAX_DELAY = 60.0


def backoff_delay(
    attempt: int,
    retry_after: float | None,
    rng: random.Random,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first)."""
    if retry_after is not None and retry_after > 0:
        return retry_after
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return rng.uniform(0.0, ceiling)
