"""The simulated OpenAI Files API: uploads for batches, and the files batches write.

    files = OpenAIFiles(simulator)
    files.add_routes(router)            # POST/GET /v1/files, GET/DELETE /v1/files/{id}[/content]
    stored = files.store("out.jsonl", "batch_output", data)   # a file a batch wrote

An upload is `multipart/form-data` with a `file` part and a `purpose` field, read part by
part (the 32 MB cap of the Messages endpoints does not apply; a batch input may be up to
200 MB, shared/reference/anthropic-api.md §H.3). The file object is the SDK's `FileObject`.
Files live in memory for the simulator's lifetime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from apiproc.simulator.exchange import Exchange, new_id
from apiproc.simulator.faults import hang_up
from apiproc.simulator.openai_chat import ChatError, key_problem

if TYPE_CHECKING:
    from apiproc.simulator.server import Simulator

PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
MAX_FILE_BYTES = 512 * 1024 * 1024  # Guess: the Files API's per-file cap (512 MB).
READ_CHUNK = 1 << 16


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class OpenAIFiles:
    """The files of one simulator."""

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        self.files: dict[str, StoredFile] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/files", self._upload)
        router.add_get("/v1/files", self._list)
        router.add_get("/v1/files/{file_id}", self._retrieve)
        router.add_delete("/v1/files/{file_id}", self._delete)
        router.add_get("/v1/files/{file_id}/content", self._content)

    def store(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(new_id("file-", 22), filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        return stored

    # ---- endpoints

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        exchange = self.sim.begin(request, counted=False)
        refusal = key_problem(request, self.sim.config.api_key)
        if refusal is not None:
            return self.answer_error(exchange, refusal)
        try:
            filename, purpose, data = await _read_upload(request)
        except ValueError as error:
            return self.error(exchange, 400, str(error))
        if purpose not in PURPOSES:
            supported = ", ".join(f"'{name}'" for name in sorted(PURPOSES))
            return self.error(
                exchange, 400, f"'{purpose}' is not one of {supported} - 'purpose'", param="purpose"
            )
        stored = self.store(filename, purpose, data)
        return self.sim.respond(exchange, 200, stored.object(), self.headers(exchange))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        exchange = self.sim.begin(request, counted=False)
        data = [stored.object() for stored in reversed(self.files.values())]
        payload = {"object": "list", "data": data, "has_more": False}
        return self.sim.respond(exchange, 200, payload, self.headers(exchange))

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        exchange = self.sim.begin(request, counted=False)
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            return self._missing(exchange, request.match_info["file_id"])
        return self.sim.respond(exchange, 200, stored.object(), self.headers(exchange))

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        exchange = self.sim.begin(request, counted=False)
        stored = self.files.pop(request.match_info["file_id"], None)
        if stored is None:
            return self._missing(exchange, request.match_info["file_id"])
        payload = {"id": stored.id, "object": "file", "deleted": True}
        return self.sim.respond(exchange, 200, payload, self.headers(exchange))

    async def _content(self, request: web.Request) -> web.StreamResponse:
        """The file's bytes; a batch's results are sent in two halves, with the results
        hook between them (a test may drop the connection there)."""
        exchange = self.sim.begin(request, counted=False)
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            return self._missing(exchange, request.match_info["file_id"])
        response = web.StreamResponse(headers=self.headers(exchange))
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        half = stored.data.rfind(b"\n", 0, len(stored.data) // 2) + 1
        await response.write(stored.data[:half])
        output = stored.purpose == "batch_output"
        if output and await self.sim.batch_hook("results", {"id": stored.id, "sent": half}):
            return hang_up(request)
        await response.write(stored.data[half:])
        await response.write_eof()
        self.sim.record(exchange, 200, None)
        return response

    # ---- answers

    def _missing(self, exchange: Exchange, file_id: str) -> web.StreamResponse:
        return self.error(exchange, 404, f"No such File object: {file_id}", param="id")

    def error(
        self,
        exchange: Exchange,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
    ) -> web.StreamResponse:
        return self.answer_error(exchange, ChatError(status, message, param=param, code=code))

    def answer_error(self, exchange: Exchange, error: ChatError) -> web.StreamResponse:
        return self.sim.respond(
            exchange, error.status, {"error": error.body}, self.headers(exchange)
        )

    def headers(self, exchange: Exchange) -> dict[str, str]:
        return {"x-request-id": exchange.request_id, "openai-version": "2020-10-01"}


async def _read_upload(request: web.Request) -> tuple[str, str, bytes]:
    """The `file` part (its name and bytes) and the `purpose` field of a multipart upload."""
    if not request.content_type.startswith("multipart/"):
        raise ValueError("The upload must be multipart/form-data with a file and a purpose.")
    reader = await request.multipart()
    filename, purpose, data = "", "", None
    while (part := await reader.next()) is not None:
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or "upload.jsonl"
            data = await _read_part(part)
    if data is None:
        raise ValueError("Missing required parameter: 'file'.")
    if not purpose:
        raise ValueError("Missing required parameter: 'purpose'.")
    return filename, purpose, data


async def _read_part(part: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(READ_CHUNK):
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise ValueError("File is too large.")
        chunks.append(chunk)
    return b"".join(chunks)
