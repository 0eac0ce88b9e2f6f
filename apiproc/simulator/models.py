"""The models the simulator serves, by alias and by dated id.

    spec = MODELS["claude-sonnet-4-5"]
    spec.id, spec.rate_pool, spec.max_output  # "claude-sonnet-4-5-20250929", "sonnet-4", 64000

Every per-model fact the simulator acts on lives here (rate pool, output ceiling, shortest
cacheable prefix, prefill and long-context support), so a new model is one table row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the simulator needs to know about one model."""

    id: str  # the dated id, used in error messages and the cache key
    rate_pool: str  # models sharing one set of rate limits (§B.1 "combined pools")
    max_output: int
    min_cacheable: int  # shortest cacheable prefix in tokens (§C)
    cache_reads_count_toward_itpm: bool = False  # the dagger models of §B.2
    allows_prefill: bool = True  # Claude 4.6+ reject a final assistant message (§A.2)
    long_context: bool = False  # context-1m-2025-08-07 lifts the window to 1M (§B.5)
    output_128k: bool = False  # output-128k-2025-02-19 lifts max output to 128K


def _model_table() -> Mapping[str, ModelSpec]:
    """Aliases and dated ids of the models the simulator serves.

    Max output and minimum cacheable length are from §C and §F; where the reference has no
    figure (Opus 4, Sonnet 4, Sonnet 3.7, the 4.6 models) the value is Anthropic's model
    overview as remembered, and unconfirmed.
    """
    opus_4_6 = ModelSpec("claude-opus-4-6", "opus-4", 128_000, 4_096, allows_prefill=False)
    sonnet_4_6 = ModelSpec("claude-sonnet-4-6", "sonnet-4", 64_000, 1_024, allows_prefill=False)
    specs = {
        "claude-opus-4-6": opus_4_6,
        "claude-sonnet-4-6": sonnet_4_6,
        "claude-opus-4-5": ModelSpec("claude-opus-4-5-20251101", "opus-4", 64_000, 4_096),
        "claude-opus-4-1": ModelSpec("claude-opus-4-1-20250805", "opus-4", 32_000, 1_024),
        "claude-opus-4-0": ModelSpec("claude-opus-4-20250514", "opus-4", 32_000, 1_024),
        "claude-sonnet-4-5": ModelSpec(
            "claude-sonnet-4-5-20250929", "sonnet-4", 64_000, 1_024, long_context=True
        ),
        "claude-sonnet-4-0": ModelSpec(
            "claude-sonnet-4-20250514", "sonnet-4", 64_000, 1_024, long_context=True
        ),
        "claude-3-7-sonnet-latest": ModelSpec(
            "claude-3-7-sonnet-20250219", "sonnet-3-7", 64_000, 1_024, output_128k=True
        ),
        "claude-haiku-4-5": ModelSpec("claude-haiku-4-5-20251001", "haiku-4-5", 64_000, 4_096),
        "claude-3-5-haiku-latest": ModelSpec(
            "claude-3-5-haiku-20241022",
            "haiku-3-5",
            8_192,
            2_048,
            cache_reads_count_toward_itpm=True,
        ),
        # Marked with the dagger in the 2025 tables; the 2026 tables no longer list it.
        "claude-3-haiku-20240307": ModelSpec(
            "claude-3-haiku-20240307", "haiku-3", 4_096, 2_048, cache_reads_count_toward_itpm=True
        ),
    }
    by_dated_id = {spec.id: spec for spec in specs.values()}
    return MappingProxyType({**specs, **by_dated_id})


MODELS = _model_table()
