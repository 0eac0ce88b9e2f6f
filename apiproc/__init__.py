"""apiproc: send a JSONL file of LLM API requests as fast as the rate limits allow.

    apiproc run requests.jsonl --simulate

The public pieces for use from Python are re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from apiproc.lazy import lazy_exports

if TYPE_CHECKING:
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
# Each public piece by the module that holds it, imported on first use: `python -m apiproc`
# imports this package first, and __main__ then loads the rest with the collector paused.
_HOMES = {
    "Cost": "limiter",
    "Limiters": "limiter",
    "Limits": "limiter",
    "RateLimiter": "limiter",
    "RequestTooLarge": "limiter",
    "Result": "results",
    "ResultWriter": "results",
    "Settings": "settings",
}

__getattr__ = lazy_exports(__name__, _HOMES)
