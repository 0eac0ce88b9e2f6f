"""Rate limits: reserve at admission, settle to real usage, obey the server; per model class.

    limiters = Limiters(Limits(requests_per_minute=3_000))
    reservation = await limiters.acquire("haiku-4-5", Cost(requests=1, input_tokens=900))
    limiters.finish(reservation, AttemptReport(used=Cost(1, 870, 143), server=headers))

The whole contract with the engine:
- `acquire(limit_class, cost) -> Reservation` waits until the class has room, first come
  first served within the class (RequestTooLarge if it never can);
- `progress(reservation, used_so_far)` charges usage a streamed answer reports beyond
  the reservation, as it goes (never a refund before the end);
- `finish(reservation, AttemptReport)` ends the attempt: what was used, the server's
  rate-limit headers, a 429 and its retry-after, whether the API itself answered.

Inside, each part reads on its own:
- `cost`: the plain records (Cost, Limits, Reservation, AttemptReport);
- `buckets`: bucket arithmetic, refill, settling and rescaling;
- `ramp`: how much of a bucket may be drawn at once;
- `discovery`: learning a class's limits from headers, and the fallback without them;
- `limiter`: one class's limiter, ordering the three;
- `registry`: one limiter per model class (`Limiters`), the object the engine asks.
"""

from apiproc.limiter.cost import (
    DIMENSIONS,
    NOTHING,
    AttemptReport,
    Cost,
    Limits,
    RequestTooLarge,
    Reservation,
)
from apiproc.limiter.limiter import RateLimiter
from apiproc.limiter.registry import Limiters
from apiproc.providers.base import ServerLimit

__all__ = [
    "DIMENSIONS",
    "NOTHING",
    "AttemptReport",
    "Cost",
    "Limiters",
    "Limits",
    "RateLimiter",
    "RequestTooLarge",
    "Reservation",
    "ServerLimit",
]
