"""Reading HTTP answers the same way for every API: JSON bodies, numbers, retry-after.

    parsed = json_or_none(body)                  # None for an empty or non-JSON body
    seconds = retry_after(headers)               # retry-after-ms, else retry-after
    error = not_json_error(502, headers)         # what to record for an HTML error page
    verdict = retry_verdict(status, headers, RETRYABLE_STATUSES)  # x-should-retry first

Small helpers the provider modules share, so each of them reads as the rules of its API.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from typing import Any

from apiproc.jsonio import loads
from apiproc.providers.base import Verdict

# Never wait longer than this on a server's word; a longer wait is a stuck run.
LONGEST_RETRY_AFTER = 600.0


def json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return loads(body)
    except ValueError:
        return None


def number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def count(value: Any) -> int:
    """A token count from a JSON field; 0 when it is missing or not an integer."""
    return value if type(value) is int else 0  # not a bool, which is an int too


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, else `retry-after`."""
    milliseconds = number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        seconds: float | None = milliseconds / 1000.0
    else:
        seconds = _retry_after_seconds(headers.get("retry-after"))
    return capped_wait(seconds)


def capped_wait(seconds: float | None) -> float | None:
    """A positive wait, at most LONGEST_RETRY_AFTER; None for no wait."""
    if seconds is None or seconds <= 0:
        return None
    return min(seconds, LONGEST_RETRY_AFTER)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    seconds = number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def not_json_error(status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    """The error recorded for an answer whose body is not the API's (a proxy's page)."""
    kind = headers.get("content-type", "unknown content type").split(";")[0]
    return {
        "type": "api_error",
        "message": f"HTTP {status} with a body that is not an API answer ({kind})",
    }


def from_the_api(status: int, error: Mapping[str, Any] | None) -> bool:
    """A 4xx error the API itself sent in its own shape: its missing rate-limit headers
    count toward discovery's fallback (a 413 comes from a proxy in front of the API)."""
    return 400 <= status < 500 and status != 413 and error is not None


def retry_verdict(status: int, headers: Mapping[str, str], retryable: frozenset[int]) -> Verdict:
    """What an error answer that does not stop the run means: the server's x-should-retry
    when it says, else whether the status is one worth retrying."""
    should_retry = headers.get("x-should-retry")
    if should_retry == "true":
        return Verdict.RETRY
    if should_retry == "false":
        return Verdict.PERMANENT
    if status in retryable or status >= 500:
        return Verdict.RETRY
    return Verdict.PERMANENT


def messages_problem(messages: Any, message_problem: Callable[[Any], str | None]) -> str | None:
    """Why a request's `messages` is not a non-empty list of sound messages, or None."""
    if messages is None:
        return "messages: Field required"
    if not isinstance(messages, list) or not messages:
        return "messages: must be a non-empty list"
    for index, message in enumerate(messages):
        problem = message_problem(message)
        if problem:
            return f"messages.{index}: {problem}"
    return None
