"""Write an ended batch's results into the output, and say which requests go again.

    collected = await collect(calls, info, intent, ctx)
    journal.written(intent.seq, collected.retry, collected.tally, output_bytes)

The results are streamed line by line and never held whole. Each is matched to its input
line by `custom_id` through a map built from the batch's spans (id -> line, offset,
attempts: bounded by one batch), and the line is read again for its metadata, so the
record is exactly the online mode's. What becomes of each result:

- succeeded: written;
- errored with a transient error type, expired, canceled: sent again in a later batch
  (or online) while attempts remain, else written as it is;
- errored with a final type (`invalid_request_error`, ...): written.

A result already in the output (a crash while this batch was being written) is skipped,
so every request ends with exactly one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import IO

from apiproc.batch.calls import BatchCalls
from apiproc.batch.journal import Intent, Span
from apiproc.batch.planner import BatchRules, already_final, read_members
from apiproc.batch.stats import BatchStats
from apiproc.jobs import BadLine, Job, parse_line, request_fingerprint
from apiproc.providers.base import Verdict
from apiproc.providers.batches import (
    CANCELED,
    ERRORED,
    EXPIRED,
    SUCCEEDED,
    BatchApiError,
    BatchInfo,
    BatchItem,
)
from apiproc.results import Result, ResultWriter
from apiproc.resume import Finished

log = logging.getLogger("apiproc")

NO_RESULT = {"type": "api_error", "message": "the batch gave no result for this request"}


@dataclass(slots=True)
class Context:
    """What writing results needs from the run."""

    handle: IO[bytes]  # the input
    rules: BatchRules
    writer: ResultWriter
    finished: Finished | None
    max_attempts: int
    stats: BatchStats


@dataclass(slots=True)
class _Place:
    line: int
    offset: int
    size: int
    attempts: int


@dataclass(slots=True)
class Collected:
    retry: list[Span] = field(default_factory=list)
    tally: dict[str, int] = field(default_factory=dict)

    def add(self, key: str) -> None:
        self.tally[key] = self.tally.get(key, 0) + 1


async def collect(calls: BatchCalls, info: BatchInfo, intent: Intent, ctx: Context) -> Collected:
    """Write the results of `info` (ended) into the output; return what goes again."""
    places = {
        member.job.custom_id: _Place(
            member.job.line_no, member.offset, len(member.raw), member.attempts
        )
        for member in read_members(ctx.handle, intent.spans, intent.digest)
    }
    collected = Collected()
    again: list[_Place] = []
    try:
        async for item in calls.results(info):
            place = places.pop(item.custom_id, None)
            if place is None:
                log.warning("batch %s: a result for an unknown id %r", info.id, item.custom_id)
                continue
            ctx.stats.saw(item.kind)
            if _write_or_keep(item, place, ctx, collected):
                again.append(place)
    except BatchApiError as error:
        if error.verdict is Verdict.RETRY or error.status != 404:
            raise
        # Results are kept 29 days after creation; past that the requests must go again.
        log.warning("batch %s: its results are no longer available; sending again", info.id)
    for custom_id, place in places.items():  # no result at all: as if it had errored
        missing = BatchItem(custom_id, ERRORED, error=dict(NO_RESULT), retryable=True)
        if _write_or_keep(missing, place, ctx, collected):
            again.append(place)
    ctx.writer.sync()
    collected.retry = _spans(again)
    ctx.stats.sent_again += len(again)
    return collected


def _write_or_keep(item: BatchItem, place: _Place, ctx: Context, collected: Collected) -> bool:
    """Write the result, or say (True) that it goes again."""
    job = _job_at(ctx.handle, place)
    if already_final(ctx.finished, job.custom_id, job.fingerprint):
        collected.add("already_written")
        return False
    attempts = place.attempts + 1
    if item.kind != SUCCEEDED and item.retryable and attempts < ctx.max_attempts:
        collected.add(f"again_{item.kind}")
        return True
    unprocessed = item.kind in (CANCELED, EXPIRED)
    result = Result(
        custom_id=job.custom_id,
        line_no=job.line_no,
        message=item.message,
        error=None if item.kind == SUCCEEDED or unprocessed else item.error,
        metadata=job.metadata,
        request=job.request,
        request_id=item.request_id,
        attempts=attempts,
        fingerprint=job.fingerprint,
        outcome=item.kind if unprocessed else None,
    )
    ctx.writer.write(result)
    model = job.params.get("model")
    ctx.stats.count(result, model if isinstance(model, str) else None, item.usage)
    collected.add(item.kind)
    return False


def _job_at(handle: IO[bytes], place: _Place) -> Job:
    handle.seek(place.offset)
    item = parse_line(handle.read(place.size), place.line)
    if isinstance(item, BadLine):
        raise AssertionError("a member line was checked when the batch's map was built")
    item.fingerprint = request_fingerprint(item.request)
    return item


def _spans(places: list[_Place]) -> list[Span]:
    """The places as spans, consecutive lines joined (results come in any order)."""
    spans: list[Span] = []
    end = -1
    for place in sorted(places, key=lambda p: p.line):
        last = spans[-1] if spans else None
        attempts = place.attempts + 1
        if (
            last is not None
            and last.attempts == attempts
            and last.line + last.lines == place.line
            and end == place.offset
        ):
            spans[-1] = Span(last.line, last.offset, last.lines + 1, attempts)
        else:
            spans.append(Span(place.line, place.offset, 1, attempts))
        end = place.offset + place.size
    return spans
