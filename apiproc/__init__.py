"""apiproc: send a JSONL file of LLM API requests as fast as the rate limits allow.

    apiproc run requests.jsonl --simulate

The public pieces for use from Python are re-exported here.
"""

from apiproc.limiter import Cost, Limiters, Limits, RateLimiter, RequestTooLarge
from apiproc.results import Result, ResultWriter
from apiproc.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "Cost",
    "Limiters",
    "Limits",
    "RateLimiter",
    "RequestTooLarge",
    "Result",
    "ResultWriter",
    "Settings",
    "__version__",
]
