"""The simulated API's HTTP server: routes, request intake, and the documented responses.

    async with Simulator(SimulatorConfig(requests_per_minute=60)) as sim:
        async with aiohttp.ClientSession() as session:
            await session.post(sim.messages_url, json=body, headers=headers)

One ``Simulator`` owns all state (rate pools, prompt cache, counters, batches) on one
event loop.
Every endpoint is registered in ``Simulator._add_routes``; a handler reads the request with
the shared intake, then answers through ``_reply`` or ``_error`` so headers, the request id
and the traffic record are the same for every endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from aiohttp import web

from apiproc.simulator.batch_routes import BatchRoutes
from apiproc.simulator.batches import BatchRecord
from apiproc.simulator.cache import CachePlan, PromptCache
from apiproc.simulator.config import SeenRequest, SimulatorConfig, SimulatorStats, check_config
from apiproc.simulator.errors import ApiError
from apiproc.simulator.exchange import Exchange, new_id
from apiproc.simulator.faults import (
    INJECTED_RETRY_AFTER,
    MIDWAY_FAULTS,
    OVERLOADED_EVENT,
    PROXY_502_PAGE,
    draw_fault,
    hang_up,
)
from apiproc.simulator.generation import Generation, answer_key, generate
from apiproc.simulator.limits import (
    RatePool,
    Rejection,
    rate_limit_message,
    spend_cap_message,
    user_spend_limit_message,
)
from apiproc.simulator.models import MODELS, ModelSpec
from apiproc.simulator.openai_batches import OpenAIBatches
from apiproc.simulator.openai_chat import ChatCompletions
from apiproc.simulator.openai_files import OpenAIFiles
from apiproc.simulator.streaming import PING, EventStream, text_pieces
from apiproc.simulator.validation import Checked, parse_json, read_dialect, validate

MAX_BODY_BYTES = 32 * 1024 * 1024  # "32 MB" for Messages and Token Counting (§A.1)
SHUTDOWN_GRACE_SECONDS = 0.25


def _usage(plan: CachePlan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": plan.input_tokens,
        "cache_creation_input_tokens": plan.creation_tokens,
        "cache_read_input_tokens": plan.read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": plan.write_5m,
            "ephemeral_1h_input_tokens": plan.write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _streamed(checked: Checked) -> bool:
    return checked.body.get("stream") is True


def _message(checked: Checked, generation: Generation, usage: dict[str, Any]) -> dict[str, Any]:
    """The final Message, as a plain answer carries it and a stream assembles to."""
    return {
        "id": new_id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": checked.body["model"],
        "content": [{"type": "text", "text": generation.text}],
        "stop_reason": "max_tokens" if generation.clipped else "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def _cumulative(usage: dict[str, Any]) -> dict[str, Any]:
    """The usage a ``message_delta`` carries: the running totals (§A.4). A guess: the input
    figures come too (the docs' example shows only output_tokens; the SDK reads either)."""
    names = (
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    )
    return {name: usage[name] for name in names}


@dataclass(slots=True)
class _OutputMeter:
    """Charges a stream's output tokens to the output bucket as the account rules say."""

    pool: RatePool | None
    checked: Checked
    accounting: str
    total: int = 0

    def generated(self, tokens: int, now: float) -> None:
        self.total += tokens
        if self.pool is not None and self.accounting == "generated":
            self.pool.output.add(-tokens, now)

    def ended(self, now: float) -> None:
        """Hand back what max_tokens reserved beyond the tokens actually generated."""
        if self.pool is not None and self.accounting == "max_tokens":
            self.pool.output.add(self.checked.max_tokens - self.total, now)


class Simulator:
    """The fake API server; start it, point a client at ``messages_url``, read ``stats``.

    All state lives on one event loop; ``stats`` and ``seen`` may be read from another
    thread (see SimulatorThread) but not changed.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        check_config(self.config)
        self.stats = SimulatorStats()
        self.seen: list[SeenRequest] = []
        self.chance = random.Random(self.config.seed)  # faults and latency jitter
        self.org_id = str(uuid.UUID(int=random.Random(self.config.seed).getrandbits(128)))
        self._pools: dict[str, RatePool] = {}
        self._cache = PromptCache()
        self.accepted = 0
        self._in_flight = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.batches = BatchRoutes(self)  # the Message Batches endpoints and their state
        self._chat = ChatCompletions(self)
        self.openai_files = OpenAIFiles(self)
        self.openai_batches = OpenAIBatches(self, self.openai_files, self.batches.service)

    # -- lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        self._add_routes(app.router)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, backlog=1024)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening; requests still held (latency, stalls) are cut off shortly after."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the simulator is not started; call start() first")
        return f"http://{self.config.host}:{self._port}"

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/v1/messages"

    @property
    def chat_completions_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    def url_for(self, api: str) -> str:
        """The endpoint a client of `api` ("anthropic" or "openai") sends to."""
        return self.chat_completions_url if api == "openai" else self.messages_url

    @property
    def batch_record(self) -> list[BatchRecord]:
        """Every batch created, with its custom_ids (``GET /_sim/batches`` out of process)."""
        return self.batches.service.record

    async def batch_hook(self, event: str, detail: dict[str, Any]) -> bool:
        """Await the tests' hook at a point of a batch's life; True: drop the connection."""
        hook = self.config.batch_hook
        return False if hook is None else bool(await hook(event, detail))

    # -- endpoints

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """Every endpoint the simulator answers; the catch-all 404 must stay last."""
        router.add_post("/v1/messages", self._messages)
        router.add_post("/v1/messages/count_tokens", self._count_tokens)
        self.batches.add_to(router)
        router.add_post("/v1/chat/completions", self._chat.answer)
        self.openai_files.add_routes(router)
        self.openai_batches.add_routes(router)
        router.add_get("/_sim/stats", self._stats)
        router.add_post("/_sim/reset", self._reset)
        router.add_route("*", "/{tail:.*}", self._not_found)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        with self.in_flight():
            try:
                return await self._answer_messages(request)
            except ConnectionError:  # the client left mid-request; there is no one to answer
                return hang_up(request)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a request of a generation endpoint as in flight while it is answered."""
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1

    async def _answer_messages(self, request: web.Request) -> web.StreamResponse:
        exchange = self.begin(request, counted=True)
        try:
            checked = await self._read_checked(exchange, counting=False)
        except ApiError as error:
            return self._error(exchange, error)
        if self.spend_cap_reached():
            cap = ApiError(429, "rate_limit_error", spend_cap_message())
            return self._error(
                exchange, cap, details={"error_code": "enforced_spend_limit_reached"}
            )
        if self._reached(self.config.user_spend_limit_after):
            limit = ApiError(400, "invalid_request_error", user_spend_limit_message())
            return self._error(exchange, limit)
        fault = draw_fault(self.config, self.chance)
        if fault is not None:
            self.stats.faults_injected += 1
            if not (_streamed(checked) and fault in MIDWAY_FAULTS):
                return await self._inject(exchange, fault, checked.spec)
        return await self._serve(exchange, checked, midway=fault)

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        exchange = self.begin(request, counted=False)
        try:
            checked = await self._read_checked(exchange, counting=True)
        except ApiError as error:
            return self._error(exchange, error)
        return self._reply(exchange, 200, {"input_tokens": checked.prompt.total_tokens})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats.as_dict())

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self.stats = SimulatorStats(max_in_flight=self._in_flight)
        return web.json_response(self.stats.as_dict())

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        exchange = self.begin(request, counted=False)
        missing = ApiError(404, "not_found_error", "The requested resource could not be found.")
        return self._error(exchange, missing)

    # -- request intake

    def begin(self, request: web.Request, *, counted: bool) -> Exchange:
        received = time.time()
        if counted:
            self.stats.requests += 1
            if self.stats.first_request_at is None:
                self.stats.first_request_at = received
        return Exchange(request, received, new_id("req_011C", 20), counted)

    async def _read_checked(self, exchange: Exchange, *, counting: bool) -> Checked:
        """Steps 1-2: size, headers, JSON, body; raises ApiError for the error response."""
        raw = await self.read_body(exchange.request)
        self._check_auth(exchange.request)
        headers = exchange.request.headers
        dialect = read_dialect(
            headers.getall("anthropic-version", []), headers.getall("anthropic-beta", [])
        )
        body = parse_json(raw)
        exchange.body = body if isinstance(body, dict) else None
        model = exchange.body.get("model") if exchange.body is not None else None
        spec = MODELS.get(model) if isinstance(model, str) else None
        today = self._today()
        # Token counting has its own limits, so only Messages answers report the buckets;
        # a retired model is answered like an unknown one, without them.
        if spec is not None and not spec.retired_on(today) and not counting:
            exchange.pool = self._pool(spec)
        checked = validate(body, dialect, counting=counting, today=today)
        checked.raw = raw
        return checked

    async def read_body(self, request: web.Request) -> bytes:
        too_large = ApiError(
            413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
        )
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise too_large
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None

    def _check_auth(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if key is None and authorization[:7].lower() == "bearer ":
            key = authorization[7:].strip()
        expected = self.config.api_key
        if not key or (expected is not None and key != expected):
            raise ApiError(401, "authentication_error", "invalid x-api-key")

    def _pool(self, spec: ModelSpec) -> RatePool:
        pool = self._pools.get(spec.rate_pool)
        if pool is None:
            pool = RatePool.create(self.config, asyncio.get_running_loop().time())
            self._pools[spec.rate_pool] = pool
        return pool

    def _today(self) -> date:
        """The simulated API's date, which decides which models have retired."""
        return self.config.today or datetime.now(timezone.utc).date()

    def spend_cap_reached(self) -> bool:
        return self._reached(self.config.spend_limit_after)

    def _reached(self, spend_limit_after: int | None) -> bool:
        return spend_limit_after is not None and self.accepted >= spend_limit_after

    # -- faults

    async def _inject(self, exchange: Exchange, fault: str, spec: ModelSpec) -> web.StreamResponse:
        if fault == "429":
            message = rate_limit_message(self._pool(spec).requests, self.org_id, spec.id)
            error = ApiError(429, "rate_limit_error", message)
            return self._error(exchange, error, retry_after=INJECTED_RETRY_AFTER)
        if fault in ("529", "stream_error"):
            # Overloaded before a plain answer's headers went out: the error is the answer.
            return self._error(exchange, ApiError(529, "overloaded_error", "Overloaded"))
        if fault == "500":
            return self._error(exchange, ApiError(500, "api_error", "Internal server error"))
        if fault == "502":
            self.record(exchange, 502, None)
            return web.Response(status=502, text=PROXY_502_PAGE, content_type="text/html")
        self.record(exchange, 0, None)
        if fault == "stall":
            await asyncio.sleep(self.config.stall_seconds)
        return hang_up(exchange.request)

    # -- success path

    async def _serve(
        self, exchange: Exchange, checked: Checked, midway: str | None = None
    ) -> web.StreamResponse:
        """Admit under the rate limits, then answer; ``midway`` is a fault that strikes a
        streamed answer partway through."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        pool, spec = self._pool(checked.spec), checked.spec
        plan = self._cache.plan(checked.prompt, spec, started)
        charged_input = plan.input_tokens + plan.creation_tokens
        if spec.cache_reads_count_toward_itpm:
            charged_input += plan.read_tokens
        reserve = self.config.output_accounting == "max_tokens"
        output_need = checked.max_tokens if reserve else 1
        rejection = pool.admit(charged_input, output_need, started)
        if rejection is not None:
            return self._rate_limited(exchange, rejection, spec)
        if reserve:
            pool.output.add(-checked.max_tokens, started)
        self.accepted += 1
        self._cache.refresh(plan, started)
        key = answer_key(checked.body, checked.raw)
        generation = generate(self.config, key, checked.max_tokens, self.chance)
        if _streamed(checked):
            return await self._stream(exchange, checked, plan, generation, midway)
        await asyncio.sleep(generation.first_token_delay)
        self._cache.store(plan, started, loop.time())
        await asyncio.sleep(generation.generation_time)
        settled = generation.output_tokens - (checked.max_tokens if reserve else 0)
        pool.output.add(-settled, loop.time())
        message = _message(checked, generation, _usage(plan, generation.output_tokens))
        self._count_success(plan, generation)
        return self._reply(exchange, 200, message, usage=message["usage"])

    async def _stream(
        self,
        exchange: Exchange,
        checked: Checked,
        plan: CachePlan,
        generation: Generation,
        midway: str | None,
    ) -> web.StreamResponse:
        """The answer as server-sent events, its output tokens charged as they are generated."""
        loop = asyncio.get_running_loop()
        message = _message(checked, generation, _usage(plan, generation.output_tokens))
        output = _OutputMeter(exchange.pool, checked, self.config.output_accounting)
        try:
            stream = await EventStream.open(
                exchange.request, self._headers(exchange), self.config.ping_interval
            )
        except ConnectionError:  # the client left before the answer began
            output.ended(loop.time())
            self.record(exchange, 0, None)
            return hang_up(exchange.request)
        self.stats.streamed += 1
        try:
            complete = await self._send_events(stream, message, plan, generation, output, midway)
        except ConnectionError:  # the client hung up
            complete, midway = False, None
        output.ended(loop.time())
        if not complete:
            self.record(exchange, 200, None)
            if midway is not None:
                await self._break_stream(stream, midway)
            return stream.response
        self._count_success(plan, generation)
        self.record(exchange, 200, message["usage"])
        return stream.response

    async def _send_events(
        self,
        stream: EventStream,
        message: dict[str, Any],
        plan: CachePlan,
        generation: Generation,
        output: _OutputMeter,
        midway: str | None,
    ) -> bool:
        """The documented events in order; False when a midway fault stops them early."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        # A guess: message_start reports one output token, as the docs' examples show.
        opening = {**message, "content": [], "stop_reason": None, "usage": _usage(plan, 1)}
        stream.send("message_start", {"type": "message_start", "message": opening})
        block = {"type": "text", "text": ""}
        stream.send(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
        stream.send("ping", PING)  # where the docs' example stream has its first ping
        await stream.idle(generation.first_token_delay)
        self._cache.store(plan, started, loop.time())
        pieces = text_pieces(generation.text, generation.output_tokens)
        # A midway fault strikes once about half the text is out (always after some of it).
        fault_at = (len(pieces) + 1) // 2 if midway is not None else len(pieces)
        speed = self.config.output_tokens_per_second
        for tokens, text in pieces[:fault_at]:
            await stream.idle(tokens / speed if speed > 0 else 0.0)
            output.generated(tokens, loop.time())
            delta = {"type": "text_delta", "text": text}
            stream.send(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        if midway is not None:
            return False
        stream.send("content_block_stop", {"type": "content_block_stop", "index": 0})
        ending = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        usage = _cumulative(message["usage"])
        stream.send("message_delta", {"type": "message_delta", "delta": ending, "usage": usage})
        stream.send("message_stop", {"type": "message_stop"})
        await stream.close()
        return True

    async def _break_stream(self, stream: EventStream, fault: str) -> None:
        """A fault after the 200: an ``error`` event, or silence and then a cut connection."""
        if fault == "stall":
            with contextlib.suppress(ConnectionError):
                await stream.flush()  # what was generated goes out; then silence
            await asyncio.sleep(self.config.stall_seconds)
            stream.hang_up()
            return
        with contextlib.suppress(ConnectionError):
            stream.send("error", OVERLOADED_EVENT)
            await stream.close()

    def _count_success(self, plan: CachePlan, generation: Generation) -> None:
        stats = self.stats
        stats.succeeded += 1
        stats.input_tokens += plan.input_tokens
        stats.output_tokens += generation.output_tokens
        stats.cache_creation_input_tokens += plan.creation_tokens
        stats.cache_read_input_tokens += plan.read_tokens
        stats.cache_writes += plan.creation_tokens > 0
        stats.cache_reads += plan.read_tokens > 0

    def _rate_limited(
        self, exchange: Exchange, rejection: Rejection, spec: ModelSpec
    ) -> web.StreamResponse:
        self.stats.rate_limited += 1
        message = rate_limit_message(rejection.limit, self.org_id, spec.id)
        error = ApiError(429, "rate_limit_error", message)
        return self._error(exchange, error, retry_after=rejection.retry_after)

    # -- responses

    def _error(
        self,
        exchange: Exchange,
        error: ApiError,
        *,
        retry_after: int | None = None,
        details: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        body: dict[str, Any] = {"type": error.error_type, "message": error.message}
        if details is not None:
            body["details"] = details
        if error.status == 413:
            # Cloudflare answers this before the API: no request id, no rate-limit headers.
            self.record(exchange, 413, None, with_request_id=False)
            return web.json_response({"type": "error", "error": body}, status=413)
        payload = {"type": "error", "error": body, "request_id": exchange.request_id}
        extra = {"retry-after": str(retry_after)} if retry_after is not None else {}
        return self._reply(exchange, error.status, payload, extra=extra)

    def _reply(
        self,
        exchange: Exchange,
        status: int,
        payload: dict[str, Any],
        *,
        extra: dict[str, str] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> web.StreamResponse:
        headers = self._headers(exchange)
        headers.update(extra or {})
        return self.respond(exchange, status, payload, headers, usage)

    def respond(
        self,
        exchange: Exchange,
        status: int,
        payload: Any,
        headers: dict[str, str],
        usage: dict[str, Any] | None = None,
    ) -> web.StreamResponse:
        """Record the exchange and answer with `payload` as JSON; every endpoint ends here."""
        self.record(exchange, status, usage)
        return web.json_response(payload, status=status, headers=headers)

    def _headers(self, exchange: Exchange) -> dict[str, str]:
        """The headers of every API answer: request id, organisation, rate limits."""
        headers = {
            "request-id": exchange.request_id,
            "anthropic-organization-id": self.org_id,
        }
        if exchange.pool is not None:
            headers.update(exchange.pool.headers(asyncio.get_running_loop().time()))
        return headers

    def record(
        self,
        exchange: Exchange,
        status: int,
        usage: dict[str, Any] | None,
        *,
        with_request_id: bool = True,
    ) -> None:
        if exchange.counted:
            by_status = self.stats.by_status
            by_status[status] = by_status.get(status, 0) + 1
            if status:
                self.stats.last_response_at = time.time()
        if not self.config.record:
            return
        request = exchange.request
        names = {name.lower() for name in request.headers}
        headers = {name: ", ".join(request.headers.getall(name)) for name in names}
        rid = exchange.request_id if with_request_id else None
        seen = SeenRequest(
            exchange.received, request.path, status, headers, exchange.body, usage, rid
        )
        self.seen.append(seen)
