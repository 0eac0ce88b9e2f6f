"""What differs between APIs: request building, answers, errors, rate-limit headers, models.

    provider = build_provider("openai", api_key="sk-...", url="http://localhost:8000/v1")
    outcome = provider.classify(status, headers, body)

Only this package knows which API is on the other end; the engine sees `Outcome`s.
`build_provider` is the one place that turns a choice of API into a `Provider`:
- `anthropic`: the Messages API (`x-api-key`, ANTHROPIC_API_KEY);
- `openai`: Chat Completions at any OpenAI-compatible base URL (OPENAI_API_KEY);
- `bedrock`: InvokeModel on bedrock-runtime, SigV4 with the AWS credential chain;
- `bedrock-mantle`: the Messages API on bedrock-mantle (AWS_BEARER_TOKEN_BEDROCK, or SigV4);
- `vertex`: rawPredict on Vertex AI, with Application Default Credentials.
The cloud APIs load their optional dependencies only when chosen.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from apiproc.errors import SettingsError
from apiproc.lazy import lazy_exports
from apiproc.providers.anthropic import DEFAULT_TIMEOUT, DEFAULT_VERSION, AnthropicProvider
from apiproc.providers.base import (
    HttpRequest,
    ModelFacts,
    Outcome,
    Price,
    Provider,
    ServerLimit,
    StreamDecoder,
    Usage,
    Verdict,
)

if TYPE_CHECKING:
    from apiproc.providers.batches import BatchApi

# The batch protocol's names, offered here too but loaded on first use: online runs skip it.
__getattr__ = lazy_exports(__name__, {"BatchApi": "batches", "BatchApiError": "batches"})


def batch_api(provider: Provider, session: Any) -> BatchApi:
    """The provider's batch service on an aiohttp session that sends its headers."""
    if isinstance(provider, AnthropicProvider):
        from apiproc.providers.anthropic_batches import AnthropicBatches

        return AnthropicBatches(provider, session)
    from apiproc.providers.openai import OpenAIProvider

    if isinstance(provider, OpenAIProvider):
        from apiproc.providers.openai_batches import OpenAIBatches

        return OpenAIBatches(provider, session)
    raise SettingsError(
        f"--mode batch: apiproc has no batch service for --api {provider.name}; "
        "send the requests online (leave --mode out)."
    )


APIS = ("anthropic", "openai", "bedrock", "bedrock-mantle", "vertex")
# Where each API's key is found when --api-key is not given; None: no key is needed.
KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY",),
    "openai": ("OPENAI_API_KEY",),
    "bedrock": (),
    "bedrock-mantle": ("AWS_BEARER_TOKEN_BEDROCK", "ANTHROPIC_AWS_API_KEY"),
    "vertex": (),
}
# APIs whose key is optional: without one they sign in another way.
KEY_OPTIONAL = frozenset({"bedrock", "bedrock-mantle", "vertex"})
SIMULATED_APIS = frozenset({"anthropic", "openai"})
REGION_VARIABLES: dict[str, tuple[str, ...]] = {
    "bedrock": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "bedrock-mantle": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "vertex": ("CLOUD_ML_REGION",),
}
PROJECT_VARIABLE = "ANTHROPIC_VERTEX_PROJECT_ID"
# Where an API's base URL is found when --request-url is not given, as its SDK looks.
URL_VARIABLES: dict[str, str] = {"openai": "OPENAI_BASE_URL"}


def url_from_environment(api: str) -> str | None:
    """The endpoint the environment names for `api` (OPENAI_BASE_URL), if any."""
    variable = URL_VARIABLES.get(api)
    return os.environ.get(variable) or None if variable else None


def build_provider(
    api: str,
    *,
    api_key: str = "",
    url: str | None = None,
    version: str = DEFAULT_VERSION,
    betas: tuple[str, ...] = (),
    transport: str = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    region: str | None = None,
    project: str | None = None,
) -> Provider:
    """The provider for `api`; SettingsError (one sentence) when it cannot be set up."""
    if api == "anthropic":
        from apiproc.providers.anthropic import DEFAULT_URL

        return AnthropicProvider(api_key, url or DEFAULT_URL, version, betas, transport, timeout)
    if transport == "stream":
        raise SettingsError(
            f"--transport stream: apiproc streams only the Messages API; --api {api} gets "
            "whole answers, so leave --transport out."
        )
    if api == "openai":
        from apiproc.providers.openai import OpenAIProvider

        return OpenAIProvider(api_key, url)
    if api in ("bedrock", "bedrock-mantle"):
        from apiproc.providers.bedrock import BedrockMantleProvider, BedrockProvider

        where = _region(api, region)
        if api == "bedrock":
            return BedrockProvider(where, url, betas)
        return BedrockMantleProvider(where, url, api_key or None, version, betas)
    if api == "vertex":
        from apiproc.providers.vertex import AccessTokens, StaticToken, VertexProvider

        where = _region(api, region)
        tokens = StaticToken(api_key) if api_key else AccessTokens()
        found = project or os.environ.get(PROJECT_VARIABLE) or getattr(tokens, "project", None)
        if not found:
            raise SettingsError(
                f"--api vertex needs a Google Cloud project: pass --project or set "
                f"{PROJECT_VARIABLE}."
            )
        return VertexProvider(found, where, url, betas, tokens)
    raise SettingsError(f"--api must be one of {', '.join(APIS)}, not {api!r}.")


class ApiRules(NamedTuple):
    """What can be known of an API without signing in: its body rules and model facts."""

    validate: Callable[[dict[str, Any]], str | None]
    model: Callable[[str], ModelFacts]
    prices_as_of: str


def rules_for(api: str, version: str = DEFAULT_VERSION) -> ApiRules:
    """`api`'s rules (under `version` of the Messages API), for checking and estimating a
    file offline: nothing is sent and no credentials are needed."""
    if api == "openai":
        from apiproc.providers.openai import model_facts, validate_chat

        return ApiRules(validate_chat, model_facts, "")
    if api in ("bedrock", "bedrock-mantle", "vertex"):
        from apiproc.providers.anthropic import validate_messages
        from apiproc.providers.bedrock import validate_mantle
        from apiproc.providers.cloud_models import bedrock_facts, vertex_facts
        from apiproc.providers.vertex import validate_vertex

        if api == "vertex":
            return ApiRules(validate_vertex, vertex_facts, "")
        if api == "bedrock":
            return ApiRules(validate_messages, bedrock_facts, "")
        # A partial, not a lambda: the checks go to the worker processes of a large file.
        return ApiRules(partial(validate_mantle, version=version), bedrock_facts, "")
    anthropic = AnthropicProvider(api_key="", version=version)
    return ApiRules(anthropic.validate, anthropic.model, anthropic.prices_as_of)


def _region(api: str, given: str | None) -> str:
    for name in REGION_VARIABLES[api]:
        given = given or os.environ.get(name)
    if not given:
        names = " or ".join(REGION_VARIABLES[api])
        raise SettingsError(f"--api {api} needs a region: pass --region or set {names}.")
    return given


__all__ = [
    "APIS",
    "KEY_OPTIONAL",
    "KEY_VARIABLES",
    "SIMULATED_APIS",
    "AnthropicProvider",
    "ApiRules",
    "BatchApi",
    "BatchApiError",
    "HttpRequest",
    "ModelFacts",
    "Outcome",
    "Price",
    "Provider",
    "ServerLimit",
    "StreamDecoder",
    "Usage",
    "Verdict",
    "batch_api",
    "build_provider",
    "rules_for",
    "url_from_environment",
]
