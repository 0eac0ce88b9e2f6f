"""What a person sees on stderr: periodic progress lines and the final summary.

    reporter = Reporter(stream=sys.stderr)
    task = asyncio.create_task(reporter.every(10.0, engine.stats))
    reporter.summary(stats, output_path="out.jsonl")

Results never go here; they go to the output file (or stdout).
"""

from __future__ import annotations

import asyncio
from typing import TextIO

from apiproc.engine import RunStats
from apiproc.pricing import PRICES_AS_OF, cache_savings, total_cost
from apiproc.tokens import Usage


def _per_minute(count: float, seconds: float) -> float:
    return count * 60.0 / seconds if seconds > 0 else 0.0


def progress_line(stats: RunStats) -> str:
    elapsed = stats.elapsed
    done = stats.succeeded + stats.errored_total
    usage = stats.usage
    return (
        f"{done:,} done ({stats.succeeded:,} ok, {stats.errored_total:,} errored), "
        f"{stats.retries:,} retries, {stats.rate_limited:,} rate-limited, "
        f"{_per_minute(stats.succeeded, elapsed):,.0f} req/min, "
        f"{_per_minute(usage.input_tokens + usage.cache_creation_input_tokens, elapsed):,.0f} "
        f"in-tok/min, {_per_minute(usage.output_tokens, elapsed):,.0f} out-tok/min, "
        f"{elapsed:,.0f} s"
    ) + cache_progress(stats)


def summary_lines(stats: RunStats, output_path: str) -> list[str]:
    elapsed = stats.elapsed
    usage = stats.usage
    total_tokens = usage.total_input + usage.output_tokens
    lines = [
        f"Succeeded: {stats.succeeded:,}",
        f"Errored:   {stats.errored_total:,}"
        + (
            " ("
            + ", ".join(f"{kind} {count:,}" for kind, count in sorted(stats.errored.items()))
            + ")"
            if stats.errored
            else ""
        ),
        f"Attempts:  {stats.attempts:,} ({stats.retries:,} retries, "
        f"{stats.rate_limited:,} answered 429)",
        f"Tokens:    input {usage.input_tokens:,}, output {usage.output_tokens:,}, "
        f"cache write {usage.cache_creation_input_tokens:,}, "
        f"cache read {usage.cache_read_input_tokens:,}",
        *cache_summary(stats),
        f"Elapsed:   {elapsed:,.1f} s",
        f"Rate:      {_per_minute(stats.succeeded, elapsed):,.0f} requests/min, "
        f"{_per_minute(total_tokens, elapsed):,.0f} tokens/min",
        f"Cost:      {cost_text(stats)}",
        f"Output:    {'stdout' if output_path == '-' else output_path}",
    ]
    if stats.estimates:
        lines.append(
            "Estimates: "
            + "; ".join(
                f"{model} input = cl100k x {ratio:.3f} (from {count:,} answers)"
                for model, (ratio, count) in sorted(stats.estimates.items())
            )
        )
    if stats.fatal:
        lines.append(f"Stopped:   {stats.fatal}")
    return lines


def cache_hit_rate(usage: Usage) -> float | None:
    """Cache read tokens over cacheable tokens (read or written); None if nothing was."""
    cacheable = usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    return usage.cache_read_input_tokens / cacheable if cacheable else None


def cache_text(stats: RunStats) -> str | None:
    """Cache writes and reads, hit rate and the money saved; None if nothing was cached."""
    usage = stats.usage
    rate = cache_hit_rate(usage)
    if rate is None:
        return None
    saved = cache_savings(stats.usage_by_model)
    effect = f"saved ${saved:,.4f} against" if saved >= 0 else f"cost ${-saved:,.4f} above"
    return (
        f"{usage.cache_creation_input_tokens:,} tokens written, "
        f"{usage.cache_read_input_tokens:,} read, hit rate {rate:.1%}, "
        f"{effect} the uncached price"
    )


def cache_progress(stats: RunStats) -> str:
    text = cache_text(stats)
    return f", cache: {text}" if text else ""


def cache_summary(stats: RunStats) -> list[str]:
    text = cache_text(stats)
    return [f"Caching:   {text}"] if text else []


def cost_text(stats: RunStats) -> str:
    dollars, unknown = total_cost(stats.usage_by_model)
    known = len(stats.usage_by_model) - len(unknown)
    parts = [f"${dollars:,.4f} (prices of {PRICES_AS_OF})"] if known or not unknown else []
    if unknown:
        parts.append("cost unknown for " + ", ".join(unknown))
    return "; ".join(parts)


class Reporter:
    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet

    async def every(self, interval: float, stats: RunStats) -> None:
        """Write a progress line every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if not self.quiet:
                print(progress_line(stats), file=self.stream, flush=True)

    def summary(self, stats: RunStats, output_path: str) -> None:
        print("\n".join(summary_lines(stats, output_path)), file=self.stream, flush=True)

    def error(self, message: str) -> None:
        print(f"Error: {message}", file=self.stream, flush=True)
