"""What tokens cost, added up answer by answer from any provider's price list.

    bill = Bill(provider.model(model).price)   # a price of None: this model's cost is unknown
    bill.add(usage)                            # one answer; its prompt length picks the tier
    dollars, unknown = total_cost(stats.bills)
    saved = cache_savings(stats.bills)

Prices themselves are model facts and live with each provider (`ModelFacts.price`); a
model without a known price is reported as "cost unknown" rather than guessed. A tiered
price depends on each request's prompt length, so answers are priced one by one as they
arrive: a sum of usages cannot be priced afterwards. The Message Batches APIs charge half
of every token category (`batch=True`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from apiproc.providers.base import BATCH_DISCOUNT, Price, Usage

PriceOf = Callable[[str], "Price | None"]

__all__ = ["BATCH_DISCOUNT", "Bill", "Price", "PriceOf", "cache_savings", "total_cost"]


@dataclass(slots=True)
class Bill:
    """The cost of one model's answers, and what they would have cost without caching."""

    price: Price | None
    dollars: float = 0.0
    uncached_dollars: float = 0.0

    def add(self, usage: Usage, batch: bool = False) -> None:
        """Price one answer's usage (nothing is added when the price is unknown)."""
        if self.price is None:
            return
        self.dollars += self.price.cost(usage, batch)
        self.uncached_dollars += self.price.uncached_cost(usage, batch)


def total_cost(bills: Mapping[str, Bill]) -> tuple[float, list[str]]:
    """Dollars for the models with a known price, and the models without one."""
    dollars = sum(bill.dollars for bill in bills.values())
    unknown = sorted(model for model, bill in bills.items() if bill.price is None)
    return dollars, unknown


def cache_savings(bills: Mapping[str, Bill]) -> float:
    """Dollars prompt caching saved against the uncached price (models with a known price)."""
    return sum(bill.uncached_dollars - bill.dollars for bill in bills.values())
