"""What tokens cost: one dated table, used by the summary, progress and `estimate`.

    price = price_for("claude-haiku-4-5-20251001")
    dollars = price.cost(usage) if price else None     # None: say "cost unknown"

USD per million tokens, from Anthropic's pricing pages (docs snapshot 2025-12-05 and
platform pages of 2026-07 to 2026-10). A model is priced only when its id is a known one
(optionally with a `-YYYYMMDD` snapshot date, `-latest`, or the `-0` of aliases such as
`claude-opus-4-0`); anything else is unknown rather than guessed from a similar name. The
Message Batches API costs half of every token category.
"""

from __future__ import annotations

from dataclasses import dataclass

from apiproc.providers.anthropic import model_family
from apiproc.tokens import Usage

PRICES_AS_OF = "2026-10"
BATCH_DISCOUNT = 0.5


@dataclass(slots=True, frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    output: float

    def cost(self, usage: Usage, batch: bool = False) -> float:
        write_1h = usage.cache_write_1h_tokens
        write_5m = usage.cache_creation_input_tokens - write_1h
        dollars = (
            usage.input_tokens * self.input
            + write_5m * self.cache_write_5m
            + write_1h * self.cache_write_1h
            + usage.cache_read_input_tokens * self.cache_read
            + usage.output_tokens * self.output
        ) / 1_000_000
        return dollars * BATCH_DISCOUNT if batch else dollars

    def uncached_cost(self, usage: Usage, batch: bool = False) -> float:
        """What the same usage would cost with no prompt caching at all."""
        plain = Usage(input_tokens=usage.total_input, output_tokens=usage.output_tokens)
        return self.cost(plain, batch)


def _price(input: float, output: float, cache_read: float | None = None) -> Price:
    return Price(
        input=input,
        cache_write_5m=input * 1.25,
        cache_write_1h=input * 2.0,
        cache_read=input * 0.1 if cache_read is None else cache_read,
        output=output,
    )


OPUS_4_5 = _price(5, 25)
OPUS_4 = _price(15, 75)
SONNET_4 = _price(3, 15)
SONNET_5 = _price(2, 10)
HAIKU_4_5 = _price(1, 5)
FABLE_5 = _price(10, 50, cache_read=1.0)
FABLE_5_1 = _price(10, 50, cache_read=0.25)

PRICES: dict[str, Price] = {
    "claude-opus-5-5": _price(4, 20, cache_read=0.20),
    "claude-opus-5": OPUS_4_5,
    "claude-opus-4-8": OPUS_4_5,
    "claude-opus-4-7": OPUS_4_5,
    "claude-opus-4-6": OPUS_4_5,
    "claude-opus-4-5": OPUS_4_5,
    "claude-opus-4-1": OPUS_4,
    "claude-opus-4": OPUS_4,
    "claude-3-opus": OPUS_4,
    "claude-sonnet-5-5": SONNET_5,
    "claude-sonnet-5": SONNET_5,
    "claude-sonnet-4-6": SONNET_4,
    "claude-sonnet-4-5": SONNET_4,
    "claude-sonnet-4": SONNET_4,
    "claude-3-7-sonnet": SONNET_4,
    "claude-haiku-4-5": HAIKU_4_5,
    "claude-3-5-haiku": _price(0.80, 4),
    "claude-3-haiku": Price(0.25, 0.30, 0.50, 0.03, 1.25),
    "claude-fable-5-1": FABLE_5_1,
    "claude-mythos-5-1": FABLE_5_1,
    "claude-fable-5": FABLE_5,
    "claude-mythos-5": FABLE_5,
}


def price_for(model: str) -> Price | None:
    """The price of `model`, or None when it is not a model the table knows."""
    return PRICES.get(model) or PRICES.get(model_family(model))


def total_cost(usage_by_model: dict[str, Usage], batch: bool = False) -> tuple[float, list[str]]:
    """Dollars for the models with a known price, and the models without one."""
    dollars = 0.0
    unknown: list[str] = []
    for model, usage in usage_by_model.items():
        price = price_for(model)
        if price is None:
            unknown.append(model)
        else:
            dollars += price.cost(usage, batch)
    return dollars, sorted(unknown)


def cache_savings(usage_by_model: dict[str, Usage], batch: bool = False) -> float:
    """Dollars prompt caching saved against the uncached price (models with a known price)."""
    saved = 0.0
    for model, usage in usage_by_model.items():
        price = price_for(model)
        if price is not None:
            saved += price.uncached_cost(usage, batch) - price.cost(usage, batch)
    return saved
