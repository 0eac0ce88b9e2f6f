"""What differs between APIs: request building, answers, errors and rate-limit headers.

    provider = AnthropicProvider(api_key="sk-...", url="https://api.anthropic.com/v1/messages")
    outcome = provider.classify(status, headers, body)

Only this package knows which API is on the other end; the engine sees `Outcome`s.
"""

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

__all__ = [
    "AnthropicProvider",
    "HttpRequest",
    "ModelFacts",
    "Outcome",
    "Price",
    "Provider",
    "ServerLimit",
    "StreamDecoder",
    "Usage",
    "Verdict",
]
