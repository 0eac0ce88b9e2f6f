"""The models the simulator serves, by alias and by dated id, and when each one retires.

    spec = MODELS["claude-haiku-4-5"]
    spec.id, spec.rate_pool, spec.max_output  # "claude-haiku-4-5-20251001", "haiku-4-5", 64000
    spec.retired_on(date(2026, 12, 1))        # False; True for claude-sonnet-4-5 from 2026-11-30

Every per-model fact the simulator acts on lives here (rate pool, output ceiling, context
window, shortest cacheable prefix, prefill support, end of life), so a new model is one
table row. Rate pools follow the per-class tables of the 2026 rate-limit page
(anthropic-api-2026.md §3.1): one pool per class, "Opus 4.x" and "Sonnet 4.x" combined.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType

STANDARD_CONTEXT = 200_000
MILLION_CONTEXT = 1_000_000


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the simulator needs to know about one model."""

    id: str  # the dated id (or the alias where there is none), used in errors and cache keys
    rate_pool: str  # models sharing one set of rate limits (one class of the §3.1 tables)
    max_output: int
    min_cacheable: int  # shortest cacheable prefix in tokens (§C, 2026 §5.2)
    cache_reads_count_toward_itpm: bool = False  # the dagger models of §B.2
    allows_prefill: bool = True  # Claude 4.6+ reject a final assistant message (§A.2)
    context_window: int = STANDARD_CONTEXT
    long_context: bool = False  # context-1m-2025-08-07 lifts the window to 1M (§B.5)
    output_128k: bool = False  # output-128k-2025-02-19 lifts max output to 128K
    output_300k_batch: bool = False  # in a batch, output-300k-2026-03-24 lifts it to 300K
    end_of_life: date | None = None  # from this day on the API answers 404 (2026 §0)

    def retired_on(self, today: date) -> bool:
        return self.end_of_life is not None and today >= self.end_of_life


def _current(
    model_id: str, pool: str, min_cacheable: int, output_300k_batch: bool = False
) -> ModelSpec:
    """A 2026 model: 128K output, 1M context, no prefill (2026 §5.1; §A.2 for prefill)."""
    return ModelSpec(
        model_id,
        pool,
        128_000,
        min_cacheable,
        allows_prefill=False,
        context_window=MILLION_CONTEXT,
        output_300k_batch=output_300k_batch,
    )


def _current_models() -> list[ModelSpec]:
    """The 2026 lineup (2026 §0, §5). Fable 5.2, Opus 5.5, Sonnet 5.5 and Haiku 5.5 have
    128K output and a 1M context on the overview page; the other 5.x models, Opus 4.7/4.8
    and Mythos are given the same, a guess. Mythos is in no rate-limit table: its own pools
    are a guess, as are the 512-token minimums of Fable 5.2 and Mythos 5.2 (like 5.x)."""
    return [
        _current("claude-fable-5-2", "fable-5", 512),
        _current("claude-fable-5-1", "fable-5", 512),
        _current("claude-fable-5", "fable-5", 512),
        _current("claude-mythos-5-2", "mythos-5", 512),
        _current("claude-mythos-5-1", "mythos-5", 512),
        _current("claude-mythos-5", "mythos-5", 512),
        _current("claude-opus-5-5", "opus-5-5", 512),
        _current("claude-opus-5", "opus-5", 512, output_300k_batch=True),
        _current("claude-opus-4-8", "opus-4", 1_024),
        _current("claude-opus-4-7", "opus-4", 2_048),
        _current("claude-sonnet-5-5", "sonnet-5-5", 512, output_300k_batch=True),
        _current("claude-sonnet-5", "sonnet-5", 1_024, output_300k_batch=True),
        _current("claude-haiku-5-5", "haiku-5-5", 512),
    ]


def _earlier_models() -> dict[str, ModelSpec]:
    """Aliases of the 2025 models. Max output and minimum cacheable length are from §C and
    §F; where the reference has no figure (Opus 4, Sonnet 4, Sonnet 3.7, the 4.6 models,
    Mythos Preview) the value is Anthropic's model overview as remembered, and unconfirmed."""
    return {
        "claude-mythos-preview": ModelSpec(
            "claude-mythos-preview",
            "mythos-preview",
            128_000,
            2_048,
            allows_prefill=False,
            end_of_life=date(2026, 6, 30),
        ),
        "claude-opus-4-6": ModelSpec(
            "claude-opus-4-6", "opus-4", 128_000, 4_096, allows_prefill=False
        ),
        "claude-sonnet-4-6": ModelSpec(
            "claude-sonnet-4-6", "sonnet-4", 64_000, 1_024, allows_prefill=False
        ),
        "claude-opus-4-5": ModelSpec(
            "claude-opus-4-5-20251101", "opus-4", 64_000, 4_096, end_of_life=date(2027, 1, 22)
        ),
        "claude-opus-4-1": ModelSpec("claude-opus-4-1-20250805", "opus-4", 32_000, 1_024),
        "claude-opus-4-0": ModelSpec("claude-opus-4-20250514", "opus-4", 32_000, 1_024),
        "claude-sonnet-4-5": ModelSpec(
            "claude-sonnet-4-5-20250929",
            "sonnet-4",
            64_000,
            1_024,
            long_context=True,
            end_of_life=date(2026, 11, 30),
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


def _model_table() -> Mapping[str, ModelSpec]:
    """Every alias and dated id the simulator serves (or answers 404 for once retired)."""
    specs = {spec.id: spec for spec in _current_models()}
    specs.update(_earlier_models())
    by_dated_id = {spec.id: spec for spec in specs.values()}
    return MappingProxyType({**specs, **by_dated_id})


MODELS = _model_table()
