"""The facts of Anthropic's models: rate-limit class, prices, caching rules, end of life.

    facts = model_facts("claude-haiku-4-5-20251001")
    facts.limit_class, facts.price, facts.min_cacheable_tokens
    facts.token_ratio, facts.end_of_life   # tokenizer family; the day the API drops it

One dated table, from the reference notes (shared/reference/anthropic-api.md §B, §C, §F
and anthropic-api-2026.md §0, §5). A model is known only when its id is a known one,
optionally with a `-YYYYMMDD` snapshot date, `-latest`, or the `-0` of aliases such as
`claude-opus-4-0`; anything else gets safe defaults and no price rather than a guess
from a similar name.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

from apiproc.providers.base import ModelFacts, Price

PRICES_AS_OF = "2026-11-30"
# Claude's tokenizer yields somewhat more tokens than cl100k for English text; starting a
# little high keeps the first, unlearned burst on the safe side.
PRIOR_RATIO = 1.2
# Claude 4.7 and later, the 5.x models and Haiku 5.5 share a newer tokenizer: "the same
# text counts as approximately 30% more tokens than on Claude Haiku 4.5" (2026 §5.1).
NEWER_TOKENIZER_RATIO = round(PRIOR_RATIO * 1.3, 2)
NEWER_TOKENIZER = (
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-haiku-5",
    "claude-fable-5",
    "claude-mythos-5",
)


def _price(
    input: float,
    output: float,
    cache_read: float | None = None,
    long_prompt: Price | None = None,
    long_prompt_over: int = 0,
) -> Price:
    """Writes at 1.25x (5 min) and 2x (1 h) the input price, reads at 0.1x unless given."""
    return Price(
        input=input,
        cache_write_5m=input * 1.25,
        cache_write_1h=input * 2.0,
        cache_read=input * 0.1 if cache_read is None else cache_read,
        output=output,
        long_prompt=long_prompt,
        long_prompt_over=long_prompt_over,
    )


OPUS_4_5 = _price(5, 25)
OPUS_4 = _price(15, 75)
# Sonnet 4 and 4.5 with the 1M-context beta: a prompt over 200K tokens (input and cache
# reads and writes) puts every token of the request at $6 / $22.50 (anthropic-api.md §F.1).
SONNET_4 = _price(3, 15, long_prompt=_price(6, 22.50), long_prompt_over=200_000)
SONNET = _price(3, 15)
SONNET_5 = _price(2, 10)
HAIKU_4_5 = _price(1, 5)
FABLE_5 = _price(10, 50, cache_read=1.0)
FABLE_5_1 = _price(10, 50, cache_read=0.25)
# 2026-11-09. Official: $8 / $40; the cache prices (10 / 16 / 0.20) only from secondary
# sources, and the standard 1.25x and 2x writes agree with them.
FABLE_5_2 = _price(8, 40, cache_read=0.20)
# 2026-10-07. By prompt length (input + cache reads + writes): over 100,000 tokens, every
# token of the request at the higher rates, output included. Official: 0.10 / 0.125 / 0.50
# and 0.50 / 0.625 / 2.50; the 1h writes (0.20, 1.00) and the reads (0.01, 0.05) only from
# secondary sources.
HAIKU_5_5 = _price(
    0.10,
    0.50,
    cache_read=0.01,
    long_prompt=_price(0.50, 2.50, cache_read=0.05),
    long_prompt_over=100_000,
)

PRICES: dict[str, Price] = {
    "claude-fable-5-2": FABLE_5_2,
    # A guess: Mythos 5.2 has no published price; each earlier Mythos costs its Fable's.
    "claude-mythos-5-2": FABLE_5_2,
    "claude-opus-5-5": _price(4, 20, cache_read=0.20),
    "claude-opus-5": OPUS_4_5,
    "claude-opus-4-8": OPUS_4_5,
    "claude-opus-4-7": OPUS_4_5,
    "claude-opus-4-6": OPUS_4_5,
    "claude-opus-4-5": OPUS_4_5,
    "claude-opus-4-1": OPUS_4,
    "claude-opus-4": OPUS_4,
    "claude-3-opus": OPUS_4,
    # Cache reads $0.20 until 2026-10-06, $0.10 since 2026-10-07 (secondary sources).
    "claude-sonnet-5-5": _price(2, 10, cache_read=0.10),
    "claude-sonnet-5": SONNET_5,
    # No long-context tier is documented for Sonnet 4.6.
    "claude-sonnet-4-6": SONNET,
    "claude-sonnet-4-5": SONNET_4,
    "claude-sonnet-4": SONNET_4,
    "claude-3-7-sonnet": SONNET,
    "claude-haiku-5-5": HAIKU_5_5,
    "claude-haiku-4-5": HAIKU_4_5,
    "claude-3-5-haiku": _price(0.80, 4),
    "claude-3-haiku": Price(0.25, 0.30, 0.50, 0.03, 1.25),
    "claude-fable-5-1": FABLE_5_1,
    "claude-mythos-5-1": FABLE_5_1,
    "claude-fable-5": FABLE_5,
    "claude-mythos-5": FABLE_5,
}

# Models whose cache reads still count toward the input-tokens-per-minute limit
# (marked † in the rate-limit docs: Haiku 3.5 in 2026; Haiku 3 and Opus 3 in 2025).
CACHE_READS_COUNTED = ("claude-3-5-haiku", "claude-3-haiku", "claude-3-opus")

# Shortest prefix the API caches, by model family (prompt-caching docs of 2025-12; the
# 2026 figures from quotes of the 2026 page). A shorter prefix is sent uncached, silently.
# Fable 5.2 and Mythos 5.2 are unconfirmed: 512 like every other 5.x model, a guess.
MIN_CACHEABLE_TOKENS = {
    "claude-fable-5-2": 512,
    "claude-mythos-5-2": 512,
    "claude-opus-5-5": 512,
    "claude-opus-5": 512,
    "claude-sonnet-5-5": 512,
    "claude-haiku-5-5": 512,
    "claude-fable-5-1": 512,
    "claude-fable-5": 512,
    "claude-mythos-5-1": 512,
    "claude-mythos-5": 512,
    "claude-mythos-preview": 2_048,
    "claude-opus-4-8": 1_024,
    "claude-opus-4-7": 2_048,
    "claude-opus-4-6": 4_096,
    "claude-opus-4-5": 4_096,
    "claude-opus-4-1": 1_024,
    "claude-opus-4": 1_024,
    "claude-sonnet-5": 1_024,
    "claude-sonnet-4-6": 1_024,
    "claude-sonnet-4-5": 1_024,
    "claude-sonnet-4": 1_024,
    "claude-haiku-4-5": 4_096,
    "claude-3-7-sonnet": 1_024,
    "claude-3-opus": 1_024,
    "claude-3-5-haiku": 2_048,
    "claude-3-haiku": 2_048,
}

# Rate-limit groups, as the API's per-model-class tables name them (2026 rate-limits page:
# "Opus 4.x (4.8, 4.7, 4.6, 4.5 combined)", "Sonnet 4.x (4.6 and 4.5 combined)", "Fable 5.x").
# A model missing here is a class of its own.
LIMIT_CLASSES = {
    "claude-opus-5-5": "opus-5-5",
    "claude-opus-5": "opus-5",
    "claude-opus-4-8": "opus-4",
    "claude-opus-4-7": "opus-4",
    "claude-opus-4-6": "opus-4",
    "claude-opus-4-5": "opus-4",
    "claude-opus-4-1": "opus-4",  # retired; combined with Opus 4.x in the 2025 tables
    "claude-opus-4": "opus-4",  # retired; combined with Opus 4.x in the 2025 tables
    "claude-3-opus": "opus-3",
    "claude-sonnet-5-5": "sonnet-5-5",
    "claude-sonnet-5": "sonnet-5",
    "claude-sonnet-4-6": "sonnet-4",
    "claude-sonnet-4-5": "sonnet-4",
    "claude-sonnet-4": "sonnet-4",  # retired; combined with Sonnet 4.x in the 2025 tables
    "claude-3-7-sonnet": "sonnet-3-7",
    "claude-haiku-5-5": "haiku-5-5",
    "claude-haiku-4-5": "haiku-4-5",
    "claude-3-5-haiku": "haiku-3-5",
    "claude-3-haiku": "haiku-3",
    "claude-fable-5-2": "fable-5",
    "claude-fable-5-1": "fable-5",
    "claude-fable-5": "fable-5",
    # Guess: the tables name no Mythos class; Mythos 5.x as one class like Fable 5.x.
    "claude-mythos-5-1": "mythos-5",
    "claude-mythos-5": "mythos-5",
    "claude-mythos-preview": "mythos-5",
}

# The day the API stops serving a model and answers 404 (the SDK's deprecated-models
# table, anthropic-api-2026.md §0). Later dates than these are unannounced.
END_OF_LIFE = {
    "claude-sonnet-4-5": date(2026, 11, 30),
    "claude-opus-4-5": date(2027, 1, 22),
    "claude-mythos-preview": date(2026, 6, 30),
}

# A dated snapshot, `-latest`, and the `-0` of aliases such as `claude-opus-4-0`.
_FAMILY = re.compile(r"^(?P<family>.+?)(?:-0)?(?:-\d{8}|-latest)?$")


@lru_cache(maxsize=1024)  # asked for every request; a run names few models
def model_family(model: str) -> str:
    """The model id without its snapshot date or alias suffix: `claude-sonnet-4-5`."""
    match = _FAMILY.match(model)
    return match.group("family") if match else model


def _known(table: dict, model: str):  # type: ignore[no-untyped-def]
    return table.get(model) or table.get(model_family(model))


def price_for(model: str) -> Price | None:
    """The price of `model`, or None when it is not a model the table knows."""
    return _known(PRICES, model)


def limit_class(model: str) -> str:
    """The rate-limit group of `model`: `sonnet-4` for `claude-sonnet-4-6-20260101`; a
    model the table does not know (or a group's own name) is a group of its own."""
    return _known(LIMIT_CLASSES, model) or model_family(model)


def counts_cache_reads(model: str) -> bool:
    return model.startswith(CACHE_READS_COUNTED)


def min_cacheable_tokens(model: str) -> int | None:
    """The shortest prefix `model` caches; None for a model this table does not know."""
    return _known(MIN_CACHEABLE_TOKENS, model)


def end_of_life(model: str) -> date | None:
    """The first day the API answers 404 for `model`; None when none is announced."""
    return _known(END_OF_LIFE, model)


def token_ratio(model: str) -> float:
    """First guess of `model`'s tokens per cl100k token, by its tokenizer family."""
    return NEWER_TOKENIZER_RATIO if model.startswith(NEWER_TOKENIZER) else PRIOR_RATIO


@lru_cache(maxsize=256)
def model_facts(model: str) -> ModelFacts:
    return ModelFacts(
        limit_class=limit_class(model),
        token_ratio=token_ratio(model),
        min_cacheable_tokens=min_cacheable_tokens(model),
        cache_reads_count=counts_cache_reads(model),
        price=price_for(model),
        end_of_life=end_of_life(model),
    )
