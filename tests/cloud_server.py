"""A loopback stand-in for Claude on Bedrock and on Vertex AI, strict where the clouds are.

    with CloudServer(answers=["throttle"]) as cloud:
        run apiproc with --api bedrock --request-url cloud.url ...
        assert all(seen.signature_ok for seen in cloud.seen)

Bedrock: every request must carry a SigV4 signature that botocore's own `SigV4Auth`
computes identically from what arrived (method, raw path, signed headers, body), for the
service `bedrock` (InvokeModel, `/model/{id}/invoke`) or `bedrock-mantle` (the Messages
API, `/anthropic/v1/messages`), with the test's key and region, dated within five minutes.
A bad signature gets Bedrock's 403 `InvalidSignatureException`. Errors are rest-json: the
`x-amzn-ErrorType` header and `{"message": ...}` (shared/reference/anthropic-api.md §G.1).

Vertex: `rawPredict` must carry `Authorization: Bearer` with the token the server's own
OAuth token endpoint (`/token`, the `token_uri` of the test's service-account key) issued
to google-auth.
Errors are Google's `{"error": {"code", "message", "status"}}`, a quota 429 wrapped in an
array (§G.2).

Both check the body shape: `anthropic_version` of the endpoint, no `model` in the body of
InvokeModel or rawPredict, `max_tokens` and `messages` present. `answers` scripts the
first answers ("throttle", "not_ready", "unavailable", "quota", "access_denied",
"validation"); after them every valid request succeeds.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ACCESS_KEY = "AKIDAPIPROCTEST00001"
SECRET_KEY = "apiproc-test-secret-key-0123456789abcdef"
REGION = "us-east-1"
ACCESS_TOKEN = "ya29.apiproc-test-access-token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CORAL = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
SIGNATURE_MAX_AGE = 300.0

# Bedrock exceptions: (status, x-amzn-ErrorType name, message) — §G.1 and its sources.
BEDROCK_ERRORS = {
    "throttle": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "not_ready": (429, "ModelNotReadyException", "Model is not ready to serve inference."),
    "unavailable": (
        503,
        "ServiceUnavailableException",
        "Bedrock is unable to process your request.",
    ),
    "access_denied": (
        403,
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
    ),
    "validation": (400, "ValidationException", "Malformed input request, please reformat."),
}
# Vertex errors: (status, Google status, message).
VERTEX_ERRORS = {
    "quota": (
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model "
        "with base model: anthropic-claude-sonnet-4-5. Please submit a quota increase request.",
    ),
    "unavailable": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "access_denied": (403, "PERMISSION_DENIED", "Permission denied on resource project."),
    "validation": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
}


@dataclass(slots=True)
class Seen:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: Any
    status: int
    signature_ok: bool | None = None  # None: not a signed endpoint
    service: str | None = None


@dataclass(slots=True)
class CloudServer:
    """The stand-in, served from a background thread on 127.0.0.1."""

    answers: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    tokens_issued: int = 0
    _port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def __enter__(self) -> CloudServer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the cloud stand-in did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/model/{model}/invoke", self._invoke)
        app.router.add_post("/anthropic/v1/messages", self._mantle)
        app.router.add_post("/token", self._token)
        app.router.add_post(
            "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{tail}",
            self._raw_predict,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _next_answer(self) -> str:
        with self._lock:
            return self.answers.pop(0) if self.answers else "ok"

    # ---- Bedrock ----------------------------------------------------------------------

    async def _invoke(self, request: web.Request) -> web.Response:
        raw = await request.read()
        signed = verify_sigv4(request, raw, "bedrock")
        body = _json(raw)
        seen = self._see(request, body, signed, "bedrock")
        if not signed:
            return self._bedrock_error(seen, "InvalidSignatureException", 403, _BAD_SIGNATURE)
        problem = _body_problem(body, "bedrock-2023-05-31", model_in_body=False)
        if problem:
            return self._bedrock_error(seen, "ValidationException", 400, problem)
        return self._bedrock_answer(seen, request.match_info["model"], body)

    async def _mantle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = _json(raw)
        bearer = request.headers.get("authorization", "").startswith("Bearer ")
        signed = True if bearer else verify_sigv4(request, raw, "bedrock-mantle")
        seen = self._see(request, body, None if bearer else signed, "bedrock-mantle")
        if not signed:
            return self._bedrock_error(seen, "InvalidSignatureException", 403, _BAD_SIGNATURE)
        if request.headers.get("anthropic-version") != "2023-06-01":
            return self._bedrock_error(seen, "ValidationException", 400, "anthropic-version")
        problem = _body_problem(body, None, model_in_body=True)
        if problem:
            return self._bedrock_error(seen, "ValidationException", 400, problem)
        return self._bedrock_answer(seen, body["model"], body)

    def _bedrock_answer(self, seen: Seen, model: str, body: dict[str, Any]) -> web.Response:
        answer = self._next_answer()
        if answer in BEDROCK_ERRORS:
            status, kind, message = BEDROCK_ERRORS[answer]
            return self._bedrock_error(seen, kind, status, message)
        message = _message(model, body)
        seen.status = 200
        headers = {
            "x-amzn-requestid": "9d7c3f1e-aaaa-bbbb-cccc-000000000001",
            "x-amzn-bedrock-input-token-count": str(message["usage"]["input_tokens"]),
            "x-amzn-bedrock-output-token-count": str(message["usage"]["output_tokens"]),
            "x-amzn-bedrock-invocation-latency": "12",
        }
        return web.json_response(message, headers=headers)

    def _bedrock_error(self, seen: Seen, kind: str, status: int, message: str) -> web.Response:
        seen.status = status
        headers = {"x-amzn-ErrorType": kind + CORAL, "x-amzn-requestid": "req-err"}
        return web.json_response({"message": message}, status=status, headers=headers)

    # ---- Vertex -----------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        """The OAuth token endpoint a service account's key file names (`token_uri`)."""
        form = await request.post()
        assertion = str(form.get("assertion", ""))
        if form.get("grant_type") != JWT_GRANT or assertion.count(".") != 2:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        with self._lock:
            self.tokens_issued += 1
        return web.json_response(
            {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        )

    async def _raw_predict(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = _json(raw)
        seen = self._see(request, body, None, "vertex")
        model, _, verb = request.match_info["tail"].partition(":")
        if request.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            return self._google_error(
                seen, 401, "UNAUTHENTICATED", "Request had invalid credentials."
            )
        if verb != "rawPredict":
            return self._google_error(seen, 404, "NOT_FOUND", f"unknown method {verb}")
        problem = _body_problem(body, "vertex-2023-10-16", model_in_body=False)
        if problem:
            return self._google_error(seen, 400, "INVALID_ARGUMENT", problem)
        answer = self._next_answer()
        if answer in VERTEX_ERRORS:
            status, kind, message = VERTEX_ERRORS[answer]
            return self._google_error(seen, status, kind, message, wrapped=answer == "quota")
        seen.status = 200
        return web.json_response(_message(model, body))

    def _google_error(
        self, seen: Seen, status: int, kind: str, message: str, wrapped: bool = False
    ) -> web.Response:
        seen.status = status
        error: Any = {"error": {"code": status, "message": message, "status": kind}}
        return web.json_response([error] if wrapped else error, status=status)

    def _see(self, request: web.Request, body: Any, signed: bool | None, service: str) -> Seen:
        headers = {name.lower(): value for name, value in request.headers.items()}
        seen = Seen(request.raw_path, headers, body, 0, signed, service)
        with self._lock:
            self.seen.append(seen)
        return seen


_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method."
)


def verify_sigv4(request: web.Request, body: bytes, service: str) -> bool:
    """Recompute the signature with botocore's SigV4Auth over what arrived; compare."""
    authorization = request.headers.get("Authorization", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return False
    fields = dict(
        part.strip().split("=", 1) for part in authorization[len("AWS4-HMAC-SHA256 ") :].split(",")
    )
    key_id, day, region, scope_service, terminator = fields["Credential"].split("/")
    stamp = request.headers.get("X-Amz-Date", "")
    if (key_id, region, scope_service, terminator) != (ACCESS_KEY, REGION, service, "aws4_request"):
        return False
    signed_time = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    if abs(time.time() - signed_time.timestamp()) > SIGNATURE_MAX_AGE or stamp[:8] != day:
        return False
    names = fields["SignedHeaders"].split(";")
    if "host" not in names or "x-amz-date" not in names:
        return False
    headers = {name: request.headers.get(name, "") for name in names}
    received = AWSRequest(
        method=request.method,
        url=f"http://{request.host}{request.raw_path}",
        data=body,
        headers=headers,
    )
    received.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, REGION)
    canonical = signer.canonical_request(received)
    expected = signer.signature(signer.string_to_sign(received, canonical), received)
    return hmac.compare_digest(expected, fields["Signature"])


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _body_problem(body: Any, version: str | None, model_in_body: bool) -> str | None:
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if version is not None and body.get("anthropic_version") != version:
        return f"anthropic_version must be {version}"
    if ("model" in body) != model_in_body:
        return "model: " + ("Field required" if model_in_body else "extraneous key [model]")
    if "stream" in body and version == "bedrock-2023-05-31":
        return "stream: extraneous key [stream] is not permitted"
    for name in ("max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    return None


def _message(model: str, body: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(body["messages"])
    output = min(int(body["max_tokens"]), 7)
    return {
        "id": "msg_bdrk_01ABCDEFGHIJKLMNOPQRSTUV",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "the cloud says hi"[: output * 3]}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": len(text) // 4 + 5, "output_tokens": output},
    }
