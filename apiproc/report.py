"""What a person sees on stderr: live progress and the final summary.

    reporter = Reporter(sys.stderr, total=5_000)
    task = asyncio.create_task(reporter.follow(engine))   # until cancelled
    reporter.summary(engine.stats, output_path="out.jsonl")

On a terminal, progress is a rich live display; otherwise (cron, pipes) a plain line
every `interval` seconds with the same figures. Results never go here: they go to the
output file or stdout.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from apiproc.engine import Engine, RunStats
from apiproc.jobs import count_lines
from apiproc.limiter import Limits
from apiproc.pricing import cache_savings, total_cost
from apiproc.providers.base import Usage
from apiproc.results import first_few, resumable

if TYPE_CHECKING:  # rich is imported where it is drawn: not for plain lines (cron, pipes)
    from rich.console import Group

    from apiproc.preflight import Preflight

RATE_WINDOW_SECONDS = 60.0
RETIREMENT_NOTICE_DAYS = 30
LIVE_REFRESH_SECONDS = 0.5


@dataclass(slots=True)
class Snapshot:
    """The live figures at one moment."""

    done: int
    total: int | None
    succeeded: int
    errored: int
    skipped: int
    in_flight: int
    retries: int
    rate_limited: int
    requests_per_minute: float
    input_per_minute: float
    output_per_minute: float
    limits: dict[str, float | None]
    eta_seconds: float | None
    cost: str
    cache: str | None
    elapsed: float


class RateMeter:
    """Per-minute rates over the last minute (not since the start), for honest ETAs."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self._points: deque[tuple[float, int, int, int]] = deque()

    def add(self, now: float, requests: int, input_tokens: int, output_tokens: int) -> None:
        self._points.append((now, requests, input_tokens, output_tokens))
        while len(self._points) > 2 and now - self._points[1][0] >= self.window:
            self._points.popleft()

    def per_minute(self) -> tuple[float, float, float]:
        if len(self._points) < 2:
            return 0.0, 0.0, 0.0
        (t0, r0, i0, o0), (t1, r1, i1, o1) = self._points[0], self._points[-1]
        span = t1 - t0
        if span <= 0:
            return 0.0, 0.0, 0.0
        scale = 60.0 / span
        return (r1 - r0) * scale, (i1 - i0) * scale, (o1 - o0) * scale


def snapshot(engine: Engine, meter: RateMeter, total: int | None) -> Snapshot:
    stats = engine.stats
    usage = stats.usage
    counted_input = usage.input_tokens + usage.cache_creation_input_tokens
    meter.add(time.monotonic(), stats.done, counted_input, usage.output_tokens)
    rpm, ipm, opm = meter.per_minute()
    remaining = None if total is None else max(0, total - stats.skipped - stats.done)
    eta = remaining * 60.0 / rpm if remaining is not None and rpm > 0 else None
    return Snapshot(
        done=stats.done,
        total=None if total is None else total - stats.skipped,
        succeeded=stats.succeeded,
        errored=stats.errored_total,
        skipped=stats.skipped,
        in_flight=engine.in_flight,
        retries=stats.retries,
        rate_limited=stats.rate_limited,
        requests_per_minute=rpm,
        input_per_minute=ipm,
        output_per_minute=opm,
        limits={
            dimension: engine.limiter.limit(dimension)
            for dimension in ("requests", "input_tokens", "output_tokens", "tokens")
        },
        eta_seconds=eta,
        cost=cost_text(stats),
        cache=cache_text(stats),
        elapsed=stats.elapsed,
    )


def _of(value: float, limit: float | None) -> str:
    return f"{value:,.0f}" + (f"/{limit:,.0f}" if limit else "")


def duration(seconds: float | None) -> str:
    """A time to show: `1h02m`, `3m05s`; `?` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _combined(shot: Snapshot) -> str:
    """The one tokens budget, where the run has it (an API that counts input and output
    together, or the classic --max-tokens-per-minute)."""
    limit = shot.limits.get("tokens")
    if not limit:
        return ""
    used = shot.input_per_minute + shot.output_per_minute
    return f", {_of(used, limit)} tokens"


def progress_line(shot: Snapshot) -> str:
    total = f"/{shot.total:,}" if shot.total is not None else ""
    return (
        f"{shot.done:,}{total} done ({shot.succeeded:,} ok, {shot.errored:,} errored, "
        f"{shot.skipped:,} skipped), {shot.in_flight:,} in flight, "
        f"{shot.retries:,} retries, {shot.rate_limited:,} 429s | per min: "
        f"{_of(shot.requests_per_minute, shot.limits['requests'])} requests, "
        f"{_of(shot.input_per_minute, shot.limits['input_tokens'])} input tokens, "
        f"{_of(shot.output_per_minute, shot.limits['output_tokens'])} output tokens"
        + _combined(shot)
        + " | "
        f"ETA {duration(shot.eta_seconds)} | {shot.cost} | {duration(shot.elapsed)} elapsed"
        + (f" | cache: {shot.cache}" if shot.cache else "")
    )


def live_view(shot: Snapshot) -> Group:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    head = Table.grid(padding=(0, 1))
    if shot.total is not None:
        bar = ProgressBar(total=max(shot.total, 1), completed=min(shot.done, shot.total), width=40)
        head.add_row(
            Text(f"{shot.done:,}/{shot.total:,}", style="bold"),
            bar,
            Text(f"ETA {duration(shot.eta_seconds)}"),
        )
    else:
        head.add_row(Text(f"{shot.done:,} done", style="bold"))
    return Group(
        head,
        Text(
            f"ok {shot.succeeded:,}  errored {shot.errored:,}  skipped {shot.skipped:,}  "
            f"in flight {shot.in_flight:,}  retries {shot.retries:,}  429s {shot.rate_limited:,}"
        ),
        Text(
            f"per minute: requests {_of(shot.requests_per_minute, shot.limits['requests'])}  "
            f"input tokens {_of(shot.input_per_minute, shot.limits['input_tokens'])}  "
            f"output tokens {_of(shot.output_per_minute, shot.limits['output_tokens'])}"
            + _combined(shot).replace(",", "", 1)
        ),
        Text(f"cost so far {shot.cost}  elapsed {duration(shot.elapsed)}"),
        *([Text(f"cache: {shot.cache}")] if shot.cache else []),
    )


def retirement_text(model: str, end: date, today: date) -> str:
    """What a model's end of life means for this file, with the date."""
    if end <= today:
        return (
            f"{model} reached its end of life on {end.isoformat()}; the API answers 404 "
            "for it, so move its lines to a current model."
        )
    days = (end - today).days
    return (
        f"{model} reaches its end of life on {end.isoformat()} (in {days} days); from "
        "then on the API answers 404 for it."
    )


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
    saved = cache_savings(stats.bills)
    effect = f"saved ${saved:,.4f} against" if saved >= 0 else f"cost ${-saved:,.4f} above"
    return (
        f"{usage.cache_creation_input_tokens:,} tokens written, "
        f"{usage.cache_read_input_tokens:,} read, hit rate {rate:.1%}, "
        f"{effect} the uncached price"
    )


def cost_text(stats: RunStats) -> str:
    dollars, unknown = total_cost(stats.bills)
    known = len(stats.bills) - len(unknown)
    parts = [f"${dollars:,.4f}"] if known or not unknown else []
    if unknown:
        parts.append("cost unknown for " + ", ".join(unknown))
    return "; ".join(parts)


def summary_lines(stats: RunStats, output_path: str) -> list[str]:
    elapsed = stats.elapsed
    usage = stats.usage
    counted_input = usage.input_tokens + usage.cache_creation_input_tokens
    errors = ", ".join(f"{kind} {count:,}" for kind, count in sorted(stats.errored.items()))
    lines = [
        f"Succeeded: {stats.succeeded:,}",
        f"Errored:   {stats.errored_total:,}" + (f" ({errors})" if errors else ""),
    ]
    if stats.skipped:
        lines.append(f"Skipped:   {stats.skipped:,} already in the output from earlier runs")
    if stats.changed:
        lines.append(
            f"Changed:   {len(stats.changed):,} not sent: their id has a result in the output "
            f"that answered another request ({first_few(stats.changed)}); to replace those "
            "results, save the input to a file and rerun from it with --force"
        )
    lines += [
        f"Attempts:  {stats.attempts:,} ({stats.retries:,} retries, "
        f"{stats.rate_limited:,} answered 429)",
        f"Tokens:    input {usage.input_tokens:,}, output {usage.output_tokens:,}, "
        f"cache write {usage.cache_creation_input_tokens:,}, "
        f"cache read {usage.cache_read_input_tokens:,}",
        *([f"Caching:   {cache}"] if (cache := cache_text(stats)) else []),
        f"Elapsed:   {elapsed:,.1f} s",
        f"Rate:      {_per_minute(stats.done, elapsed):,.0f} requests/min, "
        f"{_per_minute(counted_input, elapsed):,.0f} input tokens/min (cache reads aside), "
        f"{_per_minute(usage.output_tokens, elapsed):,.0f} output tokens/min",
        f"Cost:      {cost_text(stats)}"
        + (f" (prices of {stats.prices_as_of})" if stats.prices_as_of else ""),
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
    elif stats.on_bytes and stats.succeeded:
        lines.append(
            "Estimates: each prompt's UTF-8 bytes, a bound: no input token limit came "
            "within reach, so the tokenizer was not needed"
        )
    if stats.unwritten:
        lines.append(
            f"Unwritten: {len(stats.unwritten):,} answered (and paid for) but not written: "
            f"{first_few(stats.unwritten)}"
        )
    elif stats.unrecorded and not (stats.fatal or stats.interrupted):
        lines.append(
            f"Missing:   {stats.unrecorded:,} requests read have no result line "
            "(an internal error); a rerun sends them"
        )
    abandoned = (
        f"; {stats.abandoned:,} requests in flight were abandoned" if stats.abandoned else ""
    )
    hurried = f"; {stats.hurried} cut the wait short" if stats.hurried else ""
    for cause in (stats.write_error, stats.fatal):
        if cause:
            lines.append(f"Stopped:   {cause}{hurried}{abandoned}")
            abandoned = hurried = ""
    if stats.interrupted:
        lines.append(f"Stopped:   by {stats.interrupted}{abandoned}")
    return lines


def resume_line(stats: RunStats, output_path: str, command: str | None) -> str | None:
    """How to go on after a run that left requests without a result line."""
    if not command or not (stats.interrupted or stats.fatal or stats.unwritten or stats.unrecorded):
        return None
    if not resumable(output_path):
        return (
            "Resume:    the output is not a file, so a rerun sends every request again; "
            "write to a file (-o results.jsonl) to be able to resume"
        )
    return f"Resume:    {command}"


def summary_record(stats: RunStats, output_path: str) -> dict[str, Any]:
    """The summary as JSON, for monitoring (--summary-json)."""
    usage = stats.usage
    dollars, unknown = total_cost(stats.bills)
    return {
        "succeeded": stats.succeeded,
        "errored": stats.errored_total,
        "errored_by_type": dict(sorted(stats.errored.items())),
        "skipped": stats.skipped,
        "attempts": stats.attempts,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
        "tokens": {
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "cache_write": usage.cache_creation_input_tokens,
            "cache_read": usage.cache_read_input_tokens,
        },
        "elapsed_seconds": round(stats.elapsed, 3),
        "requests_per_minute": round(_per_minute(stats.done, stats.elapsed), 1),
        "cost_usd": round(dollars, 6),
        "cost_unknown_models": unknown,
        "prices_as_of": stats.prices_as_of,
        "estimates": {
            model: {"input_ratio": ratio, "answers": count}
            for model, (ratio, count) in stats.estimates.items()
        },
        "prompts_counted": not stats.on_bytes,
        "stopped": stats.write_error or stats.fatal or stats.interrupted,
        "unwritten": stats.unwritten,
        "changed": stats.changed,
        "unrecorded": stats.unrecorded,
        "output": output_path,
    }


def _per_minute(count: float, seconds: float) -> float:
    return count * 60.0 / seconds if seconds > 0 else 0.0


class Reporter:
    def __init__(
        self,
        stream: TextIO,
        quiet: bool = False,
        interval: float = 10.0,
        total: int | None = None,
    ) -> None:
        self.stream = stream
        self.quiet = quiet
        self.interval = interval
        self.total = total

    def follow_with_total(self, requests_path: str) -> Callable[[Engine], Awaitable[None]]:
        """`follow`, with the total counted meanwhile by a fast scan of the input file."""

        async def follow(engine: Engine) -> None:
            if self.quiet:
                return
            if requests_path != "-":
                counting = asyncio.create_task(asyncio.to_thread(count_lines, requests_path))
                counting.add_done_callback(self._set_total)
            await self.follow(engine)

        return follow

    def _set_total(self, counting: asyncio.Task[int]) -> None:
        if not counting.cancelled() and counting.exception() is None:
            self.total = counting.result()

    async def follow(self, engine: Engine) -> None:
        """Show progress until cancelled: live on a terminal, plain lines otherwise."""
        if self.quiet:
            return
        meter = RateMeter()
        if self.stream.isatty():
            await self._live(engine, meter)
        else:
            while True:
                await asyncio.sleep(self.interval)
                self.line(progress_line(snapshot(engine, meter, self.total)))

    async def _live(self, engine: Engine, meter: RateMeter) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.stream)
        with Live(console=console, auto_refresh=False, transient=True) as live:
            while True:
                live.update(live_view(snapshot(engine, meter, self.total)), refresh=True)
                await asyncio.sleep(LIVE_REFRESH_SECONDS)

    def summary(self, stats: RunStats, output_path: str, resume_command: str | None) -> None:
        lines = summary_lines(stats, output_path)
        resume = resume_line(stats, output_path, resume_command)
        if resume:
            lines.append(resume)
        self.line("\n".join(lines))

    def write_summary_json(self, stats: RunStats, output_path: str, path: str) -> None:
        Path(path).write_text(json.dumps(summary_record(stats, output_path), indent=2) + "\n")

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def error(self, message: str) -> None:
        self.line(f"Error: {message}")


def print_estimate(
    report: Preflight, limits: Limits, show_bad_lines: int, prices_as_of: str, today: date
) -> None:
    """The `estimate` command's table, on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title="apiproc estimate (no API called)", show_footer=True)
    table.add_column("model", footer="total")
    for name, footer in (
        ("requests", f"{report.requests:,}"),
        ("input tokens (est.)", f"{report.input_tokens:,}"),
        ("output ceiling", f"{report.output_ceiling:,}"),
    ):
        table.add_column(name, footer=footer, justify="right")
    for model, totals in sorted(report.by_model.items()):
        table.add_row(
            model, f"{totals.requests:,}", f"{totals.input_tokens:,}", f"{totals.output_ceiling:,}"
        )
    console.print(table)
    low, high, unknown = report.cost_range()
    batch_low, batch_high, _ = report.cost_range(batch=True)
    console.print(
        f"Lines: {report.lines:,}; valid requests {report.requests:,}; "
        f"bad lines {report.bad_lines:,}"
    )
    ratios = sorted({f"{totals.ratio:g}" for totals in report.by_model.values()})
    console.print(
        f"Input estimate: cl100k count x {' or '.join(ratios) or '1'} (the model's tokenizer "
        "counts more; a run learns the real ratio)"
    )
    dated = f"prices of {prices_as_of}; " if prices_as_of else ""
    console.print(
        f"Cost online: ${low:,.2f} to ${high:,.2f}; with the Batches API: "
        f"${batch_low:,.2f} to ${batch_high:,.2f} ({dated}"
        "from no output to every max_tokens used)"
    )
    if unknown:
        console.print("Cost unknown for: " + ", ".join(unknown))
    implied = report.implied_seconds(limits)
    if implied is None:
        console.print("Time: give --max-requests-per-minute / token limits to see it")
    else:
        console.print(f"Time at these limits: {duration(implied[0])} to {duration(implied[1])}")
    for model, end in report.retiring(today, RETIREMENT_NOTICE_DAYS):
        console.print(f"Warning: {retirement_text(model, end, today)}", markup=False)
    for bad in report.bad[:show_bad_lines]:
        console.print(f"bad line {bad.line_no}: {bad.reason}", markup=False)
    if report.bad_lines > show_bad_lines:
        console.print(f"... and {report.bad_lines - show_bad_lines:,} more bad lines")
