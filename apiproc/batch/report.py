"""What a person sees of a batch run: progress after each poll, and the summary.

    display = BatchDisplay(reporter)      # run.display: called after every poll
    reporter.line("\\n".join(summary_lines(stats, "out.jsonl")))

Progress comes from the batches' `request_counts`, which stay in `processing` until a
whole batch ends, so the figures that move are batches ended and results written. On a
terminal it is a live panel; in cron and pipes, one line per poll.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from apiproc.batch.runner import BatchRun, Snapshot
from apiproc.batch.stats import BatchStats
from apiproc.report import Reporter, cache_hit_rate, duration


def progress_line(shot: Snapshot) -> str:
    statuses: dict[str, int] = {}
    for batch in shot.live:
        statuses[batch.status] = statuses.get(batch.status, 0) + 1
    running = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    return (
        f"batches: {len(shot.live)} running{f' ({running})' if running else ''}, "
        f"{shot.batches_written} written of {shot.batches_created} created | "
        f"requests: {shot.processing:,} processing, {shot.written:,} written "
        f"({shot.succeeded:,} ok, {shot.errored:,} errored), {shot.pooled:,} to send again | "
        f"${shot.cost:,.4f} | {duration(shot.elapsed)} elapsed, "
        f"next poll in {duration(shot.next_poll)}"
    )


@dataclass(slots=True)
class _LiveView:
    """Re-rendered by rich every second from the last snapshot, so the clock moves."""

    shot: Snapshot | None = None
    taken: float = field(default_factory=time.monotonic)

    def __rich__(self) -> Group:
        shot = self.shot
        if shot is None:
            return Group(Text("submitting..."))
        waited = time.monotonic() - self.taken
        lines = [
            Text(
                f"batches {shot.batches_written} written / {shot.batches_created} created, "
                f"{len(shot.live)} running",
                style="bold",
            ),
            Text(
                f"requests: processing {shot.processing:,}  written {shot.written:,} "
                f"(ok {shot.succeeded:,}, errored {shot.errored:,})  to send again "
                f"{shot.pooled:,}"
            ),
        ]
        for batch in shot.live[:8]:
            lines.append(Text(f"  {batch.batch_id}  {batch.status:<12} {batch.requests:>9,}"))
        if len(shot.live) > 8:
            lines.append(Text(f"  ... and {len(shot.live) - 8} more"))
        lines.append(
            Text(
                f"cost so far ${shot.cost:,.4f}  elapsed {duration(shot.elapsed + waited)}  "
                f"next poll in {duration(max(0.0, shot.next_poll - waited))}"
            )
        )
        return Group(*lines)


class BatchDisplay:
    """Progress after each poll: live on a terminal, one line per poll otherwise."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._view = _LiveView()
        self._live: Live | None = None

    def __call__(self, run: BatchRun) -> None:
        if self.reporter.quiet:
            return
        shot = run.snapshot()
        if not self.reporter.stream.isatty():
            self.reporter.line(progress_line(shot))
            return
        self._view.shot, self._view.taken = shot, time.monotonic()
        if self._live is None:
            console = Console(file=self.reporter.stream)
            self._live = Live(self._view, console=console, refresh_per_second=1, transient=True)
            self._live.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def summary_lines(stats: BatchStats, output_path: str) -> list[str]:
    errors = ", ".join(f"{kind} {count:,}" for kind, count in sorted(stats.errored.items()))
    usage = stats.usage
    lines = [
        f"Succeeded: {stats.succeeded:,}",
        f"Errored:   {sum(stats.errored.values()):,}" + (f" ({errors})" if errors else ""),
    ]
    if stats.skipped:
        lines.append(f"Skipped:   {stats.skipped:,} already in the output from earlier runs")
    seen = ", ".join(f"{kind} {count:,}" for kind, count in sorted(stats.outcomes.items()))
    lines += [
        f"Batches:   {stats.batches_created:,} created, {stats.batches_written:,} written; "
        f"{stats.submitted:,} requests submitted, {stats.sent_again:,} sent again",
        *([f"Results:   {seen} (every attempt)"] if seen else []),
    ]
    if stats.online is not None:
        online = stats.online
        lines.append(
            f"Online:    {online.done:,} sent through the online path instead "
            f"({online.succeeded:,} ok, {online.errored_total:,} errored), "
            f"${stats.online_cost():,.4f} at the online price"
        )
    lines += [
        f"Tokens:    input {usage.input_tokens:,}, output {usage.output_tokens:,}, "
        f"cache write {usage.cache_creation_input_tokens:,}, "
        f"cache read {usage.cache_read_input_tokens:,}",
        *([f"Caching:   {cache}"] if (cache := cache_text(stats)) else []),
        f"Cost:      {cost_text(stats)} (prices of {stats.prices_as_of})",
        f"Elapsed:   {stats.elapsed:,.1f} s; {stats.api_calls:,} calls to the batch endpoints"
        + (f" ({stats.api_rate_limited:,} answered 429)" if stats.api_rate_limited else ""),
        f"Output:    {output_path}",
        f"State:     {stats.state_path}",
    ]
    if stats.fatal:
        lines.append(f"Stopped:   {stats.fatal}")
    if stats.interrupted:
        lines.append(f"Stopped:   by {stats.interrupted}")
    if stats.live:
        ids = ", ".join(batch.batch_id for batch in stats.live[:5])
        more = f" and {len(stats.live) - 5} more" if len(stats.live) > 5 else ""
        lines.append(
            f"Running:   {len(stats.live):,} batches still run at the provider ({ids}{more}); "
            "they are paid for whether or not their results are collected"
        )
    if stats.pooled:
        lines.append(f"Pending:   {stats.pooled:,} requests wait to be sent again")
    return lines


def cost_text(stats: BatchStats) -> str:
    dollars, unknown = stats.batch_cost()
    online = stats.online_equivalent()
    parts = [f"${dollars:,.4f} at the batch price"]
    if online > 0:
        parts.append(f"the same usage online ${online:,.4f}, saved ${online - dollars:,.4f}")
    if unknown:
        parts.append("cost unknown for " + ", ".join(unknown))
    return "; ".join(parts)


def cache_text(stats: BatchStats) -> str | None:
    usage = stats.usage
    rate = cache_hit_rate(usage)
    if rate is None:
        return None
    return (
        f"{usage.cache_creation_input_tokens:,} tokens written, "
        f"{usage.cache_read_input_tokens:,} read, hit rate {rate:.1%}, "
        f"saved ${stats.cache_savings():,.4f} against the uncached batch price"
    )


def summary_record(stats: BatchStats, output_path: str) -> dict[str, Any]:
    """The summary as JSON (--summary-json)."""
    usage = stats.usage
    dollars, unknown = stats.batch_cost()
    online = stats.online
    return {
        "mode": "batch",
        "succeeded": stats.succeeded,
        "errored": sum(stats.errored.values()),
        "errored_by_type": dict(sorted(stats.errored.items())),
        "skipped": stats.skipped,
        "batches_created": stats.batches_created,
        "batches_written": stats.batches_written,
        "submitted": stats.submitted,
        "sent_again": stats.sent_again,
        "results_seen": dict(sorted(stats.outcomes.items())),
        "tokens": {
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "cache_write": usage.cache_creation_input_tokens,
            "cache_read": usage.cache_read_input_tokens,
        },
        "cost_usd": round(dollars, 6),
        "online_equivalent_usd": round(stats.online_equivalent(), 6),
        "saved_usd": round(stats.online_equivalent() - dollars, 6),
        "cost_unknown_models": unknown,
        "prices_as_of": stats.prices_as_of,
        "online_fallback": None
        if online is None
        else {
            "succeeded": online.succeeded,
            "errored": online.errored_total,
            "cost_usd": round(stats.online_cost(), 6),
        },
        "elapsed_seconds": round(stats.elapsed, 3),
        "api_calls": stats.api_calls,
        "api_rate_limited": stats.api_rate_limited,
        "running_batches": [batch.batch_id for batch in stats.live],
        "pending": stats.pooled,
        "stopped": stats.fatal or stats.interrupted,
        "output": output_path,
        "state": stats.state_path,
    }
