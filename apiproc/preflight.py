"""Before spending anything: validate a requests file and say what running it will take.

    report = preflight("requests.jsonl", facts=provider.model, check=provider.validate)
    low, high = report.implied_seconds(Limits(requests_per_minute=1_000))
    report.retiring(today, within_days=30)  # models past or near their end of life

Reads the file once, in large batches, validates every line exactly as `run` would
(bad lines are reported with their line numbers), counts requests, estimated input
tokens and the output ceiling (the sum of `max_tokens`) per model, and from those the
cost range and the time the given limits imply. Each request is priced on its own, as a
tiered price needs. A large file is split at line boundaries and measured by one process
per core, which is what makes it fast; `facts` and `check` go to those processes, so they
must pickle (module-level functions, or methods of a plain provider).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import BinaryIO

from apiproc.jobs import DUPLICATE_CUSTOM_ID, BadLine, Check, JobReader
from apiproc.limiter import Limits
from apiproc.providers.base import BATCH_DISCOUNT, ModelFacts, Usage
from apiproc.tokens import PRIOR_RATIO, TokenEstimator

Facts = Callable[[str], ModelFacts]

BATCH_LINES = 4_096
MAX_BAD_LINES_KEPT = 1_000
PARALLEL_MIN_BYTES = 4 << 20
MAX_WORKERS = 8


@dataclass(slots=True)
class ModelTotals:
    requests: int = 0
    input_tokens: int = 0  # cl100k counts corrected by the model's ratio to cl100k
    output_ceiling: int = 0
    cost_without_output: float = 0.0  # dollars, each request priced on its own
    cost_with_all_output: float = 0.0  # the same, had every request used all of max_tokens
    ratio: float = PRIOR_RATIO  # the model's tokens per cl100k token, as its provider guesses
    facts: ModelFacts | None = None


@dataclass(slots=True)
class Preflight:
    lines: int = 0
    requests: int = 0
    bad_lines: int = 0
    bad: list[BadLine] = field(default_factory=list)
    by_model: dict[str, ModelTotals] = field(default_factory=dict)

    @property
    def input_tokens(self) -> int:
        return sum(totals.input_tokens for totals in self.by_model.values())

    @property
    def output_ceiling(self) -> int:
        return sum(totals.output_ceiling for totals in self.by_model.values())

    def cost_range(self, batch: bool = False) -> tuple[float, float, list[str]]:
        """Dollars if no output at all / if every request used all of max_tokens; and the
        models without a known price."""
        low = high = 0.0
        unknown: list[str] = []
        for model, totals in sorted(self.by_model.items()):
            if totals.facts is None or totals.facts.price is None:
                unknown.append(model)
                continue
            low += totals.cost_without_output
            high += totals.cost_with_all_output
        # Every token category is discounted alike, so the batch cost is a plain share.
        discount = BATCH_DISCOUNT if batch else 1.0
        return low * discount, high * discount, unknown

    def retiring(self, today: date, within_days: int) -> list[tuple[str, date]]:
        """The models at or past their end of life, or reaching it within `within_days`."""
        found = []
        for model, totals in sorted(self.by_model.items()):
            end = totals.facts.end_of_life if totals.facts is not None else None
            if end is not None and (end - today).days <= within_days:
                found.append((model, end))
        return found

    def implied_seconds(self, limits: Limits) -> tuple[float, float] | None:
        """Least and most time the limits imply (outputs of nothing / of max_tokens);
        None when no limit is given."""
        given = limits.by_dimension()
        if not given:
            return None
        low_use = {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": 0,
            "tokens": self.input_tokens,
        }
        high_use = {
            **low_use,
            "output_tokens": self.output_ceiling,
            "tokens": self.input_tokens + self.output_ceiling,
        }
        return _seconds(low_use, given), _seconds(high_use, given)


def _seconds(use: dict[str, int], limits: dict[str, float]) -> float:
    """Bucket starts full: max over the limits of (total - capacity) / rate."""
    return max(max(0.0, use[name] - limit) / (limit / 60.0) for name, limit in limits.items())


def preflight(
    path: str, facts: Facts, check: Check | None = None, workers: int | None = None
) -> Preflight:
    """Validate and measure every line of `path` without sending anything; `facts(model)`
    gives each model's token ratio, price and end of life, `check(params)` what the API
    would refuse.

    A large file is split at line boundaries and measured by one process per core.
    """
    report = _preflight(path, facts, check, workers)
    for model, totals in report.by_model.items():
        totals.facts = facts(model)
        totals.ratio = totals.facts.token_ratio
    return report


def _preflight(path: str, facts: Facts, check: Check | None, workers: int | None) -> Preflight:
    size = os.path.getsize(path)
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_WORKERS) if size >= PARALLEL_MIN_BYTES else 1
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return _measure(path, 0, size, facts, check)[0]
    ranges = _split(path, size, workers)
    TokenEstimator()  # loads tiktoken's encoding once, before the workers fork
    parts_args = [(path, start, end, facts, check) for start, end in ranges]
    with multiprocessing.get_context("fork").Pool(len(ranges)) as pool:
        parts = pool.starmap(_measure, parts_args)
    return _merge(parts)


def _split(path: str, size: int, parts: int) -> list[tuple[int, int]]:
    """Byte ranges covering the file, each starting at the beginning of a line."""
    starts = [0]
    with open(path, "rb") as handle:
        for index in range(1, parts):
            handle.seek(max(starts[-1], size * index // parts))
            handle.readline()
            starts.append(min(handle.tell(), size))
    starts.append(size)
    return [(a, b) for a, b in itertools.pairwise(starts) if b > a]


def _measure(
    path: str, start: int, end: int, facts: Facts, check: Check | None
) -> tuple[Preflight, dict[str, int]]:
    """Measure the lines in [start, end); also return their ids with line numbers."""
    counter = _Counter(TokenEstimator(), facts)
    report = Preflight()
    reader = JobReader(check)
    ids: dict[str, int] = {}
    pending: list[tuple[str, int, dict]] = []
    with open(path, "rb") as handle:
        reader.line_no = _newlines_before(handle, start)
        handle.seek(start)
        position = start
        for raw in handle:
            if position >= end:
                break
            position += len(raw)
            report.lines += 1
            item = reader.feed(raw)
            if item is None:
                continue
            ids.setdefault(item.custom_id, item.line_no)
            if isinstance(item, BadLine):
                _add_bad(report, item)
                continue
            pending.append((item.params["model"], _ceiling(item.params), item.params))
            if len(pending) >= BATCH_LINES:
                counter.count(pending, report)
    counter.count(pending, report)
    return report, ids


def _ceiling(params: dict) -> int:
    """The request's output ceiling; 0 where it sets none (it then adds no known bound)."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _newlines_before(handle: BinaryIO, offset: int) -> int:
    count = 0
    while offset > 0:
        block = handle.read(min(offset, 1 << 20))
        if not block:
            break
        count += block.count(b"\n")
        offset -= len(block)
    return count


def _merge(parts: list[tuple[Preflight, dict[str, int]]]) -> Preflight:
    report = Preflight()
    seen: dict[str, int] = {}
    for part, ids in parts:
        report.lines += part.lines
        report.requests += part.requests
        report.bad_lines += part.bad_lines
        for bad in part.bad:
            _add_bad(report, bad, count=False)
        for model, totals in part.by_model.items():
            merged = report.by_model.setdefault(model, ModelTotals())
            merged.requests += totals.requests
            merged.input_tokens += totals.input_tokens
            merged.output_ceiling += totals.output_ceiling
            merged.cost_without_output += totals.cost_without_output
            merged.cost_with_all_output += totals.cost_with_all_output
        for custom_id, line_no in ids.items():
            if custom_id in seen:
                # A duplicate across parts: reported, though its tokens stay in the totals.
                report.requests -= 1
                reason = f"duplicate custom_id {custom_id!r}: ids must be unique in a file"
                duplicate = BadLine(f"line-{line_no}", line_no, reason, code=DUPLICATE_CUSTOM_ID)
                _add_bad(report, duplicate)
            else:
                seen[custom_id] = line_no
    report.bad.sort(key=lambda bad: bad.line_no)
    return report


def _add_bad(report: Preflight, bad: BadLine, count: bool = True) -> None:
    if count:
        report.bad_lines += 1
    if len(report.bad) < MAX_BAD_LINES_KEPT:
        report.bad.append(bad)


@dataclass(slots=True)
class _Counter:
    """Counts and prices batches of requests; each model's facts are asked for once."""

    estimator: TokenEstimator
    facts: Facts
    known: dict[str, ModelFacts] = field(default_factory=dict)

    def count(self, pending: list[tuple[str, int, dict]], report: Preflight) -> None:
        if not pending:
            return
        counts = [self.estimator.count(params) for _, _, params in pending]
        for (model, max_tokens, _), raw in zip(pending, counts, strict=True):
            facts = self.known.get(model) or self.known.setdefault(model, self.facts(model))
            input_tokens = math.ceil(raw * facts.token_ratio)
            totals = report.by_model.setdefault(model, ModelTotals())
            totals.requests += 1
            totals.input_tokens += input_tokens
            totals.output_ceiling += max_tokens
            if facts.price is not None:
                totals.cost_without_output += facts.price.cost(Usage(input_tokens=input_tokens))
                totals.cost_with_all_output += facts.price.cost(
                    Usage(input_tokens=input_tokens, output_tokens=max_tokens)
                )
        report.requests += len(pending)
        pending.clear()
