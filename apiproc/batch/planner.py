"""Split the input into batches, and read a batch's requests back from the input.

    planner = Planner(input_handle, api, rules, state, finished, bad_line=record)
    chunk = planner.next_chunk(limits)        # a Chunk to create, or None: nothing pending
    for member in read_members(input_handle, chunk.spans): ...

Memory stays bounded whatever the input's size. Nothing but positions is kept: a batch is
a list of spans of input lines (first line, byte offset, line count, earlier attempts),
and its requests are read back from the input whenever they are needed — to stream the
create body, to match results to lines and metadata. A digest of the member lines makes
sure the input did not change in between.

Where requests come from, in this order: the pool (requests to send again, or planned
for a batch that was never created), then the first pass over new input. The first pass
reads the whole input from the start, to keep ids unique across the file, but plans only
lines past the journal's position; it records bad lines as it meets them (once: a line
already in the output is skipped) and leaves out requests already final in the output.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from apiproc.batch.journal import NEW, PRIME, RETRY, JournalState, Span
from apiproc.caching import cached_prefix, with_system_breakpoint
from apiproc.errors import ResumeMismatch
from apiproc.jobs import (
    INVALID_CUSTOM_ID,
    REQUEST_TOO_LARGE,
    STREAMING_UNSUPPORTED,
    BadLine,
    Job,
    JobReader,
    parse_line,
    request_fingerprint,
)
from apiproc.providers.batches import BatchApi, BatchLimits
from apiproc.resume import Earlier, Finished

# The charset the API enforces on custom_id (§E.2, from the API's own 400 message).
CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MISMATCHED_MODEL = "mismatched_model"

# Prefixes remembered while looking for those worth priming (as the online planner's cap).
MAX_PREFIX_GROUPS = 10_000

Validate = Callable[[dict[str, Any]], "str | None"]


@dataclass(slots=True)
class BatchRules:
    """How a request becomes a batch entry, and what makes it unfit for one."""

    api: BatchApi
    use_caching: bool = False
    validate: Validate | None = None  # what the provider's API version would refuse
    model: str | None = None  # the file's model, where a batch may hold one model only

    def params(self, job: Job) -> dict[str, Any]:
        """The params sent for `job` (the same every time they are rebuilt); the request
        as read stays in `job.request`."""
        if self.use_caching and job.as_read is None:
            marked = with_system_breakpoint(job.params)
            if marked is not None:
                job.send_instead(marked)
        return job.params

    def entry(self, job: Job) -> bytes:
        return self.api.entry(job.custom_id, self.params(job))

    def check(self, job: Job, entry: bytes, limits: BatchLimits, raw: bytes) -> BadLine | None:
        """Why `job` cannot go into a batch, or None."""
        if not CUSTOM_ID_PATTERN.match(job.custom_id):
            reason = f"custom_id {job.custom_id!r} must match {CUSTOM_ID_PATTERN.pattern}"
            return _bad(job, reason, INVALID_CUSTOM_ID, raw)
        if job.params.get("stream") is True:
            reason = "stream: a batch request cannot stream; remove stream or set it to false"
            return _bad(job, reason, STREAMING_UNSUPPORTED, raw)
        fits = self.api.framed_size(len(entry), 1) <= limits.max_bytes
        if len(entry) > limits.max_request_bytes or not fits:
            return _too_large(job, entry, raw)
        if limits.one_model:
            return self._other_model(job, raw)
        return None

    def _other_model(self, job: Job, raw: bytes) -> BadLine | None:
        """A request for another model than the file's first (lines are checked in order)."""
        model = str(job.params.get("model"))
        if self.model is None:
            self.model = model
        if model == self.model:
            return None
        reason = (
            f"model: this API's batches take one model each, and this file's first request "
            f"uses {self.model!r}; send the {model!r} requests from a file of their own"
        )
        return _bad(job, reason, MISMATCHED_MODEL, raw)


def _bad(job: Job, reason: str, code: str, raw: bytes) -> BadLine:
    """A request valid online that a batch cannot take; it keeps its line as read."""
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    return BadLine(
        job.custom_id,
        job.line_no,
        reason,
        job.metadata,
        text=text,
        fingerprint=request_fingerprint(text),
        code=code,
    )


def _too_large(job: Job, entry: bytes, raw: bytes) -> BadLine:
    reason = f"the request is {len(entry):,} bytes, too large for a batch"
    return _bad(job, reason, REQUEST_TOO_LARGE, raw)


@dataclass(slots=True)
class Member:
    """One request of a batch, read back from the input."""

    job: Job
    offset: int
    raw: bytes  # its input line
    attempts: int  # attempts before this batch

    @property
    def end(self) -> int:
        return self.offset + len(self.raw)


@dataclass(slots=True)
class Chunk:
    """A batch about to be created: its requests, and where they were taken from."""

    purpose: str
    spans: list[Span] = field(default_factory=list)
    count: int = 0
    entry_bytes: int = 0
    pool_keys: list[int] = field(default_factory=list)  # pool spans it used up
    rest: Span | None = None  # what is left of a pool span it took only part of
    new: tuple[int, int] | None = None  # (offset, line) the first pass reached
    hasher: Any = field(default_factory=hashlib.sha256, repr=False)
    end: int = -1  # byte just after the last member, to join the next one to its span

    @property
    def digest(self) -> str:
        return str(self.hasher.hexdigest())

    def size(self, api: BatchApi) -> int:
        return api.framed_size(self.entry_bytes, self.count)

    def fits(self, entry: bytes, api: BatchApi, limits: BatchLimits) -> bool:
        if self.count + 1 > limits.max_requests:
            return False
        return api.framed_size(self.entry_bytes + len(entry), self.count + 1) <= limits.max_bytes

    def add(self, member: Member, entry: bytes) -> None:
        self.count += 1
        self.entry_bytes += len(entry)
        self.hasher.update(_content(member.raw))
        last = self.spans[-1] if self.spans else None
        line = member.job.line_no
        if (
            last is not None
            and last.attempts == member.attempts
            and last.line + last.lines == line
            and self.end == member.offset
        ):
            self.spans[-1] = Span(last.line, last.offset, last.lines + 1, last.attempts)
        else:
            self.spans.append(Span(line, member.offset, 1, member.attempts))
        self.end = member.end


def already_final(finished: Finished | None, custom_id: str, fingerprint: str) -> bool:
    """The output holds the result of this very request (a changed line was refused or,
    with --force, had its result removed before the run)."""
    if finished is None:
        return False
    return finished.earlier(custom_id, fingerprint) is Earlier.ANSWERED


def read_members(
    handle: IO[bytes], spans: list[Span], digest: str | None = None, fingerprints: bool = False
) -> Iterator[Member]:
    """The requests of `spans`, read back from the input; checks the digest at the end."""
    check = hashlib.sha256() if digest is not None else None
    for span in spans:
        handle.seek(span.offset)
        offset = span.offset
        for line_no in range(span.line, span.line + span.lines):
            raw = handle.readline()
            if not raw:
                raise _changed(f"line {line_no} is gone")
            if raw.strip():
                item = parse_line(raw, line_no)
                if isinstance(item, BadLine):
                    raise _changed(f"line {line_no} is no longer a request ({item.reason})")
                if check is not None:
                    check.update(_content(raw))
                if fingerprints:
                    item.fingerprint = request_fingerprint(item.request)
                yield Member(item, offset, raw, span.attempts)
            offset += len(raw)
    if check is not None and check.hexdigest() != digest:
        raise _changed("the lines of a submitted batch differ from what was sent")


def _content(raw: bytes) -> bytes:
    """A line without its end, so that appending to a file that lacked one changes nothing."""
    return raw.rstrip(b"\r\n")


def _changed(detail: str) -> ResumeMismatch:
    return ResumeMismatch(
        f"The requests file changed since its batches were submitted ({detail}); "
        "restore it as it was to collect their results."
    )


BadLineSink = Callable[[BadLine], None]


class Planner:
    """Builds the next batch from the pool and the first pass over the input."""

    def __init__(
        self,
        handle: IO[bytes],
        rules: BatchRules,
        state: JournalState,
        finished: Finished | None,
        bad_line: BadLineSink,
    ) -> None:
        self.handle = handle
        self.rules = rules
        self.state = state
        self.finished = finished
        self.bad_line = bad_line
        self.skipped = 0  # requests left out because the output already has them
        self.limits = rules.api.limits  # the run's limits: they may shrink after a 413
        self._first_pass = self._new_members()
        self._waiting: tuple[Member, bytes] | None = None  # did not fit the last chunk
        self.input_done = False

    # ---- what is pending

    def pending(self, use_pool: bool = True) -> bool:
        """Whether next_chunk may find something (it may still find nothing at all)."""
        return bool((use_pool and self.state.pool) or self._waiting or not self.input_done)

    def next_chunk(
        self, limits: BatchLimits, use_pool: bool = True, new_input: bool = True
    ) -> Chunk | None:
        """The next batch: pooled requests first, then new input; None when none is left."""
        self.limits = limits
        chunk = Chunk(RETRY if use_pool and self.state.pool else NEW)
        if use_pool:
            self._take_pool(chunk, limits)
        if new_input and chunk.count < limits.max_requests:
            self._take_new(chunk, limits)
        return chunk if chunk.count else None

    def prime_chunk(self, spans: list[Span], limits: BatchLimits) -> Chunk | None:
        """The priming batch: one request per shared cached prefix."""
        chunk = Chunk(PRIME)
        for member, entry in self._read_spans(spans):
            if chunk.fits(entry, self.rules.api, limits):
                chunk.add(member, entry)
        return chunk if chunk.count else None

    # ---- the pool

    def _take_pool(self, chunk: Chunk, limits: BatchLimits) -> None:
        api = self.rules.api
        for key, span in list(self.state.pool.items()):
            for member, entry in self._read_spans([span]):
                if chunk.fits(entry, api, limits):
                    chunk.add(member, entry)
                elif chunk.count == 0:  # the limits shrank below this request: it fits none
                    self.bad_line(_too_large(member.job, entry, member.raw))
                else:
                    line = member.job.line_no
                    rest = span.lines - (line - span.line)
                    chunk.rest = Span(line, member.offset, rest, span.attempts)
                    chunk.pool_keys.append(key)
                    return
            chunk.pool_keys.append(key)

    def _read_spans(self, spans: list[Span]) -> Iterator[tuple[Member, bytes]]:
        """Members of pooled spans still worth sending (not already in the output)."""
        for member in read_members(self.handle, spans, fingerprints=True):
            if self._already_final(member.job):
                self.skipped += 1
                continue
            yield member, self.rules.entry(member.job)

    # ---- the first pass

    def _take_new(self, chunk: Chunk, limits: BatchLimits) -> None:
        api = self.rules.api
        while True:
            if self._waiting is None:
                self._waiting = next(self._first_pass, None)
                if self._waiting is None:
                    self.input_done = True
                    return
            member, entry = self._waiting
            if not chunk.fits(entry, api, limits):
                if chunk.count:
                    return
                self._waiting = None  # the limits shrank below this request: it fits none
                self.bad_line(_too_large(member.job, entry, member.raw))
                continue
            chunk.add(member, entry)
            chunk.new = (member.end, member.job.line_no + 1)
            self._waiting = None

    def _new_members(self) -> Iterator[tuple[Member, bytes]]:
        """Every line past the journal's position that a batch should carry; bad lines
        (anywhere: an earlier run may have stopped before writing them) are recorded."""
        # Fingerprints are asked of the output only when there is one to ask.
        reader = JobReader(self.rules.validate, fingerprints=self.finished is not None)
        start, primers = self.state.next_offset, self.state.primer_lines
        offset = 0
        while raw := self._readline_at(offset):
            line_offset, offset = offset, offset + len(raw)
            item = reader.feed(raw)
            if item is None:
                continue
            planned = line_offset < start or item.line_no in primers
            if isinstance(item, Job):
                entry = self.rules.entry(item)
                bad = self.rules.check(item, entry, self.limits, raw)
                if bad is None:
                    if not planned and self._already_final(item):
                        self.skipped += 1
                    elif not planned:
                        yield Member(item, line_offset, raw, 0), entry
                    continue
                item = bad
            if not self._bad_already_written(item):
                self.bad_line(item)

    def _readline_at(self, offset: int) -> bytes:
        """The line at `offset` (the handle is shared with the pool's random reads)."""
        if self.handle.tell() != offset:
            self.handle.seek(offset)
        return self.handle.readline()

    def primers(self, most: int) -> list[Span]:
        """The first request of each cached prompt prefix that several requests share
        (at most `most`), found in one pass over the input."""
        groups: dict[bytes, list[int]] = {}  # prefix key -> [requests, line, offset]
        reader = JobReader(self.rules.validate)
        offset = 0
        self.handle.seek(0)
        while raw := self.handle.readline():
            line_offset, offset = offset, offset + len(raw)
            item = reader.feed(raw)
            if not isinstance(item, Job):  # (the output is consulted once, by prime_chunk)
                continue
            prefix = cached_prefix(self.rules.params(item))
            if prefix is None:
                continue
            group = groups.get(prefix.key)
            if group is not None:
                group[0] += 1
            elif len(groups) < MAX_PREFIX_GROUPS and self._fits_a_batch(item, raw):
                groups[prefix.key] = [1, item.line_no, line_offset]
        shared = sorted((line, start) for count, line, start in groups.values() if count > 1)
        return [Span(line, start, 1, 0) for line, start in shared[:most]]

    def _fits_a_batch(self, job: Job, raw: bytes) -> bool:
        return self.rules.check(job, self.rules.entry(job), self.limits, raw) is None

    def _already_final(self, job: Job) -> bool:
        return already_final(self.finished, job.custom_id, job.fingerprint)

    def _bad_already_written(self, bad: BadLine) -> bool:
        return already_final(self.finished, bad.custom_id, bad.fingerprint)
