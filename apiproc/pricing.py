"""What tokens cost, from any provider's price list.

    dollars, unknown = total_cost(stats.usage_by_model, provider.price)
    saved = cache_savings(stats.usage_by_model, provider.price)

Prices themselves are model facts and live with each provider (`ModelFacts.price`); a
model without a known price is reported as "cost unknown" rather than guessed. The
Message Batches APIs charge half of every token category (`batch=True`).
"""

from __future__ import annotations

from collections.abc import Callable

from apiproc.providers.base import BATCH_DISCOUNT, Price, Usage

PriceOf = Callable[[str], "Price | None"]

__all__ = ["BATCH_DISCOUNT", "Price", "PriceOf", "cache_savings", "total_cost"]


def total_cost(
    usage_by_model: dict[str, Usage], price_of: PriceOf, batch: bool = False
) -> tuple[float, list[str]]:
    """Dollars for the models with a known price, and the models without one."""
    dollars = 0.0
    unknown: list[str] = []
    for model, usage in usage_by_model.items():
        price = price_of(model)
        if price is None:
            unknown.append(model)
        else:
            dollars += price.cost(usage, batch)
    return dollars, sorted(unknown)


def cache_savings(
    usage_by_model: dict[str, Usage], price_of: PriceOf, batch: bool = False
) -> float:
    """Dollars prompt caching saved against the uncached price (models with a known price)."""
    saved = 0.0
    for model, usage in usage_by_model.items():
        price = price_of(model)
        if price is not None:
            saved += price.uncached_cost(usage, batch) - price.cost(usage, batch)
    return saved
