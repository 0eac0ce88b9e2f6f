"""Claude on Google Vertex AI: `rawPredict` with an access token from google-auth.

    provider = VertexProvider(project="my-project", region="global")
    request = provider.request(params)  # POST .../publishers/anthropic/models/{model}:rawPredict

Facts from shared/reference/anthropic-api.md §G.2: the model goes in the URL, not the
body; the body carries `"anthropic_version": "vertex-2023-10-16"`; the token is sent as
`Authorization: Bearer`. Base URLs by region are those of the official SDK (`global`,
the `us` and `eu` multi-regions, else `{region}-aiplatform.googleapis.com`).

Errors come in two shapes: a Messages API error passed through from the model, or a
Google error `{"error": {"code", "message", "status"}}`, which a quota 429 sends wrapped
in a JSON array. `RESOURCE_EXHAUSTED` is the rate-limit signal; no rate-limit headers
are documented, so the run paces itself on the limits it is given.

The token comes from Application Default Credentials (the `vertex` extra) and is
refreshed in a background thread shortly before it expires, so no request waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from apiproc.errors import MissingExtra, SettingsError
from apiproc.jsonio import dumps
from apiproc.providers.anthropic import (
    TRANSIENT_ERROR_TYPES,
    api_error,
    message_outcome,
    messages_verdict,
    validate_messages,
)
from apiproc.providers.base import HttpRequest, ModelFacts, Outcome, Verdict
from apiproc.providers.cloud_models import vertex_facts
from apiproc.providers.http import from_the_api, json_or_none, not_json_error, retry_after

VERTEX_VERSION = "vertex-2023-10-16"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Start a refresh this long before the token expires; tokens live about an hour.
REFRESH_AHEAD = timedelta(minutes=5)

RATE_LIMITED = frozenset({"RESOURCE_EXHAUSTED"})
TRANSIENT = frozenset(
    {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED", "UNKNOWN"}
)
FATAL = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


def vertex_base_url(region: str) -> str:
    """The official SDK's base URL for `region`."""
    if region == "global":
        return "https://aiplatform.googleapis.com/v1"
    if region in ("us", "eu"):
        return f"https://aiplatform.{region}.rep.googleapis.com/v1"
    return f"https://{region}-aiplatform.googleapis.com/v1"


class AccessTokens:
    """Google access tokens from Application Default Credentials, always fresh."""

    def __init__(self) -> None:
        try:
            import google.auth
            import google.auth.exceptions
            from google.auth.transport.requests import Request
        except ImportError:
            raise MissingExtra("vertex", "vertex", "google-auth") from None
        try:
            credentials, project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            credentials.refresh(Request())
        except google.auth.exceptions.DefaultCredentialsError:
            raise SettingsError(
                "No Google credentials found: run `gcloud auth application-default login` "
                "or set GOOGLE_APPLICATION_CREDENTIALS."
            ) from None
        except google.auth.exceptions.GoogleAuthError as error:
            raise SettingsError(f"Could not get a Google access token: {error}.") from None
        self.project: str | None = project
        self._credentials = credentials
        self._new_request = Request
        self._refreshing: threading.Thread | None = None

    def token(self) -> str:
        """The current token; a refresh starts in the background when it nears expiry."""
        expiry = _utc(self._credentials.expiry)
        if expiry is not None:
            now = datetime.now(timezone.utc)
            if now >= expiry:
                self._credentials.refresh(self._new_request())  # expired after all: wait
            elif now >= expiry - REFRESH_AHEAD and not self._refresh_running():
                self._refreshing = threading.Thread(
                    target=self._refresh, name="apiproc-token-refresh", daemon=True
                )
                self._refreshing.start()
        return str(self._credentials.token)

    def _refresh_running(self) -> bool:
        return self._refreshing is not None and self._refreshing.is_alive()

    def _refresh(self) -> None:
        try:
            self._credentials.refresh(self._new_request())
        except Exception:  # the next request tries again, or waits for a fresh token
            return


class StaticToken:
    """An access token given on the command line (e.g. `gcloud auth print-access-token`)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token


class VertexProvider:
    """`rawPredict` of Claude models on Vertex AI."""

    name = "vertex"
    prices_as_of = ""
    # Guess: reserving max_tokens never overshoots an output quota, whichever way it counts.
    output_accounting = "max_tokens"
    cache_breakpoints = True

    def __init__(
        self,
        project: str,
        region: str,
        url: str | None = None,
        betas: tuple[str, ...] = (),
        tokens: AccessTokens | StaticToken | None = None,
    ) -> None:
        base = (url or vertex_base_url(region)).rstrip("/")
        self.tokens = tokens or AccessTokens()
        self.models_url = (
            f"{base}/projects/{quote(project, safe='')}/locations/{quote(region, safe='')}"
            "/publishers/anthropic/models"
        )
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if betas:
            self._headers["anthropic-beta"] = ",".join(betas)

    @property
    def session_headers(self) -> Mapping[str, str]:
        return self._headers

    def request(self, params: dict[str, Any]) -> HttpRequest:
        body = {key: value for key, value in params.items() if key != "model"}
        body.setdefault("anthropic_version", VERTEX_VERSION)
        url = f"{self.models_url}/{quote(str(params['model']), safe='@')}:rawPredict"
        authorization = {"authorization": f"Bearer {self.tokens.token()}"}
        return HttpRequest(url, dumps(body), authorization)

    def decoder(self, status: int, headers: Mapping[str, str]) -> None:
        return None  # whole answers only

    def transient_error(self, error_type: str) -> bool:
        return error_type in TRANSIENT or error_type in TRANSIENT_ERROR_TYPES

    def model(self, model: str) -> ModelFacts:
        return vertex_facts(model)

    def validate(self, params: dict[str, Any]) -> str | None:
        return validate_vertex(params)

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, figures: bool = True
    ) -> Outcome:
        """An answer as an Outcome; this API sends no rate-limit headers to read."""
        parsed = json_or_none(body)
        if status == 200:
            return message_outcome(parsed, headers, None)
        if isinstance(parsed, list) and parsed:
            parsed = parsed[0]  # a quota error comes wrapped in an array
        anthropic_error = api_error(parsed)
        if anthropic_error is not None:
            verdict = messages_verdict(status, headers, anthropic_error)
            rate_limited = status == 429 and verdict is Verdict.RETRY
            error = known = anthropic_error
        else:
            known = google_error(parsed)
            error = known or not_json_error(status, headers)
            verdict = _verdict(status, str(error["type"]))
            rate_limited = verdict is Verdict.RETRY and (
                error["type"] in RATE_LIMITED or status == 429
            )
        return Outcome(
            verdict,
            status,
            error=error,
            retry_after=retry_after(headers),
            rate_limited=rate_limited,
            api_answer=from_the_api(status, known),
        )


def validate_vertex(params: dict[str, Any]) -> str | None:
    """The Messages rules; `stream` stays in a Vertex body, so it must not ask to stream."""
    problem = validate_messages(params)
    if problem is None and params.get("stream") is True:
        return "stream: apiproc reads whole answers; remove stream or set it to false"
    return problem


def google_error(parsed: Any) -> dict[str, Any] | None:
    """`{"error": {"code", "message", "status"}}` as apiproc's error: the status names it."""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict) or "message" not in error:
        return None
    return {
        "type": str(error.get("status") or "UNKNOWN"),
        "message": str(error.get("message", "")),
        "code": error.get("code"),
    }


def _verdict(status: int, kind: str) -> Verdict:
    if kind in FATAL or status in (401, 403):
        return Verdict.FATAL
    if kind in TRANSIENT or status in (408, 429) or status >= 500:
        return Verdict.RETRY
    return Verdict.PERMANENT


def _utc(moment: datetime | None) -> datetime | None:
    """google-auth keeps expiry as a naive UTC datetime."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
