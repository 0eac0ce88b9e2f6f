"""The simulated OpenAI Batch API: batches of chat completions over uploaded files.

    batches = OpenAIBatches(simulator, files)
    batches.add_routes(router)   # POST/GET /v1/batches, GET /v1/batches/{id}, POST .../cancel

What it follows (shared/reference/anthropic-api.md §H.3):
* A batch is created from an uploaded file (`purpose` `batch`) of lines
  `{"custom_id", "method": "POST", "url", "body"}`, with `endpoint` and
  `completion_window: "24h"`; at most 50,000 requests and 200 MB, one model per file.
* Its status goes `validating` -> `in_progress` -> `finalizing` -> `completed` (or
  `failed` when the file does not validate, `expired` when some requests ran out of time,
  `cancelling` -> `cancelled`); timestamps are Unix seconds; `request_counts` are
  `{total, completed, failed}`.
* Results are two files, in no particular order: the output file holds
  `{"id", "custom_id", "response": {"status_code": 200, "request_id", "body"}, "error": null}`
  lines, the error file the failed requests (a non-200 `response`) and the expired ones
  (`"response": null, "error": {"code": "batch_expired", ...}`).
* The batch pool is apart from the online limits.

A file that does not validate fails the whole batch with one error per bad line (`code`,
`message`, `line`), as llama-stack's reference implementation reports them; the codes are
guesses modelled on it. Configurable: the processing time, and the shares of requests that
fail for a transient reason (a 500 `server_error`) or expire (`batch_errored_rate`,
`batch_expired_rate`). Every batch created is recorded with its ids in the simulator's
`batch_record` (beside the Message Batches), so a test can prove that no request ran in
two batches at once; `batch_hook` is awaited at the same points of a batch's life
("create", "created", "retrieve", "results").
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from apiproc.simulator.batches import BatchRecord, BatchService
from apiproc.simulator.exchange import Exchange, new_id
from apiproc.simulator.faults import hang_up
from apiproc.simulator.generation import generate
from apiproc.simulator.openai_chat import (
    ChatError,
    ceiling,
    chat_completion,
    check_body,
    key_problem,
    prompt_tokens,
)
from apiproc.simulator.openai_files import OpenAIFiles, StoredFile

if TYPE_CHECKING:
    from apiproc.simulator.server import Simulator

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
WINDOW_SECONDS = 24 * 3600
MAX_REQUESTS = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024
VALIDATING_SHARE = 0.1  # of the processing time, spent validating
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
# Guess: what an unprocessed request of a cancelled batch gets.
CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
TRANSIENT_MESSAGE = "The server had an error while processing your request. Sorry about that!"


@dataclass(slots=True)
class BatchLine:
    custom_id: str
    body: dict[str, Any]
    raw: bytes


@dataclass(slots=True)
class SimBatch:
    """One batch and its life; results are made when it ends."""

    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created_at: float
    lines: list[BatchLine]
    errors: list[dict[str, Any]]  # validation errors: the batch fails
    processing_seconds: float
    status: str = "validating"
    cancelling_at: float | None = None
    ended_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    times: dict[str, int] = field(default_factory=dict)
    record: BatchRecord | None = None

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": COMPLETION_WINDOW,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "expires_at": int(self.created_at) + WINDOW_SECONDS,
            **{
                f"{name}_at": self.times.get(name)
                for name in (
                    "in_progress",
                    "finalizing",
                    "completed",
                    "failed",
                    "expired",
                    "cancelling",
                    "cancelled",
                )
            },
            "request_counts": {
                "total": 0 if self.errors else len(self.lines),
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


class OpenAIBatches:
    """The batches of one simulator."""

    def __init__(self, simulator: Simulator, files: OpenAIFiles, service: BatchService) -> None:
        self.sim = simulator
        self.files = files
        self.batches: dict[str, SimBatch] = {}
        # Shared with the Message Batches: every batch ever created, and what became of them.
        self.record = service.record
        self.counters = service.counters

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/batches", self._create)
        router.add_get("/v1/batches", self._list)
        router.add_get("/v1/batches/{batch_id}", self._retrieve)
        router.add_post("/v1/batches/{batch_id}/cancel", self._cancel)

    # ---- endpoints

    async def _create(self, request: web.Request) -> web.StreamResponse:
        exchange = self.sim.begin(request, counted=False)
        refusal = key_problem(request, self.sim.config.api_key)
        if refusal is not None:
            return self._error(exchange, refusal)
        try:
            params = await request.json()
        except ValueError:
            return self._error(exchange, ChatError(400, "The body must be a JSON object."))
        exchange.body = params if isinstance(params, dict) else None
        if await self.sim.batch_hook("create", {"params": params}):
            return hang_up(request)
        try:
            batch = self._new_batch(params if isinstance(params, dict) else {})
        except ChatError as error:
            return self._error(exchange, error)
        if await self.sim.batch_hook("created", {"id": batch.id, "count": len(batch.lines)}):
            return hang_up(request)
        return self._answer(exchange, batch)

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        exchange = self.sim.begin(request, counted=False)
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return self._missing(exchange, request.match_info["batch_id"])
        if await self.sim.batch_hook("retrieve", {"id": batch.id}):
            return hang_up(request)
        self._advance(batch)
        return self._answer(exchange, batch)

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        exchange = self.sim.begin(request, counted=False)
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return self._missing(exchange, request.match_info["batch_id"])
        self._advance(batch)
        if batch.status in ENDED or batch.status == "cancelling":
            if batch.status != "cancelled":
                message = f"Cannot cancel a batch with status '{batch.status}'."
                return self._error(exchange, ChatError(409, message))
            return self._answer(exchange, batch)
        now = time.time()
        batch.status = "cancelling"
        batch.cancelling_at = now
        batch.times["cancelling"] = int(now)
        return self._answer(exchange, batch)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        exchange = self.sim.begin(request, counted=False)
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
        ordered = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after is not None:
            ids = [batch.id for batch in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        page = ordered[:limit]
        for batch in page:
            self._advance(batch)
        payload = {
            "object": "list",
            "data": [batch.object() for batch in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(ordered) > limit,
        }
        return self.sim.respond(exchange, 200, payload, self.files.headers(exchange))

    # ---- a batch's life

    def _new_batch(self, params: dict[str, Any]) -> SimBatch:
        if params.get("completion_window") != COMPLETION_WINDOW:
            raise ChatError(
                400,
                f"Invalid value for 'completion_window': expected '{COMPLETION_WINDOW}'.",
                param="completion_window",
                code="invalid_value",
            )
        if params.get("endpoint") != ENDPOINT:
            raise ChatError(
                400,
                f"Invalid value for 'endpoint': this simulator serves only '{ENDPOINT}'.",
                param="endpoint",
                code="invalid_value",
            )
        stored = self.files.files.get(str(params.get("input_file_id")))
        if stored is None:
            raise ChatError(
                400, f"File {params.get('input_file_id')} does not exist.", param="input_file_id"
            )
        if stored.purpose != "batch":
            raise ChatError(
                400, "The input file must be uploaded with purpose 'batch'.", param="input_file_id"
            )
        metadata = params.get("metadata")
        lines, errors = read_input(stored)
        batch = SimBatch(
            id=new_id("batch_", 24),
            input_file_id=stored.id,
            endpoint=ENDPOINT,
            metadata=metadata if isinstance(metadata, dict) else None,
            created_at=time.time(),
            lines=lines,
            errors=errors,
            processing_seconds=self.sim.config.batch_processing_seconds,
        )
        self.batches[batch.id] = batch
        if not errors:
            ids = tuple(line.custom_id for line in lines)
            batch.record = BatchRecord(batch.id, batch.created_at, ids)
            self.record.append(batch.record)
            self.counters.created += 1
            self.counters.requests += len(ids)
        return batch

    def _advance(self, batch: SimBatch) -> None:
        """Bring the batch's status up to now; make its results when it ends."""
        if batch.status in ENDED:
            return
        now = time.time()
        if batch.cancelling_at is not None:
            if now >= batch.cancelling_at + self.sim.config.batch_cancel_seconds:
                done = (batch.cancelling_at - batch.created_at) / max(
                    batch.processing_seconds, 1e-9
                )
                self._finish(batch, "cancelled", now, share_done=min(1.0, max(0.0, done)))
            return
        elapsed = now - batch.created_at
        validated = batch.created_at + VALIDATING_SHARE * batch.processing_seconds
        if elapsed < VALIDATING_SHARE * batch.processing_seconds:
            return
        if batch.errors:
            batch.status = "failed"
            batch.times["failed"] = int(now)
            return
        batch.status = "in_progress"
        batch.times.setdefault("in_progress", int(validated))
        if elapsed >= batch.processing_seconds:
            batch.times["finalizing"] = int(now)
            self._finish(batch, "completed", now, share_done=1.0)

    def _finish(self, batch: SimBatch, status: str, now: float, share_done: float) -> None:
        config = self.sim.config
        rng = random.Random(f"{config.seed}|{batch.id}")
        output: list[bytes] = []
        errors: list[bytes] = []
        processed = round(len(batch.lines) * share_done)
        expired_any = False
        for index, line in enumerate(batch.lines):
            draw = rng.random()
            if index >= processed:
                errors.append(_error_line(line, "batch_cancelled", CANCELLED_MESSAGE))
                kind = "canceled"
            elif draw < config.batch_expired_rate:
                errors.append(_error_line(line, "batch_expired", EXPIRED_MESSAGE))
                expired_any, kind = True, "expired"
            elif draw < config.batch_expired_rate + config.batch_errored_rate:
                failure = ChatError(500, TRANSIENT_MESSAGE, "server_error")
                errors.append(_response_line(line, failure.status, {"error": failure.body}))
                kind = "errored"
            else:
                code, body = self._answer_line(line, rng)
                (output if code == 200 else errors).append(_response_line(line, code, body))
                kind = "succeeded" if code == 200 else "errored"
            self.counters.results[kind] = self.counters.results.get(kind, 0) + 1
        batch.completed = len(output)
        batch.failed = len(errors)
        if output:
            batch.output_file_id = self._store(batch, "output", output).id
        if errors:
            batch.error_file_id = self._store(batch, "error", errors).id
        final = "expired" if status == "completed" and expired_any else status
        batch.status = final
        batch.times[final] = int(now)
        batch.ended_at = now
        if batch.record is not None:
            batch.record.ended_at = now

    def _answer_line(self, line: BatchLine, rng: random.Random) -> tuple[int, dict[str, Any]]:
        try:
            body = check_body(line.raw)
        except ChatError as error:
            return error.status, {"error": error.body}
        generation = generate(self.sim.config, line.raw, ceiling(body), rng)
        return 200, chat_completion(body, prompt_tokens(body), generation)

    def _store(self, batch: SimBatch, kind: str, lines: list[bytes]) -> StoredFile:
        random.Random(batch.id).shuffle(lines)  # results come in no particular order
        return self.files.store(f"{batch.id}_{kind}.jsonl", "batch_output", b"".join(lines))

    # ---- answers

    def _answer(self, exchange: Exchange, batch: SimBatch) -> web.StreamResponse:
        return self.sim.respond(exchange, 200, batch.object(), self.files.headers(exchange))

    def _missing(self, exchange: Exchange, batch_id: str) -> web.StreamResponse:
        return self._error(exchange, ChatError(404, f"No batch found with id '{batch_id}'."))

    def _error(self, exchange: Exchange, error: ChatError) -> web.StreamResponse:
        return self.files.answer_error(exchange, error)


def read_input(stored: StoredFile) -> tuple[list[BatchLine], list[dict[str, Any]]]:
    """The file's requests, or the errors that fail the batch (one per bad line)."""
    lines: list[BatchLine] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    if len(stored.data) > MAX_INPUT_BYTES:
        errors.append(_validation("file_too_large", "The input file exceeds 200 MB.", None))
    for number, raw in enumerate(stored.data.splitlines(), start=1):
        if not raw.strip():
            continue
        problem = _line_problem(raw, seen, models)
        if isinstance(problem, dict):
            errors.append({**problem, "line": number})
        else:
            lines.append(problem)
    if len(lines) > MAX_REQUESTS:
        errors.append(
            _validation("too_many_requests", f"A batch holds at most {MAX_REQUESTS} requests.")
        )
    if not lines and not errors:
        errors.append(_validation("empty_file", "The input file holds no requests."))
    return lines, errors


def _line_problem(raw: bytes, seen: set[str], models: set[str]) -> BatchLine | dict[str, Any]:
    try:
        entry = json.loads(raw)
    except ValueError:
        return _validation("invalid_json_line", "This line is not parseable as valid JSON.")
    if not isinstance(entry, dict):
        return _validation("invalid_json_line", "This line is not a JSON object.")
    for name in ("custom_id", "method", "url", "body"):
        if name not in entry:
            return _validation(
                "missing_required_parameter", f"Missing required parameter: '{name}'.", name
            )
    custom_id, body = entry["custom_id"], entry["body"]
    if entry["method"] != "POST":
        return _validation("invalid_method", "Only POST is supported.", "method")
    if entry["url"] != ENDPOINT:
        return _validation(
            "invalid_url", f"The URL must be the batch's endpoint, {ENDPOINT}.", "url"
        )
    if not isinstance(custom_id, str) or not isinstance(body, dict):
        return _validation("invalid_request", "custom_id must be a string, body an object.")
    if custom_id in seen:
        return _validation(
            "duplicate_custom_id", f"The custom_id '{custom_id}' is used more than once."
        )
    seen.add(custom_id)
    models.add(str(body.get("model")))
    if len(models) > 1:
        return _validation("mismatched_model", "All requests of a batch must use one model.")
    return BatchLine(custom_id, body, json.dumps(body).encode())


def _validation(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": None}


def _response_line(line: BatchLine, status: int, body: dict[str, Any]) -> bytes:
    record = {
        "id": new_id("batch_req_", 24),
        "custom_id": line.custom_id,
        "response": {"status_code": status, "request_id": new_id("req_", 32), "body": body},
        "error": None,
    }
    return json.dumps(record).encode() + b"\n"


def _error_line(line: BatchLine, code: str, message: str) -> bytes:
    record = {
        "id": new_id("batch_req_", 24),
        "custom_id": line.custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
    return json.dumps(record).encode() + b"\n"
