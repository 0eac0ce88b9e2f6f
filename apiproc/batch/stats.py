"""What a batch run did, for the progress display, the summary and the exit status.

    stats = BatchStats(price_of=lambda model: provider.model(model).price)
    stats.count(result, model, usage)      # every record written to the output
    stats.batch_cost(), stats.online_equivalent()

The same counters as an online run where they mean the same (succeeded, errored by
type, skipped, usage by model), plus what only batches have: batches created and
written, requests sent again, expired and canceled results seen, live batches left.
Each answer is priced as it comes (a tiered price depends on its own prompt length), at
the batch price and, for the saving, at the online price.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from apiproc.pricing import Bill, PriceOf, cache_savings, total_cost
from apiproc.providers.base import Usage
from apiproc.results import Result

if TYPE_CHECKING:
    from apiproc.engine import RunStats


@dataclass(slots=True)
class LiveBatch:
    """A batch still running when the progress is shown or the run stops."""

    batch_id: str
    status: str
    requests: int
    created_at: float | None


@dataclass(slots=True)
class BatchStats:
    succeeded: int = 0
    errored: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # already final in the output from earlier runs
    submitted: int = 0  # requests put into batches by this run
    sent_again: int = 0  # results (errored, expired, canceled) put back for another attempt
    outcomes: dict[str, int] = field(default_factory=dict)  # every result seen, by kind
    batches_created: int = 0
    batches_written: int = 0
    live: list[LiveBatch] = field(default_factory=list)
    pooled: int = 0  # requests waiting to be sent again when the run stopped
    pending: bool = False  # work is left for a later run of the same command
    usage: Usage = field(default_factory=Usage)
    bills: dict[str, Bill] = field(default_factory=dict)  # at the batch price, by model
    online_bills: dict[str, Bill] = field(default_factory=dict)  # the same answers online
    online: RunStats | None = None  # requests sent through the online path instead
    api_calls: int = 0
    api_rate_limited: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float = 0.0
    fatal: str | None = None
    interrupted: str | None = None
    hurried: bool = False  # (online runs only: a second signal while stopping)
    # Online-run figures the exit status reads; a batch run keeps them empty: a failed
    # write stops it, and the journal knows what each batch still owes the output.
    unwritten: list[str] = field(default_factory=list)
    broken_pipe: bool = False
    changed: list[str] = field(default_factory=list)
    unrecorded: int = 0
    state_path: str = ""
    price_of: PriceOf | None = field(default=None, repr=False)
    prices_as_of: str = ""

    def count(self, result: Result, model: str | None, usage: Usage | None) -> None:
        """A record written to the output."""
        if result.succeeded:
            self.succeeded += 1
        else:
            kind = result.error_type
            self.errored[kind] = self.errored.get(kind, 0) + 1
        if usage is not None and model is not None:
            self.usage.add(usage)
            self._bill(self.bills, model).add(usage, batch=True)
            self._bill(self.online_bills, model).add(usage)

    def _bill(self, bills: dict[str, Bill], model: str) -> Bill:
        bill = bills.get(model)
        if bill is None:
            bill = bills[model] = Bill(self.price_of(model) if self.price_of else None)
        return bill

    def saw(self, kind: str) -> None:
        self.outcomes[kind] = self.outcomes.get(kind, 0) + 1

    @property
    def errored_total(self) -> int:
        online = self.online.errored_total if self.online is not None else 0
        return sum(self.errored.values()) + online

    @property
    def done(self) -> int:
        online = self.online.done if self.online is not None else 0
        return self.succeeded + sum(self.errored.values()) + online

    @property
    def elapsed(self) -> float:
        return max(0.0, (self.finished or time.monotonic()) - self.started)

    def batch_cost(self) -> tuple[float, list[str]]:
        """Dollars at the batch price for the batch results' usage."""
        return total_cost(self.bills)

    def online_equivalent(self) -> float:
        """What the same usage would have cost through the online path."""
        return total_cost(self.online_bills)[0]

    def online_cost(self) -> float:
        """What the requests sent through the online path instead cost."""
        return 0.0 if self.online is None else total_cost(self.online.bills)[0]

    def cache_savings(self) -> float:
        return cache_savings(self.bills)
