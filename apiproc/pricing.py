"""What tokens cost, added up answer by answer from any provider's price list.

    bill = Bill(provider.model(model).price)   # a price of None: this model's cost is unknown
    bill.add(usage)                            # one answer; its prompt length picks the tier
    dollars, unknown = total_cost(stats.bills)
    saved = cache_savings(stats.bills)

Prices themselves are model facts and live with each provider (`ModelFacts.price`); a
model without a known price is reported as "cost unknown" rather than guessed. A tiered
price depends on each request's prompt length, so each answer's usage is added to the sum
of its tier, which is priced as its answers would be one by one. The Message Batches APIs
charge half of every token category (`batch=True`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from apiproc.providers.base import BATCH_DISCOUNT, Price, Usage

PriceOf = Callable[[str], "Price | None"]

__all__ = ["BATCH_DISCOUNT", "Bill", "Price", "PriceOf", "cache_savings", "total_cost"]


@dataclass(slots=True)
class Bill:
    """The usage of one model's answers, summed by price tier, and so their cost and what
    they would have cost without caching.

    Within a tier the price is linear in each kind of token, so a tier's sum is priced
    exactly as its answers one by one would be (and without their rounding errors); each
    answer's own prompt length picks its tier as it is added."""

    price: Price | None
    # (long-prompt tier, at the batch discount) -> the usage of those answers, summed
    _sums: dict[tuple[bool, bool], Usage] = field(default_factory=dict)

    def add(self, usage: Usage, batch: bool = False) -> None:
        """Add one answer's usage (counted, not priced, when the price is unknown)."""
        price = self.price
        # The tier's rule is the price's own: a long prompt has rates of its own.
        tier = (price is not None and price.for_prompt(usage.total_input) is not price, batch)
        summed = self._sums.get(tier)
        if summed is None:
            summed = self._sums[tier] = Usage()
        summed.add(usage)

    def merge(self, other: Bill) -> None:
        """Add every answer of `other`, a bill of the same model."""
        for tier, usage in other._sums.items():
            self._sums.setdefault(tier, Usage()).add(usage)

    @property
    def usage(self) -> Usage:
        """Every answer's usage, summed."""
        total = Usage()
        for usage in self._sums.values():
            total.add(usage)
        return total

    @property
    def dollars(self) -> float:
        return sum(self._rates(long).tier_cost(u, batch) for (long, batch), u in self._tiers())

    @property
    def uncached_dollars(self) -> float:
        return sum(
            self._rates(long).tier_uncached_cost(u, batch) for (long, batch), u in self._tiers()
        )

    def _tiers(self) -> list[tuple[tuple[bool, bool], Usage]]:
        return list(self._sums.items()) if self.price is not None else []

    def _rates(self, long: bool) -> Price:
        assert self.price is not None
        return self.price.long_prompt if long and self.price.long_prompt else self.price


def total_cost(bills: Mapping[str, Bill]) -> tuple[float, list[str]]:
    """Dollars for the models with a known price, and the models without one."""
    dollars = sum(bill.dollars for bill in bills.values())
    unknown = sorted(model for model, bill in bills.items() if bill.price is None)
    return dollars, unknown


def cache_savings(bills: Mapping[str, Bill]) -> float:
    """Dollars prompt caching saved against the uncached price (models with a known price)."""
    return sum(bill.uncached_dollars - bill.dollars for bill in bills.values())
