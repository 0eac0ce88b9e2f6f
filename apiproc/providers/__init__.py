"""What differs between APIs: request building, answers, errors and rate-limit headers.

    provider = AnthropicProvider(api_key="sk-...", url="https://api.anthropic.com/v1/messages")
    outcome = provider.classify(status, headers, body)

Only this package knows which API is on the other end; the engine sees `Outcome`s.
"""

from __future__ import annotations

from typing import Any

from apiproc.providers.anthropic import AnthropicProvider
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
from apiproc.providers.batches import BatchApi, BatchApiError


def batch_api(provider: Provider, session: Any) -> BatchApi:
    """The provider's batch service on an aiohttp session that sends its headers."""
    if isinstance(provider, AnthropicProvider):
        from apiproc.providers.anthropic_batches import AnthropicBatches

        return AnthropicBatches(provider, session)
    raise ValueError(f"the {provider.name} provider has no batch service in apiproc")


__all__ = [
    "AnthropicProvider",
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
]
