"""The OpenAI Batch API behind the batch protocol: a file upload, a batch, two result files.

    api = OpenAIBatches(provider, session)      # session carries the provider's headers
    info = await api.create(entries, size=api.framed_size(entry_bytes, count), tag="job-3")
    async for item in api.results(await api.retrieve(info.id)): ...

Endpoints (shared/reference/anthropic-api.md §H.3): the batch input is a JSONL file of
`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}` lines, uploaded
with `POST /files` (`purpose=batch`, multipart, streamed with its exact length); then
`POST /batches` with `{input_file_id, endpoint, completion_window: "24h", metadata}`;
`GET /batches/{id}`, `GET /batches?limit&after` (most recent first), `POST
/batches/{id}/cancel`; the results are the output file and the error file, read with
`GET /files/{id}/content`, line by line as they arrive.

The run's tag goes in the batch's `metadata`, so a batch whose creation was never
confirmed is found again without doubt. A batch whose file did not validate (`failed`)
reports its errors by line: the input file is read back to name the request of each
line, and the requests on good lines go again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp

from apiproc.jsonio import dumps, loads
from apiproc.providers.base import Verdict
from apiproc.providers.batches import (
    CANCELED,
    CANCELING,
    ENDED,
    ERRORED,
    EXPIRED,
    IN_PROGRESS,
    SUCCEEDED,
    BatchApiError,
    BatchCounts,
    BatchInfo,
    BatchItem,
    BatchLimits,
    BatchPage,
)
from apiproc.providers.openai import OpenAIProvider, api_error, base_url, parse_usage

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
# "up to 50,000 requests, and can be up to 200 MB in size", "one model per file" (§H.3);
# 200 MB read as 200,000,000 bytes, less 5 % for safety.
MAX_REQUESTS = 50_000
MAX_BYTES = 190_000_000
MAX_REQUEST_BYTES = MAX_BYTES
TAG_KEY = "apiproc_tag"
STATUS = {
    "validating": IN_PROGRESS,
    "in_progress": IN_PROGRESS,
    "finalizing": IN_PROGRESS,
    "cancelling": CANCELING,
    "completed": ENDED,
    "failed": ENDED,
    "expired": ENDED,
    "cancelled": ENDED,
}
COUNTS = ("total", "completed", "failed")
ENDED_TIMES = ("completed_at", "failed_at", "expired_at", "cancelled_at")
RETRYABLE_STATUSES = frozenset({408, 409, 429})
FINAL_CODES = frozenset({"insufficient_quota"})
# What an unprocessed request's error code says became of it.
UNPROCESSED = {"batch_expired": EXPIRED, "batch_cancelled": CANCELED}
LINE_CHUNK = 1 << 16


class OpenAIBatches:
    """The OpenAI Batch API on an aiohttp session that already sends the provider's key."""

    name = "openai"
    limits = BatchLimits(MAX_REQUESTS, MAX_BYTES, MAX_REQUEST_BYTES, one_model=True)

    def __init__(self, provider: OpenAIProvider, session: aiohttp.ClientSession) -> None:
        self._provider = provider
        self._session = session
        self.base = base_url(provider.url)
        self.endpoint = f"{self.base}/batches"

    # ---- the batch input

    def entry(self, custom_id: str, params: dict[str, Any]) -> bytes:
        return dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": params})

    def framed_size(self, entry_bytes: int, count: int) -> int:
        return entry_bytes + count  # one newline after each line

    # ---- endpoints

    async def create(self, entries: AsyncIterable[bytes], size: int, tag: str) -> BatchInfo:
        file_id = await self._upload(entries, size, tag)
        payload = {
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": COMPLETION_WINDOW,
            "metadata": {TAG_KEY: tag},
        }
        return batch_info(await self._json("POST", self.endpoint, json=payload, creating=True))

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return batch_info(await self._json("GET", f"{self.endpoint}/{batch_id}"))

    async def list_page(self, cursor: str | None, limit: int) -> BatchPage:
        query = {"limit": str(min(limit, 100))}
        if cursor:
            query["after"] = cursor
        payload = await self._json("GET", self.endpoint, params=query)
        batches = [batch_info(item) for item in payload.get("data") or []]
        more = bool(payload.get("has_more")) and bool(payload.get("last_id"))
        return BatchPage(batches, payload.get("last_id") if more else None)

    async def cancel(self, batch_id: str) -> BatchInfo:
        return batch_info(await self._json("POST", f"{self.endpoint}/{batch_id}/cancel"))

    async def results(self, info: BatchInfo) -> AsyncIterator[BatchItem]:
        raw = info.raw
        if raw.get("status") == "failed":
            async for item in self._refused_lines(info):
                yield item
            return
        for file_id in (raw.get("output_file_id"), raw.get("error_file_id")):
            if file_id:
                async for line in self._file_lines(str(file_id)):
                    yield result_item(loads(line))

    # ---- plumbing

    async def _upload(self, entries: AsyncIterable[bytes], size: int, tag: str) -> str:
        boundary = "apiproc-" + secrets.token_hex(12)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{tag}.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {
            "content-type": f"multipart/form-data; boundary={boundary}",
            "content-length": str(len(head) + size + len(tail)),
        }
        body = _multipart(head, entries, size, tail)
        # No batch exists yet whatever happens here: a failed upload is never uncertain.
        uploaded = await self._json("POST", f"{self.base}/files", data=body, headers=headers)
        file_id = uploaded.get("id")
        if not isinstance(file_id, str):
            raise BatchApiError("the upload answered without a file id", verdict=Verdict.RETRY)
        return file_id

    async def _refused_lines(self, info: BatchInfo) -> AsyncIterator[BatchItem]:
        """A batch whose file failed validation: its errors by request, read back from
        the input file; the requests on good lines go again."""
        errors = (info.raw.get("errors") or {}).get("data") or []
        by_line = {error.get("line"): error for error in errors if isinstance(error, dict)}
        general = [error for error in errors if isinstance(error, dict) and not error.get("line")]
        number = 0
        async for line in self._file_lines(str(info.raw.get("input_file_id"))):
            number += 1
            entry = loads(line)
            custom_id = str(entry.get("custom_id", "")) if isinstance(entry, dict) else ""
            problem = by_line.get(number) or (general[0] if general else None)
            if problem is None:
                yield BatchItem(custom_id, ERRORED, error=_refusal_error(None), retryable=True)
            else:
                yield BatchItem(custom_id, ERRORED, error=_refusal_error(problem))

    async def _file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        url = f"{self.base}/files/{file_id}/content"
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    raise self._refusal(response.status, response.headers, await response.read())
                async for line in _lines(response.content):
                    yield line
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise _network_error(error, uncertain=False) from None

    async def _json(
        self, method: str, url: str, *, creating: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        try:
            async with self._session.request(method, url, **kwargs) as response:
                payload = await response.read()
                if response.status != 200:
                    raise self._refusal(response.status, response.headers, payload, creating)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise _network_error(error, uncertain=creating) from None
        try:
            parsed = loads(payload)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise BatchApiError(
                "the batch endpoint answered 200 with a body that is not a JSON object",
                verdict=Verdict.RETRY,
                status=200,
                uncertain=creating,
            )
        return parsed

    def _refusal(
        self, status: int, headers: Any, payload: bytes, creating: bool = False
    ) -> BatchApiError:
        outcome = self._provider.classify(status, headers, payload)
        error = outcome.error or {}
        message = f"HTTP {status} {error.get('type', 'error')}: {error.get('message', '')}"
        return BatchApiError(
            message,
            verdict=outcome.verdict,
            status=status,
            error=error,
            retry_after=outcome.retry_after,
            uncertain=creating and status >= 500,
        )


def batch_info(data: dict[str, Any]) -> BatchInfo:
    """An OpenAI batch object as the protocol's BatchInfo."""
    status = STATUS.get(str(data.get("status")), IN_PROGRESS)
    counts = data.get("request_counts") or {}
    total, completed, failed = (
        int(counts.get(key) or 0) for key in ("total", "completed", "failed")
    )
    ended_at = next(
        (
            data[key]
            for key in ("completed_at", "failed_at", "expired_at", "cancelled_at")
            if data.get(key)
        ),
        None,
    )
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    output = data.get("output_file_id") or data.get("error_file_id")
    return BatchInfo(
        id=str(data.get("id", "")),
        status=status,
        counts=BatchCounts(
            processing=0 if status == ENDED else max(0, total - completed - failed),
            succeeded=completed,
            errored=failed,
        ),
        created_at=float(data.get("created_at") or 0),
        expires_at=_seconds(data.get("expires_at")),
        ended_at=_seconds(ended_at),
        cancel_initiated_at=_seconds(data.get("cancelling_at")),
        results_url=str(output) if status == ENDED and output else None,
        tag=metadata.get(TAG_KEY),
        raw=data,
    )


def result_item(line: Any) -> BatchItem:
    """One line of the output or error file as a BatchItem."""
    if not isinstance(line, dict):
        raise ValueError("a result line that is not a JSON object")
    custom_id = str(line.get("custom_id", ""))
    response = line.get("response")
    if isinstance(response, dict):
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        request_id = response.get("request_id")
        if status == 200 and isinstance(body, dict):
            return BatchItem(
                custom_id,
                SUCCEEDED,
                message=body,
                request_id=request_id,
                usage=parse_usage(body.get("usage")),
            )
        error = api_error(body) or {"type": "api_error", "message": f"HTTP {status}"}
        transient = status in RETRYABLE_STATUSES or status >= 500
        return BatchItem(
            custom_id,
            ERRORED,
            error=error,
            request_id=request_id,
            retryable=transient and error.get("code") not in FINAL_CODES,
        )
    error = line.get("error") if isinstance(line.get("error"), dict) else {}
    code = str(error.get("code") or "")
    if code in UNPROCESSED:
        return BatchItem(custom_id, UNPROCESSED[code], retryable=True)
    # Guess: another request-level error without a response is worth another attempt.
    message = str(error.get("message", ""))
    return BatchItem(
        custom_id, ERRORED, error={"type": code or "api_error", "message": message}, retryable=True
    )


def _refusal_error(problem: dict[str, Any] | None) -> dict[str, Any]:
    if problem is None:
        return {
            "type": "batch_failed",
            "message": "the batch failed to validate because of other lines; sent again",
        }
    return {
        "type": "invalid_request_error",
        "code": problem.get("code"),
        "message": str(problem.get("message", "")),
    }


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value else None


async def _multipart(
    head: bytes, entries: AsyncIterable[bytes], size: int, tail: bytes
) -> AsyncIterator[bytes]:
    """The upload body: the file part is the entries, one per line, exactly `size` bytes."""
    yield head
    sent = 0
    pending: list[bytes] = []
    async for entry in entries:
        pending.append(entry + b"\n")
        sent += len(entry) + 1
        if sent > size:
            raise ValueError("the batch input grew while it was being sent")
        if len(pending) >= 256:
            yield b"".join(pending)
            pending.clear()
    if sent != size:
        raise ValueError("the batch input changed while it was being sent")
    pending.append(tail)
    yield b"".join(pending)


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Non-empty lines of a response, however long (aiohttp's readline caps line length)."""
    tail = b""
    async for chunk in stream.iter_chunked(LINE_CHUNK):
        parts = (tail + chunk).split(b"\n")
        tail = parts.pop()
        for part in parts:
            if part.strip():
                yield part
    if tail.strip():
        yield tail


def _network_error(error: BaseException, uncertain: bool) -> BatchApiError:
    text = f"{type(error).__name__}: {error}".rstrip(": ")
    kind = "timeout_error" if isinstance(error, asyncio.TimeoutError) else "connection_error"
    return BatchApiError(
        f"no answer from the batch endpoint ({text})",
        verdict=Verdict.RETRY,
        error={"type": kind, "message": text},
        uncertain=uncertain,
    )
