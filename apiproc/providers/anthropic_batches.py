"""The Anthropic Message Batches API behind the batch protocol.

    api = AnthropicBatches(provider, session)   # session carries the provider's headers
    info = await api.create(entries, size=api.framed_size(entry_bytes, count), tag="")
    async for item in api.results(await api.retrieve(info.id)): ...

Endpoints (reference §E.1): create `POST /v1/messages/batches` with `{"requests": [...]}`,
retrieve `GET .../{id}`, list `GET ...?limit&after_id` (most recent first), cancel
`POST .../{id}/cancel`, results `GET results_url` as JSONL. The create body is streamed
from the caller's entries with its exact length, so a batch of 100,000 requests is never
held in memory; result lines are split from the response stream as they arrive.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime, timezone
from typing import Any

import aiohttp

from apiproc.jsonio import dumps, loads
from apiproc.providers.anthropic import AnthropicProvider, parse_usage
from apiproc.providers.batch_http import BatchHttp
from apiproc.providers.batches import (
    CANCELED,
    ENDED,
    ERRORED,
    EXPIRED,
    SUCCEEDED,
    BatchCounts,
    BatchInfo,
    BatchItem,
    BatchLimits,
    BatchPage,
)

# "up to 100,000 Message requests or 256 MB, whichever comes first" (§E.2, 2026 §3.4). The
# schema's "1 - 10000 elements" contradicts the guide; guess: the guide's 100,000 holds.
MAX_REQUESTS = 100_000
# 256 MB read as 256,000,000 bytes (the smaller reading), less 5 % for safety.
MAX_BYTES = 243_200_000
# Guess: each request of a batch is a Messages request, so it keeps the 32 MB request limit.
MAX_REQUEST_BYTES = 32_000_000
BODY_HEAD = b'{"requests":['
BODY_TAIL = b"]}"
# Error types worth another attempt in a new batch; any other type is final. Guess: a type
# this list does not know is transient (errored requests are not billed, attempts bound it).
FINAL_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "billing_error",
        "request_too_large",
    }
)
_FRACTION = re.compile(r"\.(\d+)")


def batches_url(messages_url: str) -> str:
    """`.../v1/messages` -> `.../v1/messages/batches`."""
    base = messages_url.rstrip("/")
    if base.endswith("/batches"):
        return base
    return f"{base}/batches"


class AnthropicBatches:
    """Message Batches on an aiohttp session that already sends the provider's headers."""

    name = "anthropic"
    limits = BatchLimits(MAX_REQUESTS, MAX_BYTES, MAX_REQUEST_BYTES)

    def __init__(self, provider: AnthropicProvider, session: aiohttp.ClientSession) -> None:
        self._http = BatchHttp(provider, session, "the batches endpoint")
        self.endpoint = batches_url(provider.url)

    # ---- the batch input

    def entry(self, custom_id: str, params: dict[str, Any]) -> bytes:
        return dumps({"custom_id": custom_id, "params": params})

    def framed_size(self, entry_bytes: int, count: int) -> int:
        return len(BODY_HEAD) + entry_bytes + max(0, count - 1) + len(BODY_TAIL)

    # ---- endpoints

    async def create(self, entries: AsyncIterable[bytes], size: int, tag: str) -> BatchInfo:
        body = _framed(entries, size)
        headers = {"content-length": str(size)}
        return await self._call("POST", self.endpoint, data=body, headers=headers, creating=True)

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return await self._call("GET", f"{self.endpoint}/{batch_id}")

    async def list_page(self, cursor: str | None, limit: int) -> BatchPage:
        query: dict[str, str] = {"limit": str(limit)}
        if cursor:
            query["after_id"] = cursor
        payload = await self._http.json("GET", self.endpoint, params=query)
        batches = [batch_info(item) for item in payload.get("data") or []]
        more = bool(payload.get("has_more")) and bool(payload.get("last_id"))
        return BatchPage(batches, payload.get("last_id") if more else None)

    async def cancel(self, batch_id: str) -> BatchInfo:
        return await self._call("POST", f"{self.endpoint}/{batch_id}/cancel")

    async def results(self, info: BatchInfo) -> AsyncIterator[BatchItem]:
        url = info.results_url or f"{self.endpoint}/{info.id}/results"
        # The SDK asks for results with this Accept header (§E.1).
        async for line in self._http.lines(url, headers={"accept": "application/binary"}):
            yield result_item(loads(line))

    async def _call(self, method: str, url: str, **kwargs: Any) -> BatchInfo:
        return batch_info(await self._http.json(method, url, **kwargs))


async def _framed(entries: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """`{"requests":[e1,e2,...]}`, checked to be exactly the announced `size` bytes."""
    sent = len(BODY_HEAD)
    pending = [BODY_HEAD]
    first = True
    async for entry in entries:
        pending.append(entry if first else b"," + entry)
        sent += len(entry) + (0 if first else 1)
        first = False
        if sent > size:
            raise ValueError("the batch input grew while it was being sent")
        if len(pending) >= 256:
            yield b"".join(pending)
            pending.clear()
    pending.append(BODY_TAIL)
    if sent + len(BODY_TAIL) != size:
        raise ValueError("the batch input changed while it was being sent")
    yield b"".join(pending)


def batch_info(data: dict[str, Any]) -> BatchInfo:
    """A Message Batch object (§E.3) as the protocol's BatchInfo."""
    counts = data.get("request_counts") or {}
    return BatchInfo(
        id=str(data.get("id", "")),
        status=str(data.get("processing_status", "")),
        counts=BatchCounts(**{key: int(counts.get(key) or 0) for key in BatchCounts().as_dict()}),
        created_at=parse_time(data.get("created_at")) or 0.0,
        expires_at=parse_time(data.get("expires_at")),
        ended_at=parse_time(data.get("ended_at")),
        cancel_initiated_at=parse_time(data.get("cancel_initiated_at")),
        results_url=data.get("results_url") if data.get("processing_status") == ENDED else None,
        raw=data,
    )


def result_item(line: Any) -> BatchItem:
    """One results line (§E.4) as a BatchItem."""
    if not isinstance(line, dict) or not isinstance(line.get("result"), dict):
        raise ValueError("a results line without a result object")
    custom_id = str(line.get("custom_id", ""))
    result = line["result"]
    kind = result.get("type")
    if kind == SUCCEEDED:
        message = result.get("message") or {}
        return BatchItem(
            custom_id, SUCCEEDED, message=message, usage=parse_usage(message.get("usage"))
        )
    if kind == ERRORED:
        response = result.get("error") or {}
        error = response.get("error") if isinstance(response.get("error"), dict) else response
        error_type = str(error.get("type", "api_error"))
        return BatchItem(
            custom_id,
            ERRORED,
            error=error,
            request_id=response.get("request_id"),
            retryable=error_type not in FINAL_ERROR_TYPES,
        )
    if kind in (CANCELED, EXPIRED):
        return BatchItem(custom_id, kind, retryable=True)
    raise ValueError(f"a results line of unknown type {kind!r}")


def parse_time(value: Any) -> float | None:
    """RFC 3339 (any number of fraction digits, `Z` or an offset) to Unix seconds."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def format_time(seconds: float) -> str:
    """Unix seconds as RFC 3339 with microseconds and `Z`, as the API writes them."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
