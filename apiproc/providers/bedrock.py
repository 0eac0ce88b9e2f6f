"""Claude on Amazon Bedrock: InvokeModel on bedrock-runtime, and the bedrock-mantle Messages API.

    provider = BedrockProvider(region="us-east-1")
    request = provider.request(params)   # POST /model/{model id}/invoke, signed with SigV4
    mantle = BedrockMantleProvider(region="us-east-1")   # POST .../anthropic/v1/messages

Facts from shared/reference/anthropic-api.md §G.1 and anthropic-api-2026.md §4:
- InvokeModel takes the Messages body without `model` and `stream`, plus
  `"anthropic_version": "bedrock-2023-05-31"`; betas go in the body as `anthropic_beta`.
  The model id (or inference profile) goes in the path, escaped as the official SDK does
  (`quote(model, safe=":")`). Requests are signed with SigV4 for the service `bedrock`.
- bedrock-mantle takes the Messages API as it is (model in the body, the
  `anthropic-version` header), with a Bedrock API key as `Authorization: Bearer` or,
  without one, SigV4 for the service `bedrock-mantle` (as the official SDK does).
- Errors are rest-json: the `x-amzn-ErrorType` header names the exception, the body is
  `{"message": ...}`. Throttling, an unavailable service and a model that is not ready
  are transient; bad credentials end the run. Usage is in the body, as in the Messages API.
- No rate-limit headers are documented, so the run paces itself on the limits it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from apiproc.jsonio import dumps
from apiproc.providers.anthropic import (
    TRANSIENT_ERROR_TYPES,
    api_error,
    message_outcome,
    messages_verdict,
    validate_messages,
)
from apiproc.providers.anthropic_versions import version_problem
from apiproc.providers.aws import SigV4Signer
from apiproc.providers.base import HttpRequest, ModelFacts, Outcome, Verdict
from apiproc.providers.cloud_models import bedrock_facts
from apiproc.providers.http import from_the_api, json_or_none, not_json_error, retry_after

BEDROCK_VERSION = "bedrock-2023-05-31"
MANTLE_VERSION = "2023-06-01"
SIGNING_NAME = "bedrock"
MANTLE_SIGNING_NAME = "bedrock-mantle"
ERROR_TYPE_HEADER = "x-amzn-errortype"
REQUEST_ID_HEADER = "x-amzn-requestid"

# Exceptions of the bedrock-runtime service model (§G.1), by what they mean for a request.
RATE_LIMITED = frozenset({"ThrottlingException"})
TRANSIENT = frozenset(
    {
        "ThrottlingException",
        "ModelNotReadyException",  # "The AWS SDK will automatically retry the operation"
        "ServiceUnavailableException",
        "InternalServerException",
        "InternalFailure",
        "ModelTimeoutException",
        # Guess: a failure inside the model (424) is worth another attempt.
        "ModelErrorException",
    }
)
# Every request would fail the same way: stop the run.
FATAL = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
        "FTUFormNotFilled",  # the Anthropic use-case form was never submitted
    }
)


def runtime_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def mantle_url(region: str) -> str:
    return f"https://bedrock-mantle.{region}.api.aws/anthropic"


class _BedrockEndpoint:
    """What both endpoints share: whole answers only, AWS errors, Bedrock's model ids."""

    prices_as_of = ""
    cache_breakpoints = True
    _headers: dict[str, str]

    @property
    def session_headers(self) -> Mapping[str, str]:
        return self._headers

    def decoder(self, status: int, headers: Mapping[str, str]) -> None:
        return None  # whole answers only

    def transient_error(self, error_type: str) -> bool:
        return transient_error(error_type)

    def model(self, model: str) -> ModelFacts:
        return bedrock_facts(model)

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, figures: bool = True
    ) -> Outcome:
        """An answer as an Outcome; this API sends no rate-limit headers to read."""
        return classify_bedrock(status, headers, body)


class BedrockProvider(_BedrockEndpoint):
    """InvokeModel on bedrock-runtime, signed with SigV4."""

    name = "bedrock"
    # Guess: Bedrock's tokens quota is charged max_tokens when the request starts.
    output_accounting = "max_tokens"

    def __init__(
        self,
        region: str,
        url: str | None = None,
        betas: tuple[str, ...] = (),
        signer: SigV4Signer | None = None,
    ) -> None:
        self.base = (url or runtime_url(region)).rstrip("/")
        self.signer = signer or SigV4Signer(SIGNING_NAME, region)
        self._betas = list(betas)
        self._headers = {"content-type": "application/json", "accept": "application/json"}

    def request(self, params: dict[str, Any]) -> HttpRequest:
        body = {key: value for key, value in params.items() if key not in ("model", "stream")}
        body.setdefault("anthropic_version", BEDROCK_VERSION)
        if self._betas:
            body.setdefault("anthropic_beta", self._betas)
        url = f"{self.base}/model/{quote(str(params['model']), safe=':')}/invoke"
        data = dumps(body)
        return HttpRequest(url, data, self.signer.sign("POST", url, data, self._headers))

    def validate(self, params: dict[str, Any]) -> str | None:
        return validate_messages(params)


class BedrockMantleProvider(_BedrockEndpoint):
    """The Messages API on bedrock-mantle: a Bedrock API key, or SigV4 without one."""

    name = "bedrock-mantle"
    output_accounting = "max_tokens"  # as for InvokeModel: a guess

    def __init__(
        self,
        region: str,
        url: str | None = None,
        api_key: str | None = None,
        version: str = MANTLE_VERSION,
        betas: tuple[str, ...] = (),
        signer: SigV4Signer | None = None,
    ) -> None:
        base = (url or mantle_url(region)).rstrip("/")
        self.url = base if base.endswith("/v1/messages") else base + "/v1/messages"
        self.version = version
        self._headers = {
            "anthropic-version": version,
            "content-type": "application/json",
            "accept": "application/json",
        }
        if betas:
            self._headers["anthropic-beta"] = ",".join(betas)
        self.signer: SigV4Signer | None = None
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        else:
            self.signer = signer or SigV4Signer(MANTLE_SIGNING_NAME, region, api="bedrock-mantle")

    def request(self, params: dict[str, Any]) -> HttpRequest:
        # Whole answers only: a line's own "stream" is left out.
        data = dumps({key: value for key, value in params.items() if key != "stream"})
        if self.signer is None:
            return HttpRequest(self.url, data)
        return HttpRequest(self.url, data, self.signer.sign("POST", self.url, data, self._headers))

    def validate(self, params: dict[str, Any]) -> str | None:
        return validate_mantle(params, self.version)


def transient_error(error_type: str) -> bool:
    """An AWS exception (or a Messages API error passed through) that may not recur."""
    return error_type in TRANSIENT or error_type in TRANSIENT_ERROR_TYPES


def validate_mantle(params: dict[str, Any], version: str) -> str | None:
    """The Messages rules, under the `anthropic-version` the requests are sent with."""
    return validate_messages(params) or version_problem(params, version)


def classify_bedrock(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """An answer of either Bedrock endpoint: a message, a Messages API error passed
    through, or an AWS exception."""
    parsed = json_or_none(body)
    request_id = headers.get(REQUEST_ID_HEADER)
    if status == 200:
        return message_outcome(parsed, headers, request_id)
    anthropic_error = api_error(parsed)
    if anthropic_error is not None:
        verdict = messages_verdict(status, headers, anthropic_error)
        return Outcome(
            verdict,
            status,
            error=anthropic_error,
            request_id=request_id,
            retry_after=retry_after(headers),
            rate_limited=status == 429 and verdict is Verdict.RETRY,
            api_answer=from_the_api(status, anthropic_error),
        )
    kind = exception_name(headers, parsed)
    if kind is None:
        error = not_json_error(status, headers)
    else:
        error = {"type": kind, "message": _message(parsed)}
    return Outcome(
        _verdict(status, kind),
        status,
        error=error,
        request_id=request_id,
        retry_after=retry_after(headers),
        rate_limited=kind in RATE_LIMITED or (kind is None and status == 429),
        api_answer=from_the_api(status, None if kind is None else error),
    )


def exception_name(headers: Mapping[str, str], parsed: Any) -> str | None:
    """The AWS exception: `x-amzn-ErrorType: ThrottlingException:http://...`, else the
    body's `__type` (with or without a namespace)."""
    value = headers.get(ERROR_TYPE_HEADER)
    if not value and isinstance(parsed, dict) and isinstance(parsed.get("__type"), str):
        value = parsed["__type"].rsplit("#", 1)[-1]
    if not value:
        return None
    return value.split(":", 1)[0].strip() or None


def _verdict(status: int, kind: str | None) -> Verdict:
    if kind in FATAL or status in (401, 403):
        return Verdict.FATAL
    if kind in TRANSIENT or status in (408, 429) or status >= 500:
        return Verdict.RETRY
    return Verdict.PERMANENT


def _message(parsed: Any) -> str:
    if isinstance(parsed, dict):
        for key in ("message", "Message"):
            if isinstance(parsed.get(key), str):
                return parsed[key]
    return ""
