"""The HTTP side of a batch service, shared by every provider's: JSON calls, long line
streams, and the BatchApiError they raise.

    http = BatchHttp(provider, session, "the batches endpoint")
    payload = await http.json("POST", url, creating=True, data=body, headers=headers)
    async for line in http.lines(results_url, headers={"accept": "application/binary"}): ...

A refusal is classified by the provider's own rules (retry, permanent, fatal); a call
that got no answer is retried, and for a create it is uncertain: the batch may exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from apiproc.jsonio import loads
from apiproc.providers.base import Provider, Verdict
from apiproc.providers.batches import BatchApiError

LINE_CHUNK = 1 << 16


class BatchHttp:
    """Calls to one batch service over a session that already sends the provider's headers."""

    def __init__(self, provider: Provider, session: aiohttp.ClientSession, name: str) -> None:
        self.provider = provider
        self.session = session
        self.name = name  # "the batches endpoint", as error messages say it

    async def json(
        self, method: str, url: str, *, creating: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """The JSON object a 200 answer holds; anything else raises BatchApiError."""
        try:
            async with self.session.request(method, url, **kwargs) as response:
                payload = await response.read()
                if response.status != 200:
                    raise self.refusal(response.status, response.headers, payload, creating)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self.no_answer(error, uncertain=creating) from None
        try:
            parsed = loads(payload)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise BatchApiError(
                f"{self.name} answered 200 with a body that is not a JSON object",
                verdict=Verdict.RETRY,
                status=200,
                uncertain=creating,
            )
        return parsed

    async def lines(self, url: str, **kwargs: Any) -> AsyncIterator[bytes]:
        """The non-empty lines of a GET's answer, however long (aiohttp's readline caps a
        line's length)."""
        try:
            async with self.session.get(url, **kwargs) as response:
                if response.status != 200:
                    raise self.refusal(response.status, response.headers, await response.read())
                tail = b""
                async for chunk in response.content.iter_chunked(LINE_CHUNK):
                    parts = (tail + chunk).split(b"\n")
                    tail = parts.pop()
                    for part in parts:
                        if part.strip():
                            yield part
                if tail.strip():
                    yield tail
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self.no_answer(error, uncertain=False) from None

    def refusal(
        self, status: int, headers: Mapping[str, str], payload: bytes, creating: bool = False
    ) -> BatchApiError:
        outcome = self.provider.classify(status, headers, payload)
        error = outcome.error or {}
        message = f"HTTP {status} {error.get('type', 'error')}: {error.get('message', '')}"
        return BatchApiError(
            message,
            verdict=outcome.verdict,
            status=status,
            error=error,
            retry_after=outcome.retry_after,
            # A 5xx may come after the batch was made; a 4xx is a refusal.
            uncertain=creating and status >= 500,
        )

    def no_answer(self, error: BaseException, uncertain: bool) -> BatchApiError:
        text = f"{type(error).__name__}: {error}".rstrip(": ")
        kind = "timeout_error" if isinstance(error, asyncio.TimeoutError) else "connection_error"
        return BatchApiError(
            f"no answer from {self.name} ({text})",
            verdict=Verdict.RETRY,
            error={"type": kind, "message": text},
            uncertain=uncertain,
        )
