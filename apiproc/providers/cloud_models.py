"""The facts of Claude models reached through a cloud: Bedrock and Vertex model ids.

    bedrock_facts("global.anthropic.claude-sonnet-4-5-20250929-v1:0").min_cacheable_tokens
    vertex_facts("claude-sonnet-4-5@20250929").limit_class     # "claude-sonnet-4-5"

A cloud id names the same Claude model as the Messages API id it is built from, so the
cache rules and the tokenizer are that model's. Prices are the cloud's own, differ by
region and are not in the reference notes, so they are left unknown (the summary says
"cost unknown") rather than copied from the Anthropic price list.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from apiproc.providers.anthropic_models import model_facts, model_family
from apiproc.providers.base import ModelFacts

# Bedrock model ids: [geography.]anthropic.<model>-v<N>:<M>, or an ARN ending in one.
_BEDROCK_PROVIDER = "anthropic."


def bedrock_model(model: str) -> str:
    """The Messages API id inside a Bedrock id or inference-profile ARN; `model` when
    it holds none (an application inference profile's opaque id)."""
    name = model.rsplit("/", 1)[-1]
    start = name.find(_BEDROCK_PROVIDER)
    if start < 0:
        return model
    name = name[start + len(_BEDROCK_PROVIDER) :]
    stem, _, version = name.rpartition("-v")
    return stem if stem and version[:1].isdigit() else name


def vertex_model(model: str) -> str:
    """The Messages API family of a Vertex id: `claude-sonnet-4-5@20250929` -> its name."""
    return model.split("@", 1)[0]


@lru_cache(maxsize=256)
def bedrock_facts(model: str) -> ModelFacts:
    # Guess: Bedrock quotas are per model id and per inference profile, so each id is a class.
    return _claude_facts(bedrock_model(model), limit_class=model)


@lru_cache(maxsize=256)
def vertex_facts(model: str) -> ModelFacts:
    # Vertex quotas are "per base model" (the 429 messages of §G.2).
    name = vertex_model(model)
    return _claude_facts(name, limit_class=model_family(name))


def _claude_facts(name: str, limit_class: str) -> ModelFacts:
    """The Claude model's own facts (tokenizer, cache rules), with the cloud's limit
    class; no price, and no end of life: each cloud retires models on its own dates."""
    return replace(model_facts(name), limit_class=limit_class, price=None, end_of_life=None)
