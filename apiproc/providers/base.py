"""The provider-neutral answer of one attempt.

outcome = provider.classify(status, headers, body)
if outcome.verdict is Verdict.RETRY: ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from apiproc.limiter import ServerLimit
from apiproc.tokens import Usage


class Verdict(Enum):
    SUCCESS = "success"
    RETRY = "retry"  # transient: try again after a back-off
    PERMANENT = "permanent"  # this request will never succeed as it is
    FATAL = "fatal"  # no request will succeed (bad key, spend cap): stop the run


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

    @property
    def error_type(self) -> str:
        return str((self.error or {}).get("type", "api_error"))
