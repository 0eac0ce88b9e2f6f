"""Message Batches, simulated: batches that take time, end, and give results (§E).

    service = BatchService(config)
    batch = service.create(requests, dialect)            # ApiError for a refused batch
    service.get(batch_id)["processing_status"]           # "in_progress", later "ended"
    for line in service.results(batch_id): ...           # JSONL bytes, once ended

What the documentation says, and the simulator does:
- a batch holds 1 to 100,000 requests (the guide's figure; the reference schema's "1 -
  10000 elements" contradicts it, unconfirmed which is enforced: 100,000 is kept) and at
  most 256 MB; ids match `^[a-zA-Z0-9_-]{1,64}$` and are unique in the batch;
- the API version (and betas) are fixed when the batch is created, and each request is
  validated with them only when it is processed: a bad request becomes an `errored`
  result, not a 400 on create;
- `request_counts` stay all `processing` until the whole batch ends; `results_url` is set
  only then; `expires_at` is 24 hours after `created_at`; results are kept 29 days;
- cancel moves a batch to `canceling`, and it ends shortly after: the requests already
  processed keep their results, the rest are `canceled`;
- the Batches API has its own limits: requests per minute over all its endpoints, and
  requests waiting in the processing queue (2026 copy: 1,000 RPM, 200,000 queued).

Configurable for tests and benchmarks: the processing time, the share of results that
are `errored` for a transient reason or `expired`. The prompt cache of batches is kept
apart from the online one (the docs do not say they are shared), and what one batch writes
becomes readable only once it ends (a guess: a batch's requests run concurrently).

Every batch created is recorded with its ids (`record`), so a test can prove that no
request was ever in two unfinished batches at once.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from apiproc.simulator.cache import CachePlan, PromptCache
from apiproc.simulator.config import SimulatorConfig
from apiproc.simulator.errors import ApiError, invalid
from apiproc.simulator.exchange import new_id
from apiproc.simulator.generation import answer_key, generate
from apiproc.simulator.limits import Limit
from apiproc.simulator.validation import Dialect, validate

CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
EXPIRY_SECONDS = 24 * 3600
DAY = 24 * 3600
TRANSIENT_ERRORS = (
    ("api_error", "Internal server error"),
    ("overloaded_error", "Overloaded"),
)


def rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}Z"
    )


@dataclass(slots=True)
class BatchRecord:
    """A batch as created: for proving what was submitted, and when it was live."""

    id: str
    created_at: float
    custom_ids: tuple[str, ...]
    ended_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "custom_ids": list(self.custom_ids),
        }


@dataclass(slots=True)
class _Batch:
    id: str
    dialect: Dialect
    requests: list[tuple[str, bytes]] | None  # (custom_id, params as sent); dropped once ended
    count: int
    created_at: float
    processing_seconds: float
    record: BatchRecord
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    lines: list[bytes] = field(default_factory=list)  # result lines, once ended
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.ended_at is not None:
            return "ended"
        return "canceling" if self.cancel_initiated_at is not None else "in_progress"


@dataclass(slots=True)
class BatchCounters:
    """What the batch endpoints did, for tests and benchmarks."""

    created: int = 0
    requests: int = 0
    rate_limited: int = 0
    queue_full: int = 0
    results_downloads: int = 0
    results: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "queue_full": self.queue_full,
            "results_downloads": self.results_downloads,
            "results": dict(self.results),
        }


class BatchService:
    """Every batch of the simulated workspace, advanced lazily on each access."""

    def __init__(
        self,
        config: SimulatorConfig,
        base_url: Callable[[], str],
        now: Callable[[], float] = time.time,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.config = config
        self.base_url = base_url
        self.now = now
        self.today = today or (lambda: config.today or datetime.now(timezone.utc).date())
        self.record: list[BatchRecord] = []
        self.counters = BatchCounters()
        self._batches: dict[str, _Batch] = {}
        self._order: list[str] = []  # creation order; listed newest first
        self._chance = random.Random(f"{config.seed}-batches")
        self._cache = PromptCache()
        self._rate = Limit.create("requests", config.batch_requests_per_minute, None, now())

    # ---- the rate limit of the batch endpoints

    def admit_call(self) -> int | None:
        """Charge one call to the Batches API's RPM; the retry-after if it has no room."""
        now = self.now()
        if self._rate.seconds_until(1, now) > 0:
            self.counters.rate_limited += 1
            return self._rate.retry_after(1, now)
        self._rate.add(-1, now)
        return None

    # ---- endpoints

    def create(self, body: object, dialect: Dialect) -> dict[str, Any]:
        requests = _check_requests(body, self.config.batch_max_requests)
        now = self.now()
        self._refuse_if_queue_full(len(requests), now)
        batch_id = new_id("msgbatch_01", 22)
        custom_ids = tuple(custom_id for custom_id, _ in requests)
        record = BatchRecord(batch_id, now, custom_ids)
        batch = _Batch(
            batch_id,
            dialect,
            requests,
            len(requests),
            now,
            self.config.batch_processing_seconds,
            record,
        )
        self._batches[batch_id] = batch
        self._order.append(batch_id)
        self.record.append(record)
        self.counters.created += 1
        self.counters.requests += len(requests)
        return self._view(batch)

    def get(self, batch_id: str) -> dict[str, Any]:
        return self._view(self._find(batch_id))

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self._find(batch_id)
        if batch.status == "in_progress":  # guess: canceling an ended batch changes nothing
            batch.cancel_initiated_at = self.now()
        return self._view(batch)

    def page(self, before_id: str | None, after_id: str | None, limit: int) -> dict[str, Any]:
        """Most recent first; `after_id` pages towards older batches, `before_id` newer."""
        newest_first = list(reversed(self._order))
        if after_id is not None:
            start = self._position(newest_first, after_id) + 1
            chosen = newest_first[start : start + limit]
            more = start + limit < len(newest_first)
        elif before_id is not None:
            end = self._position(newest_first, before_id)
            chosen = newest_first[max(0, end - limit) : end]
            more = end - limit > 0
        else:
            chosen = newest_first[:limit]
            more = limit < len(newest_first)
        data = [self.get(batch_id) for batch_id in chosen]
        return {
            "data": data,
            "has_more": more,
            "first_id": chosen[0] if chosen else None,
            "last_id": chosen[-1] if chosen else None,
        }

    def forget(self, batch_id: str) -> None:
        """Delete an ended batch (its record stays, for the proof of what was submitted)."""
        self._batches.pop(batch_id, None)
        if batch_id in self._order:
            self._order.remove(batch_id)

    def results(self, batch_id: str) -> list[bytes]:
        batch = self._find(batch_id)
        self._advance(batch)
        if batch.ended_at is None:
            # Guess: the API refuses results before the batch ends (results_url is null).
            raise invalid(
                f"Message Batch {batch_id} has not finished processing; its results are "
                "available once processing_status is ended."
            )
        if self.now() >= batch.created_at + self.config.batch_results_days * DAY:
            raise ApiError(404, "not_found_error", f"The results of {batch_id} have expired.")
        self.counters.results_downloads += 1
        return batch.lines

    def queued(self, now: float | None = None) -> int:
        """Requests in batches that have not ended."""
        moment = self.now() if now is None else now
        total = 0
        for batch in self._batches.values():
            self._advance(batch, moment)
            if batch.ended_at is None:
                total += batch.count
        return total

    # ---- life of a batch

    def _find(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, "not_found_error", f"No Message Batch found with id {batch_id}.")
        self._advance(batch)
        return batch

    def _position(self, ids: list[str], batch_id: str) -> int:
        try:
            return ids.index(batch_id)
        except ValueError:
            raise ApiError(
                404, "not_found_error", f"No Message Batch found with id {batch_id}."
            ) from None

    def _refuse_if_queue_full(self, count: int, now: float) -> None:
        limit = self.config.batch_queue_limit
        if self.queued(now) + count <= limit:
            return
        self.counters.queue_full += 1
        ends = [self._ends_at(b) for b in self._batches.values() if b.ended_at is None]
        wait = max(1, math.ceil(min(ends, default=now + 1) - now))
        # Guess: the wording and retry-after of a full processing queue are not documented.
        raise QueueFull(
            f"This batch of {count:,} requests would exceed your organization's limit of "
            f"{limit:,} requests in the Message Batches processing queue. Wait for batches "
            "to finish, or submit fewer requests.",
            wait,
        )

    def _ends_at(self, batch: _Batch) -> float:
        if batch.cancel_initiated_at is not None:
            return min(
                batch.created_at + batch.processing_seconds,
                batch.cancel_initiated_at + self.config.batch_cancel_seconds,
            )
        return min(batch.created_at + batch.processing_seconds, batch.created_at + EXPIRY_SECONDS)

    def _advance(self, batch: _Batch, now: float | None = None) -> None:
        if batch.ended_at is not None:
            return
        moment = self.now() if now is None else now
        ends_at = self._ends_at(batch)
        if moment < ends_at:
            return
        self._process(batch, ends_at)

    def _process(self, batch: _Batch, ended_at: float) -> None:
        """Every request's result, at once: the batch ends."""
        assert batch.requests is not None
        processed = len(batch.requests)
        if batch.cancel_initiated_at is not None:
            elapsed = batch.cancel_initiated_at - batch.created_at
            share = 1.0 if batch.processing_seconds <= 0 else elapsed / batch.processing_seconds
            processed = min(processed, math.floor(len(batch.requests) * share))
        writes: list[tuple[CachePlan, float]] = []
        for index, (custom_id, raw) in enumerate(batch.requests):
            if index >= processed:
                result: dict[str, Any] = {"type": "canceled"}
            else:
                result = self._result(raw, batch.dialect, ended_at, writes)
            kind = result["type"]
            batch.counts[kind] = batch.counts.get(kind, 0) + 1
            self.counters.results[kind] = self.counters.results.get(kind, 0) + 1
            line = {"custom_id": custom_id, "result": result}
            batch.lines.append(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        for plan, started in writes:  # readable only once the whole batch has ended
            self._cache.store(plan, started, ended_at)
        self._chance.shuffle(batch.lines)  # "not guaranteed to be in the same order"
        batch.requests = None
        batch.ended_at = ended_at
        batch.record.ended_at = ended_at

    def _result(
        self, raw: bytes, dialect: Dialect, now: float, writes: list[tuple[CachePlan, float]]
    ) -> dict[str, Any]:
        draw = self._chance.random()
        if draw < self.config.batch_expired_rate:
            return {"type": "expired"}
        if draw < self.config.batch_expired_rate + self.config.batch_errored_rate:
            kind, message = self._chance.choice(TRANSIENT_ERRORS)
            return _errored(kind, message)
        try:
            checked = validate(
                json.loads(raw), dialect, counting=False, today=self.today(), in_batch=True
            )
        except ApiError as error:
            return _errored(error.error_type, error.message)
        checked.raw = raw
        plan = self._cache.plan(checked.prompt, checked.spec, now)
        self._cache.refresh(plan, now)
        if plan.writes:
            writes.append((plan, now))
        key = answer_key(checked.body, checked.raw)
        generation = generate(self.config, key, checked.max_tokens, self._chance)
        message = {
            "id": new_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": checked.body["model"],
            "content": [{"type": "text", "text": generation.text}],
            "stop_reason": "max_tokens" if generation.clipped else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": plan.input_tokens,
                "cache_creation_input_tokens": plan.creation_tokens,
                "cache_read_input_tokens": plan.read_tokens,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": plan.write_5m,
                    "ephemeral_1h_input_tokens": plan.write_1h,
                },
                "output_tokens": generation.output_tokens,
                "service_tier": "batch",  # §E.5: batch usage says so
            },
        }
        return {"type": "succeeded", "message": message}

    def _view(self, batch: _Batch) -> dict[str, Any]:
        """The batch object (§E.3)."""
        ended = batch.ended_at is not None
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            counts.update(batch.counts)
        else:
            counts["processing"] = batch.count
        archived = batch.created_at + self.config.batch_results_days * DAY
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": counts,
            "ended_at": rfc3339(batch.ended_at),
            "created_at": rfc3339(batch.created_at),
            "expires_at": rfc3339(batch.created_at + EXPIRY_SECONDS),
            "archived_at": rfc3339(archived) if self.now() >= archived else None,
            "cancel_initiated_at": rfc3339(batch.cancel_initiated_at),
            "results_url": f"{self.base_url()}/v1/messages/batches/{batch.id}/results"
            if ended
            else None,
        }


class QueueFull(ApiError):
    """A 429: the processing queue has no room for this batch."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(429, "rate_limit_error", message)
        self.retry_after = retry_after


def _errored(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": new_id("req_011C", 20),
        },
    }


def _check_requests(body: object, most: int) -> list[tuple[str, bytes]]:
    """The create body's requests, or the 400 that refuses the whole batch (§E.2)."""
    if not isinstance(body, dict):
        raise invalid("body: Input should be a valid dictionary")
    for key in body:
        if key != "requests":
            raise invalid(f"{key}: Extra inputs are not permitted")
    requests = body.get("requests")
    if requests is None:
        raise invalid("requests: Field required")
    if not isinstance(requests, list):
        raise invalid("requests: Input should be a valid list")
    if not requests:
        raise invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > most:
        raise invalid(
            f"requests: List should have at most {most} items after validation, not {len(requests)}"
        )
    checked: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for index, entry in enumerate(requests):
        custom_id, params = _check_entry(entry, f"requests.{index}")
        if custom_id in seen:
            # Guess: the duplicate-id message is not documented.
            raise invalid(f"requests: custom_id '{custom_id}' is used by more than one request")
        seen.add(custom_id)
        checked.append((custom_id, json.dumps(params, separators=(",", ":")).encode()))
    return checked


def _check_entry(entry: object, path: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(entry, dict):
        raise invalid(f"{path}: Input should be a valid dictionary")
    for key in entry:
        if key not in ("custom_id", "params"):
            raise invalid(f"{path}.{key}: Extra inputs are not permitted")
    custom_id = entry.get("custom_id")
    if custom_id is None:
        raise invalid(f"{path}.custom_id: Field required")
    if not isinstance(custom_id, str):
        raise invalid(f"{path}.custom_id: Input should be a valid string")
    if len(custom_id) > 64:
        raise invalid(f"{path}.custom_id: String should have at most 64 characters")
    if not custom_id or not set(custom_id) <= _ID_CHARS:
        raise invalid(f"{path}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'")
    params = entry.get("params")
    if params is None:
        raise invalid(f"{path}.params: Field required")
    if not isinstance(params, dict):
        raise invalid(f"{path}.params: Input should be a valid dictionary")
    return custom_id, params


def results_stream(lines: list[bytes], chunk: int = 256) -> Iterator[bytes]:
    """The results file in pieces of `chunk` lines."""
    for start in range(0, len(lines), chunk):
        yield b"".join(lines[start : start + chunk])
