"""Small builders shared by the limiter tests."""

from __future__ import annotations

from apiproc.clock import ManualClock
from apiproc.limiter import AttemptReport, Cost, Limits, RateLimiter, ServerLimit


def limiter(clock: ManualClock, ramp: bool = False, **limits: float) -> RateLimiter:
    return RateLimiter(Limits(**limits), clock=clock, ramp=ramp, name="haiku-4-5")


def request(input_tokens: float = 0, output_tokens: float = 0) -> Cost:
    return Cost(requests=1, input_tokens=input_tokens, output_tokens=output_tokens)


def headers(**dimensions: tuple[float | None, float | None]) -> dict[str, ServerLimit]:
    """`headers(requests=(600, 10))`: limit and remaining by dimension."""
    return {name: ServerLimit(limit, remaining) for name, (limit, remaining) in dimensions.items()}


def answered(
    used: Cost | None,
    server: dict[str, ServerLimit] | None = None,
    succeeded: bool = True,
) -> AttemptReport:
    """What a real API answer reports."""
    return AttemptReport(used=used, server=server or {}, succeeded=succeeded, api_answer=True)


def rate_limited(
    server: dict[str, ServerLimit] | None = None, retry_after: float | None = None
) -> AttemptReport:
    return AttemptReport(
        used=Cost(),
        server=server or {},
        rate_limited=True,
        retry_after=retry_after,
        api_answer=True,
    )
