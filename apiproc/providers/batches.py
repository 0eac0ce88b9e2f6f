"""The batch protocol: what apiproc needs of any provider's asynchronous batch service.

    api: BatchApi = batch_api(provider, session)
    info = await api.create(entries, size=framed, tag="job-3")   # entries: async bytes
    info = await api.retrieve(info.id)                           # poll until info.ended
    async for item in api.results(info): ...                     # one BatchItem per request

A batch service takes many requests at once, works on them in its own time and gives
back one result per request, matched by `custom_id`. The batch runner (`apiproc.batch`)
speaks only the types defined here; each provider module maps its API onto them: how a
request is written into the batch input and framed, the batch object, its paging, the
result lines and which errored results are worth another attempt. This module imports
nothing from apiproc but the base types, so dependencies point into it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from apiproc.providers.base import Usage, Verdict

# Processing states, whatever the provider calls them.
IN_PROGRESS = "in_progress"
CANCELING = "canceling"
ENDED = "ended"

# What became of one request of a batch.
SUCCEEDED = "succeeded"
ERRORED = "errored"
CANCELED = "canceled"
EXPIRED = "expired"
ITEM_KINDS = (SUCCEEDED, ERRORED, CANCELED, EXPIRED)


@dataclass(slots=True, frozen=True)
class BatchLimits:
    """What one batch may hold, with the margin already taken off."""

    max_requests: int
    max_bytes: int  # the framed batch input (the create body or the uploaded file)
    max_request_bytes: int  # one request's entry
    one_model: bool = False  # a batch may hold the requests of one model only


@dataclass(slots=True)
class BatchCounts:
    """Requests of a batch by state; `processing` until the provider says otherwise."""

    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired

    def as_dict(self) -> dict[str, int]:
        return {
            "processing": self.processing,
            "succeeded": self.succeeded,
            "errored": self.errored,
            "canceled": self.canceled,
            "expired": self.expired,
        }


@dataclass(slots=True)
class BatchInfo:
    """One batch as the provider reports it; times are Unix seconds."""

    id: str
    status: str  # IN_PROGRESS, CANCELING or ENDED
    counts: BatchCounts
    created_at: float
    expires_at: float | None = None
    ended_at: float | None = None
    cancel_initiated_at: float | None = None
    results_url: str | None = None  # set once results can be downloaded
    tag: str | None = None  # the caller's tag, where the provider keeps one (not Anthropic)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ended(self) -> bool:
        return self.status == ENDED


@dataclass(slots=True)
class BatchPage:
    """One page of the account's batches, most recent first."""

    batches: list[BatchInfo]
    next_cursor: str | None  # None: no further page


@dataclass(slots=True)
class BatchItem:
    """One request's result from a batch."""

    custom_id: str
    kind: str  # one of ITEM_KINDS
    message: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # the API's error object: {"type", "message", ...}
    request_id: str | None = None
    usage: Usage | None = None
    retryable: bool = False  # errored for a transient reason: another attempt may succeed


class BatchApiError(Exception):
    """A batch endpoint refused or failed a call.

    `verdict` says what to do (RETRY, PERMANENT, FATAL); `uncertain` is set when the call
    may have taken effect all the same (a 5xx, a timeout, a dropped connection), which
    matters for create: a batch may exist that the caller never heard of.
    """

    def __init__(
        self,
        message: str,
        *,
        verdict: Verdict,
        status: int | None = None,
        error: dict[str, Any] | None = None,
        retry_after: float | None = None,
        uncertain: bool = False,
    ) -> None:
        super().__init__(message)
        self.verdict = verdict
        self.status = status
        self.error = error or {}
        self.retry_after = retry_after
        self.uncertain = uncertain

    @property
    def error_type(self) -> str:
        return str(self.error.get("type", "api_error"))


class BatchApi(Protocol):
    """One provider's batch service on one HTTP session."""

    name: str
    limits: BatchLimits
    endpoint: str  # where batches are created, to tell accounts and servers apart

    def entry(self, custom_id: str, params: dict[str, Any]) -> bytes:
        """One request as the batch input holds it."""

    def framed_size(self, entry_bytes: int, count: int) -> int:
        """Bytes of the batch input holding `count` entries of `entry_bytes` in all."""

    async def create(self, entries: AsyncIterable[bytes], size: int, tag: str) -> BatchInfo:
        """Create a batch of the entries (exactly `size` bytes once framed)."""

    async def retrieve(self, batch_id: str) -> BatchInfo:
        """The batch's current state."""

    async def list_page(self, cursor: str | None, limit: int) -> BatchPage:
        """A page of the account's batches, most recent first; `cursor` from the last page."""

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Ask the provider to cancel the batch; it ends once what is running finishes."""

    def results(self, info: BatchInfo) -> AsyncIterator[BatchItem]:
        """The ended batch's results, streamed (in no particular order)."""
