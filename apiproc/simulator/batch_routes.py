"""The Message Batches endpoints of the simulated API, over the shared request intake.

    routes = BatchRoutes(simulator)     # holds the BatchService
    routes.add_to(router)               # before the catch-all 404

Each handler checks the key and the version headers like every endpoint, charges the
Batches API's own per-minute limit (429 with `retry-after` when it has no room), and
answers through the simulator's `_reply`/`_error`, so request ids and the traffic record
are the same as elsewhere. `GET /_sim/batches` returns every batch ever created with its
custom_ids, for tests and benchmarks in another process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from apiproc.simulator.batches import BatchService, QueueFull, results_stream
from apiproc.simulator.errors import ApiError, invalid
from apiproc.simulator.faults import hang_up
from apiproc.simulator.validation import Dialect, parse_json, read_dialect

if TYPE_CHECKING:
    from apiproc.simulator.exchange import Exchange
    from apiproc.simulator.server import Simulator

BATCHES = "/v1/messages/batches"
READ_CHUNK = 1 << 20


class BatchRoutes:
    """HTTP for the BatchService of one simulator."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.service = BatchService(simulator.config, lambda: simulator.base_url)

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post(BATCHES, self._create)
        router.add_get(BATCHES, self._list)
        router.add_get(BATCHES + "/{batch_id}", self._retrieve)
        router.add_delete(BATCHES + "/{batch_id}", self._delete)
        router.add_post(BATCHES + "/{batch_id}/cancel", self._cancel)
        router.add_get(BATCHES + "/{batch_id}/results", self._results)
        router.add_get("/_sim/batches", self._record)

    # ---- endpoints

    async def _create(self, request: web.Request) -> web.StreamResponse:
        exchange, refusal = self._begin(request)
        if refusal is not None:
            return refusal
        try:
            dialect = self._dialect(request)
            body = parse_json(await self._read_body(request))
            count = (
                len(body["requests"])
                if isinstance(body, dict) and isinstance(body.get("requests"), list)
                else 0
            )
            if await self._hook("create", {"count": count}):
                return hang_up(request)
            await asyncio.sleep(self.service.config.batch_create_latency / 2)
            batch = self.service.create(body, dialect)
        except QueueFull as full:
            return self.simulator._error(exchange, full, retry_after=full.retry_after)
        except ApiError as error:
            return self.simulator._error(exchange, error)
        if await self._hook("created", {"id": batch["id"], "count": count}):
            return hang_up(request)
        await asyncio.sleep(self.service.config.batch_create_latency / 2)
        return self.simulator._reply(exchange, 200, batch)

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        exchange, refusal = self._begin(request)
        if refusal is not None:
            return refusal
        batch_id = request.match_info["batch_id"]
        if await self._hook("retrieve", {"id": batch_id}):
            return hang_up(request)
        return self._answer(exchange, lambda: self.service.get(batch_id))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        exchange, refusal = self._begin(request)
        if refusal is not None:
            return refusal
        query = request.query

        def page() -> dict[str, Any]:
            limit = _limit(query.get("limit"))
            return self.service.page(query.get("before_id"), query.get("after_id"), limit)

        return self._answer(exchange, page)

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        exchange, refusal = self._begin(request)
        if refusal is not None:
            return refusal
        batch_id = request.match_info["batch_id"]
        return self._answer(exchange, lambda: self.service.cancel(batch_id))

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        exchange, refusal = self._begin(request)
        if refusal is not None:
            return refusal
        batch_id = request.match_info["batch_id"]

        def delete() -> dict[str, Any]:
            if self.service.get(batch_id)["processing_status"] != "ended":
                raise invalid(
                    f"Message Batch {batch_id} is still processing; cancel it before deleting."
                )
            self.service.forget(batch_id)
            return {"id": batch_id, "type": "message_batch_deleted"}

        return self._answer(exchange, delete)

    async def _results(self, request: web.Request) -> web.StreamResponse:
        exchange, refusal = self._begin(request)
        if refusal is not None:
            return refusal
        batch_id = request.match_info["batch_id"]
        try:
            lines = self.service.results(batch_id)
        except ApiError as error:
            return self.simulator._error(exchange, error)
        response = web.StreamResponse(
            status=200,
            # Guess: the results' content type; the SDK asks with Accept: application/binary.
            headers={"content-type": "application/binary", "request-id": exchange.request_id},
        )
        await response.prepare(request)
        half = len(lines) // 2
        await self._send(response, lines[:half])
        if await self._hook("results", {"id": batch_id, "sent": half}):
            return hang_up(request)
        await self._send(response, lines[half:])
        await response.write_eof()
        self.simulator.record(exchange, 200, None)
        return response

    async def _record(self, request: web.Request) -> web.StreamResponse:
        batches = [record.as_dict() for record in self.service.record]
        return web.json_response({"batches": batches, "counters": self.service.counters.as_dict()})

    # ---- plumbing

    def _begin(self, request: web.Request) -> tuple[Exchange, web.StreamResponse | None]:
        """The shared intake: key, version headers, then the Batches API's own RPM."""
        simulator = self.simulator
        exchange = simulator.begin(request, counted=False)
        try:
            simulator._check_auth(request)
            self._dialect(request)
        except ApiError as error:
            return exchange, simulator._error(exchange, error)
        wait = self.service.admit_call()
        if wait is not None:
            # Guess: the wording of a Batches API rate-limit 429.
            limited = ApiError(
                429,
                "rate_limit_error",
                "This request would exceed your organization's rate limit of "
                f"{self.service.config.batch_requests_per_minute:,.0f} requests per minute "
                "to the Message Batches API.",
            )
            return exchange, simulator._error(exchange, limited, retry_after=wait)
        return exchange, None

    def _dialect(self, request: web.Request) -> Dialect:
        headers = request.headers
        return read_dialect(
            headers.getall("anthropic-version", []), headers.getall("anthropic-beta", [])
        )

    def _answer(self, exchange: Exchange, make: Any) -> web.StreamResponse:
        try:
            payload = make()
        except ApiError as error:
            return self.simulator._error(exchange, error)
        return self.simulator._reply(exchange, 200, payload)

    async def _read_body(self, request: web.Request) -> bytes:
        """Up to the batch limit, past the app's 32 MB limit for Messages bodies."""
        most = self.service.config.batch_max_bytes
        too_large = ApiError(
            413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
        )
        if request.content_length is not None and request.content_length > most:
            raise too_large
        parts: list[bytes] = []
        size = 0
        while chunk := await request.content.read(READ_CHUNK):
            size += len(chunk)
            if size > most:
                raise too_large
            parts.append(chunk)
        return b"".join(parts)

    async def _send(self, response: web.StreamResponse, lines: list[bytes]) -> None:
        for piece in results_stream(lines):
            await response.write(piece)

    async def _hook(self, event: str, detail: dict[str, Any]) -> bool:
        hook = self.service.config.batch_hook
        if hook is None:
            return False
        return bool(await hook(event, detail))


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    try:
        limit = int(value)
    except ValueError:
        raise invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise invalid("limit: Input should be greater than or equal to 1 and at most 1000")
    return limit
