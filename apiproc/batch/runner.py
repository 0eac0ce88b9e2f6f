"""Batch mode: split the input into batches, submit, follow, collect, send again.

    stats = await run_batches(settings, provider, display=display, on_stopping=tell)
    run = BatchRun(settings, provider, calls, writer, journal, finished)  # the loop alone
    stats = await run.run()

What it does and why. For a big job with no hurry, the provider's batch service does the
parallel work at half the price; apiproc's part is to split, submit, follow, collect and
resubmit without ever losing a request or submitting one twice. Every step is written to
the journal (`journal.py`) before it is taken, so rerunning the same command after a
crash, `kill -9` or Ctrl-C picks up where the last one stopped.

How the loop is structured. First, intents without a batch id (a crash between the intent
and the create's answer) are resolved: the account's recent batches are listed and matched
by creation time and request count; exactly one match is adopted, none means no batch was
made, several stop the run and say what to do. Then, until everything is written:
1. submit: while the queue allows, build the next batch (`planner.py`: the pool of
   requests to send again first, then new input) and create it — intent first;
2. poll the live batches, paced within the batch endpoints' rate limit (`calls.py`);
3. write each ended batch's results (`collect.py`); what must go again joins the pool (or,
   with `--fallback online`, is sent through the online engine);
4. wait: the poll interval after a change, longer each time nothing changed.
Ctrl-C stops between steps and leaves the batches running; the summary says how to resume
or cancel them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import aiohttp

from apiproc.batch import state_path
from apiproc.batch.calls import BatchCalls, Pacer, PollSchedule
from apiproc.batch.collect import Context, collect
from apiproc.batch.journal import Intent, Journal, Span, input_identity
from apiproc.batch.planner import BatchRules, Chunk, Planner, already_final, read_members
from apiproc.batch.stats import BatchStats, LiveBatch
from apiproc.clock import Clock, MonotonicClock
from apiproc.errors import EXIT_FATAL, EXIT_PENDING, ApiprocError, OutputError, ResumeMismatch
from apiproc.jobs import BadLine, request_fingerprint
from apiproc.providers import Provider, batch_api
from apiproc.providers.base import Verdict
from apiproc.providers.batches import BatchApiError, BatchInfo, BatchLimits
from apiproc.results import Result, ResultWriter
from apiproc.resume import Finished
from apiproc.settings import Settings

log = logging.getLogger("apiproc")

# Created_at is the server's clock, the intent's time ours: allow this much difference.
CLOCK_SKEW = 300.0
LIST_PAGE = 100
MAX_LIST_PAGES = 50
# More live batches than this are polled with one list call instead of one retrieve each.
LIST_POLL_THRESHOLD = 3
# At most this many requests prime the prompt cache before the first batch.
MAX_PRIMERS = 1_000
# The schema's figure for requests per batch, tried when the API refuses a bigger batch.
SCHEMA_MAX_REQUESTS = 10_000
CREATE_BACKOFF = 30.0
RUN = "run"
COLLECT = "collect"
CANCEL = "cancel"


class AmbiguousBatch(ApiprocError):
    """An intent matches several batches of the account: a person must say which."""


Display = Callable[["BatchRun"], None]


@dataclass(slots=True)
class Snapshot:
    """What the progress display shows after a poll."""

    live: list[LiveBatch]
    processing: int
    written: int
    succeeded: int
    errored: int
    pooled: int
    submitted: int
    batches_created: int
    batches_written: int
    next_poll: float
    elapsed: float
    cost: float


class BatchRun:
    """One batch-mode run over an open journal, writer and batch service."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider,
        calls: BatchCalls,
        writer: ResultWriter,
        journal: Journal,
        finished: Finished | None,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        display: Display | None = None,
        mode: str = RUN,
    ) -> None:
        self.settings = settings
        self.options = settings.batch
        self.provider = provider
        self.calls = calls
        self.api = calls.api
        self.writer = writer
        self.journal = journal
        self.state = journal.state
        self.finished = finished
        self.clock = clock or MonotonicClock()
        self.wall = wall
        self.display = display
        self.mode = mode
        self.rules = BatchRules(
            self.api, use_caching=settings.use_caching, validate=provider.validate
        )
        self.limits = _limits(self.api.limits, self.options.size, self.options.max_bytes)
        self.schedule = PollSchedule(self.options.poll_interval, self.options.poll_max_interval)
        self.stats = BatchStats(
            price_of=lambda model: provider.model(model).price,
            prices_as_of=provider.prices_as_of,
            state_path=journal.path,
        )
        self.next_poll = 0.0
        self._stopping = False
        self._wake = asyncio.Event()
        self._held: Chunk | None = None
        self._create_after = 0.0
        self._online: asyncio.Task[None] | None = None
        self._online_engine: Any = None
        self._job = str(journal.state.identity.get("job", ""))

    # ---- the run -----------------------------------------------------------------------

    async def run(self) -> BatchStats:
        with open(self.settings.requests_path, "rb") as handle:
            planner = Planner(handle, self.rules, self.state, self.finished, self._record_bad)
            planner.limits = self.limits
            context = Context(
                handle,
                self.rules,
                self.writer,
                self.finished,
                self.settings.max_attempts,
                self.stats,
            )
            try:
                await self._loop(planner, context)
            finally:
                await self._end_online()
                self.stats.skipped += planner.skipped
        self._final_figures()
        return self.stats

    async def _loop(self, planner: Planner, context: Context) -> None:
        await self._resolve_unknown()
        if self.mode == CANCEL:
            await self._cancel_live()
        if self.mode == RUN:
            await self._prime(planner)
        self._resume_online()
        while not self._stopping:
            self._wake.clear()
            changed = await self._submit(planner) if self.mode == RUN else False
            changed = await self._poll(context) or changed
            changed = self._hand_to_online() or changed
            if self._all_done(planner) or (self.mode == COLLECT and not self._online):
                return
            if not self.options.wait and self.mode == RUN and not changed:
                await self._end_online()  # --no-wait: nothing more to do now
                return
            self.next_poll = self.schedule.next(changed)
            self._show()
            await self._pause(self.next_poll)

    def request_stop(self, reason: str) -> None:
        """Ctrl-C/SIGTERM: stop between steps; the batches go on running at the provider."""
        if self._stopping:
            return
        self.stats.interrupted = reason
        self._stop()
        if self._online_engine is not None:
            self._online_engine.request_stop(reason)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _fatal(self, message: str) -> None:
        log.error("stopping: %s", message)
        self.stats.fatal = message
        self._stop()

    async def _pause(self, seconds: float) -> None:
        if self._wake.is_set() or not self.options.wait:
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sleeper, waker):
            task.cancel()
        await asyncio.gather(sleeper, waker, return_exceptions=True)

    def _all_done(self, planner: Planner) -> bool:
        state = self.state
        if state.live() or state.unresolved() or state.online or self._online is not None:
            return False
        if self.mode != RUN:
            return True
        online = self.options.fallback == "online"
        return self._held is None and not planner.pending(use_pool=not online)

    # ---- submitting --------------------------------------------------------------------

    async def _submit(self, planner: Planner) -> bool:
        """Create batches while the queue and the limits allow; True if any was made."""
        made = False
        use_pool = self.options.fallback != "online"
        while not self._stopping and not self.state.priming():
            if self.clock.now() < self._create_after:
                break
            chunk = self._held or planner.next_chunk(self.limits, use_pool=use_pool)
            self._held = None
            if chunk is None:
                break
            if self._queue_full(chunk):
                self._held = chunk
                break
            made = True
            if not await self._create(chunk):
                break
        return made

    def _queue_full(self, chunk: Chunk) -> bool:
        most = self.options.max_queue
        if most is None:
            return False
        queued = sum(intent.count for intent in self.state.live())
        return queued > 0 and queued + chunk.count > most

    async def _create(self, chunk: Chunk) -> bool:
        """Intent, then create; True to go on submitting."""
        size = chunk.size(self.api)
        seq = self.journal.intend(
            purpose=chunk.purpose,
            spans=chunk.spans,
            count=chunk.count,
            size=size,
            digest=chunk.digest,
            at=self.wall(),
            pool=chunk.pool_keys,
            rest=chunk.rest,
            new=chunk.new,
        )
        intent = self.state.intents[seq]
        try:
            info = await self.calls.create(self._entries(chunk), size, self._tag(seq))
        except BatchApiError as error:
            return await self._create_failed(intent, chunk, error)
        self._adopt(intent, info, adopted=False)
        log.info("created batch %s with %d requests", info.id, chunk.count)
        return True

    async def _entries(self, chunk: Chunk) -> AsyncIterator[bytes]:
        with open(self.settings.requests_path, "rb") as handle:
            for number, member in enumerate(read_members(handle, chunk.spans, chunk.digest)):
                yield self.rules.entry(member.job)
                if number % 1024 == 1023:
                    await asyncio.sleep(0)  # let signals and the display in

    async def _create_failed(self, intent: Intent, chunk: Chunk, error: BatchApiError) -> bool:
        if error.uncertain:
            log.warning("creating a batch failed without an answer (%s); checking", error)
            await self._resolve(intent, settle=True)
            return intent.batch_id is not None
        self.journal.not_created(intent.seq, str(error))
        if error.verdict is Verdict.FATAL:
            self._fatal(str(error))
            return False
        if error.verdict is Verdict.RETRY:
            wait = error.retry_after or CREATE_BACKOFF
            log.warning(
                "the batch service refused a new batch for now (%s); next try in %.0f s",
                error,
                wait,
            )
            self._create_after = self.clock.now() + wait
            return False
        return self._refused(chunk, error)

    def _refused(self, chunk: Chunk, error: BatchApiError) -> bool:
        """The batch as a whole was refused (400, 413): try smaller batches, else stop."""
        if error.status == 413 and chunk.count > 1:
            self.limits = replace(self.limits, max_bytes=max(1, chunk.size(self.api) // 2))
            log.warning("the batch was too large (%s); trying batches of half the size", error)
            return True
        if chunk.count > SCHEMA_MAX_REQUESTS and self.limits.max_requests > SCHEMA_MAX_REQUESTS:
            # Guess: the schema's "1 - 10000 elements" may be what the API enforces.
            self.limits = replace(self.limits, max_requests=SCHEMA_MAX_REQUESTS)
            log.warning(
                "the API refused a batch of %d requests (%s); trying %d at most",
                chunk.count,
                error,
                SCHEMA_MAX_REQUESTS,
            )
            return True
        self._fatal(f"the API refused to create a batch: {error}")
        return False

    def _tag(self, seq: int) -> str:
        return f"apiproc-{self._job}-{seq}"

    # ---- priming the prompt cache ------------------------------------------------------

    async def _prime(self, planner: Planner) -> None:
        """Before the first batch: one request per shared cached prefix goes first, alone
        in a small batch, so that the batches after it read the cache instead of all
        writing it (the online and batch caches are not assumed to be shared)."""
        state = self.state
        if state.primed or state.intents or state.next_offset or not self.settings.cache_warmup:
            return
        spans = planner.primers(MAX_PRIMERS)
        self.journal.primed(sum(span.lines for span in spans))
        chunk = planner.prime_chunk(spans, self.limits) if spans else None
        if chunk is not None:
            log.info("priming the prompt cache with %d requests first", chunk.count)
            await self._create(chunk)

    # ---- finding batches whose creation was never confirmed -----------------------------

    async def _resolve_unknown(self) -> None:
        for intent in self.state.unresolved():
            await self._resolve(intent, settle=True)

    async def _resolve(self, intent: Intent, settle: bool) -> None:
        """Adopt the batch this intent made, or record that it made none."""
        if settle:
            wait = intent.at + self.options.create_settle - self.wall()
            if wait > 0:
                await self.clock.sleep(wait)  # a create still being processed shows up
        candidates = await self._candidates(intent)
        chosen = self.options.adopt
        if chosen is not None and chosen in {info.id for info in candidates}:
            candidates = [info for info in candidates if info.id == chosen]
        if len(candidates) == 1:
            self._adopt(intent, candidates[0], adopted=True)
            log.warning(
                "batch %s was created before the last run stopped; following it",
                candidates[0].id,
            )
        elif not candidates:
            self.journal.not_created(intent.seq, "no such batch in the account's list")
        else:
            raise AmbiguousBatch(_ambiguity(intent, candidates, self.journal.path))

    async def _candidates(self, intent: Intent) -> list[BatchInfo]:
        low = intent.at - CLOCK_SKEW
        high = intent.at + self.settings.timeout + CLOCK_SKEW
        claimed = self.state.claimed_ids()
        tag = self._tag(intent.seq)
        found: list[BatchInfo] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await self.calls.list_page(cursor, LIST_PAGE)
            for info in page.batches:
                if info.id in claimed or info.counts.total != intent.count:
                    continue
                if info.tag is not None and info.tag == tag:
                    return [info]  # the provider kept our tag: no doubt left
                if low <= info.created_at <= high and info.tag is None:
                    found.append(info)
            older = page.batches and min(b.created_at for b in page.batches) < low
            if older or page.next_cursor is None:
                break
            cursor = page.next_cursor
        return found

    def _adopt(self, intent: Intent, info: BatchInfo, adopted: bool) -> None:
        self.journal.created(intent.seq, info.id, info.created_at, adopted=adopted)
        self.journal.status(intent.seq, info.status, info.counts.as_dict())
        self.stats.batches_created += 1
        self.stats.submitted += intent.count

    # ---- cancel ------------------------------------------------------------------------

    async def _cancel_live(self) -> None:
        for intent in self.state.live():
            if intent.status == "ended" or intent.batch_id is None:
                continue
            self.journal.cancel(intent.seq)
            info = await self.calls.cancel(intent.batch_id)
            self.journal.status(intent.seq, info.status, info.counts.as_dict())
            log.warning("canceling batch %s (%s)", info.id, info.status)

    # ---- polling and collecting --------------------------------------------------------

    async def _poll(self, context: Context) -> bool:
        live = self.state.live()
        if not live:
            return False
        statuses = await self._statuses(live)
        changed = False
        for intent in live:
            info = statuses.get(intent.seq)
            if info is None:
                continue
            if info.status != intent.status:
                changed = True
            self.journal.status(intent.seq, info.status, info.counts.as_dict())
            if info.ended:
                await self._write(intent, info, context)
                changed = True
            if self._stopping:
                break
        return changed

    async def _statuses(self, live: list[Intent]) -> dict[int, BatchInfo]:
        """The live batches' states: from list pages when there are many, else one by one."""
        wanted = {intent.batch_id: intent.seq for intent in live if intent.batch_id}
        found: dict[int, BatchInfo] = {}
        if len(wanted) > LIST_POLL_THRESHOLD:
            oldest = min((intent.created_at or intent.at) for intent in live) - CLOCK_SKEW
            cursor: str | None = None
            for _ in range(MAX_LIST_PAGES):
                page = await self.calls.list_page(cursor, LIST_PAGE * 10)
                for info in page.batches:
                    if info.id in wanted:
                        found[wanted.pop(info.id)] = info
                older = page.batches and min(b.created_at for b in page.batches) < oldest
                if not wanted or older or page.next_cursor is None:
                    break
                cursor = page.next_cursor
        for batch_id, seq in wanted.items():
            if self._stopping:
                break
            found[seq] = await self.calls.retrieve(batch_id)
        return found

    async def _write(self, intent: Intent, info: BatchInfo, context: Context) -> None:
        collected = await collect(self.calls, info, intent, context)
        size = os.path.getsize(self.settings.output_path)
        self.journal.written(intent.seq, collected.retry, collected.tally, size)
        self.stats.batches_written += 1
        again = sum(span.lines for span in collected.retry)
        log.info(
            "batch %s: results written (%s)%s",
            info.id,
            ", ".join(f"{kind} {count:,}" for kind, count in sorted(collected.tally.items())),
            f"; {again:,} go again" if again else "",
        )

    def _record_bad(self, bad: BadLine) -> None:
        error = {"type": "invalid_request_error", "message": bad.message, "code": bad.code}
        result = Result(
            bad.custom_id,
            bad.line_no,
            error=error,
            metadata=bad.metadata,
            request=bad.text,
            fingerprint=bad.fingerprint or request_fingerprint(bad.request),
        )
        self.writer.write(result)
        self.stats.count(result, None, None)

    # ---- the online fallback -----------------------------------------------------------

    def _hand_to_online(self) -> bool:
        """With --fallback online, pooled requests go through the online engine."""
        if self.options.fallback != "online" or self.mode != RUN or self._stopping:
            return False
        if self._online is not None or not self.state.pool:
            return False
        self.journal.online(list(self.state.pool.values()))
        self._resume_online()
        return True

    def _resume_online(self) -> None:
        if self.state.online and self._online is None and self.mode == RUN:
            batches = dict(self.state.online)
            self._online = asyncio.create_task(self._run_online(batches))

    async def _run_online(self, batches: dict[int, list[Span]]) -> None:
        from apiproc.engine import Engine

        spans = [span for key in sorted(batches) for span in batches[key]]
        engine = Engine(self.settings, self.provider, self.writer)
        self._online_engine = engine

        async def produce(engine: Engine) -> None:
            with open(self.settings.requests_path, "rb") as handle:
                for member in read_members(handle, spans, fingerprints=True):
                    job = member.job
                    self.rules.params(job)
                    if already_final(self.finished, job.custom_id, job.fingerprint):
                        continue
                    job.attempts = member.attempts
                    await engine.put(job)

        try:
            stats = await engine.run(produce)
        finally:
            self._online_engine = None
        _merge_online(self.stats, stats)
        if stats.fatal:
            self._fatal(stats.fatal)
        elif not stats.interrupted:
            for key in batches:
                self.journal.online_done(key)
        self._online = None
        self._wake.set()

    async def _end_online(self) -> None:
        task = self._online
        if task is None:
            return
        if self._stopping and self._online_engine is not None:
            self._online_engine.request_stop(self.stats.interrupted or "stop")
        with suppress(asyncio.CancelledError):
            await task

    # ---- progress ----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        live = self._live_batches()
        return Snapshot(
            live=live,
            processing=sum(intent.counts.get("processing", 0) for intent in self.state.live()),
            written=self.stats.done,
            succeeded=self.stats.succeeded
            + (self.stats.online.succeeded if self.stats.online else 0),
            errored=self.stats.errored_total,
            pooled=sum(span.lines for span in self.state.pool.values()),
            submitted=self.stats.submitted,
            batches_created=self.stats.batches_created,
            batches_written=self.stats.batches_written,
            next_poll=self.next_poll,
            elapsed=self.stats.elapsed,
            cost=self.stats.batch_cost()[0] + self.stats.online_cost(),
        )

    def _show(self) -> None:
        if self.display is not None:
            self.display(self)

    def _live_batches(self) -> list[LiveBatch]:
        return [
            LiveBatch(intent.batch_id or "?", intent.status or "?", intent.count, intent.created_at)
            for intent in self.state.live()
        ]

    def _final_figures(self) -> None:
        self.stats.finished = time.monotonic()
        self.stats.live = self._live_batches()
        self.stats.pooled = sum(span.lines for span in self.state.pool.values())
        # After a cancel, pooled requests wait for a rerun by choice: nothing is pending.
        self.stats.pending = bool(self.stats.live) or (self.mode == RUN and self.stats.pooled > 0)
        self.stats.api_calls = self.calls.calls
        self.stats.api_rate_limited = self.calls.rate_limited


def _limits(api: BatchLimits, size: int | None, max_bytes: int | None) -> BatchLimits:
    return BatchLimits(
        max_requests=min(api.max_requests, size or api.max_requests),
        max_bytes=min(api.max_bytes, max_bytes or api.max_bytes),
        max_request_bytes=api.max_request_bytes,
        one_model=api.one_model,
    )


def _merge_online(stats: BatchStats, online: Any) -> None:
    if stats.online is None:
        stats.online = online
        return
    merged = stats.online
    merged.succeeded += online.succeeded
    for kind, count in online.errored.items():
        merged.errored[kind] = merged.errored.get(kind, 0) + count
    merged.attempts += online.attempts
    merged.retries += online.retries
    for model, bill in online.bills.items():
        merged.bills.setdefault(model, type(bill)(bill.price)).merge(bill)


def _ambiguity(intent: Intent, candidates: list[BatchInfo], journal_path: str) -> str:
    when = datetime.fromtimestamp(intent.at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    ids = ", ".join(info.id for info in candidates)
    return (
        f"A batch of {intent.count:,} requests was being created at {when} when an earlier run "
        f"stopped, and {len(candidates)} batches of that size were created around then: {ids}. "
        f"Check them with `apiproc batch status --batch-id ID`, then rerun with "
        f"--adopt-batch ID for the one this run made (state file {journal_path})."
    )


# ---- setting a batch run up ---------------------------------------------------------------


async def run_batches(
    settings: Settings,
    provider: Provider,
    *,
    display: Display | None = None,
    on_stopping: Callable[[str], None] | None = None,
    mode: str = RUN,
) -> BatchStats:
    """Prepare the state file and the output, then run (or collect, or cancel)."""
    from apiproc.runner import _signals

    timeout = aiohttp.ClientTimeout(total=settings.timeout, sock_connect=30)
    async with aiohttp.ClientSession(headers=provider.session_headers, timeout=timeout) as session:
        api = batch_api(provider, session)
        # The state file's lock is taken before the output is touched.
        with Journal.open(state_path(settings.output_path)) as journal:
            finished = _prepare(journal, settings, provider, api.endpoint)
            clock = MonotonicClock()
            pacer = Pacer(settings.batch.api_rpm, clock)
            calls = BatchCalls(api, pacer, clock, random.Random(), settings.retry_base_delay)
            with ResultWriter(
                settings.output_path, settings.output_format, settings.fsync
            ) as writer:
                run = BatchRun(
                    settings,
                    provider,
                    calls,
                    writer,
                    journal,
                    finished,
                    clock=clock,
                    display=display,
                    mode=mode,
                )
                with _signals(run, on_stopping):
                    try:
                        return await run.run()
                    except BatchApiError as error:
                        raise _service_error(error, journal.path) from None


class BatchServiceError(ApiprocError):
    """The batch service refused or failed a call the run cannot go on without."""


def _service_error(error: BatchApiError, journal_path: str) -> BatchServiceError:
    if error.verdict is Verdict.FATAL:
        failure = BatchServiceError(f"The batch service refused the key or account: {error}.")
        failure.exit_status = EXIT_FATAL
    elif error.verdict is Verdict.RETRY:
        failure = BatchServiceError(
            f"The batch service did not answer ({error}); the batches go on: rerun the "
            f"same command later to follow them (state in {journal_path})."
        )
        failure.exit_status = EXIT_PENDING
    else:
        failure = BatchServiceError(f"The batch service refused a call: {error}.")
    return failure


def _prepare(
    journal: Journal, settings: Settings, provider: Provider, endpoint: str
) -> Finished | None:
    """Check the state file against the options, then repair and scan the output."""
    if journal.repaired_bytes:
        log.warning("repaired %s: removed a torn last line", journal.path)
    if settings.overwrite:
        _refuse_if_running(journal, "before starting afresh")
        journal.restart()
    elif settings.retry_errored and journal.state.intents:
        if not journal.state.settled():
            raise OutputError(
                "--retry-errored needs the batches of the earlier runs to be finished and "
                "written first: rerun without it to collect them."
            )
        # The errored records leave the output: a new journal plans them again.
        journal.restart(keep_as=f"{journal.path}.{int(time.time())}.done")
    _check_input(journal, settings)
    _check_endpoint(journal, settings, endpoint)
    finished = _scan_output(journal, settings, provider)
    _check_output_kept(journal, settings.output_path)
    if not journal.state.identity:
        identity = input_identity(settings.requests_path)
        identity["job"] = uuid.uuid4().hex[:12]
        journal.start(identity, endpoint, time.time(), provider.name)
    return finished


def _check_input(journal: Journal, settings: Settings) -> None:
    """Batches are kept as byte ranges of the input: it must not change under them
    (lines appended are fine). With nothing submitted yet, a new input just starts anew."""
    recorded = journal.state.identity
    if not recorded:
        return
    current = input_identity(settings.requests_path, int(recorded.get("head_bytes", 0)))
    if current["head_sha256"] == recorded.get("head_sha256"):
        return
    if journal.state.intents:
        raise ResumeMismatch(
            f"{settings.requests_path} changed since batches were submitted for "
            f"{settings.output_path}: restore it as it was, or start afresh with --overwrite."
        )
    journal.restart(keep_as=f"{journal.path}.{int(time.time())}.old")


def _check_endpoint(journal: Journal, settings: Settings, endpoint: str) -> None:
    recorded = journal.state.endpoint
    if not recorded or recorded == endpoint:
        return
    if not settings.simulate:
        raise ResumeMismatch(
            f"The batches of {journal.path} were created at {recorded}: rerun with "
            "--request-url pointing there (its Messages URL) to follow them."
        )
    # The bundled simulator keeps its batches in memory: a new one never saw them.
    log.warning("the simulator that held this state's batches is gone; planning afresh")
    journal.restart(keep_as=f"{journal.path}.{int(time.time())}.gone")


def _scan_output(journal: Journal, settings: Settings, provider: Provider) -> Finished | None:
    """The online mode's resume scan; --force may not resend changed lines once batches
    hold the input's lines (their results would be matched to the wrong requests)."""
    from apiproc.runner import prepare_output

    if not (settings.force and journal.state.intents):
        return prepare_output(settings, provider)
    try:
        return prepare_output(replace(settings, force=False), provider)
    except ResumeMismatch as error:
        raise ResumeMismatch(
            f"{error} (With batches already submitted for this output, --force does not "
            "apply: restore the input, or start afresh with --overwrite.)"
        ) from None


def _refuse_if_running(journal: Journal, purpose: str) -> None:
    state = journal.state
    if state.live() or state.unresolved():
        raise OutputError(
            f"{journal.path} names batches that are still running or unconfirmed: collect "
            "them by rerunning without --overwrite, or cancel them with `apiproc batch "
            f"cancel {journal.path}`, {purpose}."
        )


def _check_output_kept(journal: Journal, output_path: str) -> None:
    """Results the journal counts as written must still be in the output: an output that
    shrank was replaced or cut, and its missing results would never come back."""
    size = os.path.getsize(output_path) if os.path.exists(output_path) else 0
    if size < journal.state.output_bytes:
        raise ResumeMismatch(
            f"{output_path} is shorter than when batch results were last written to it "
            f"({size:,} < {journal.state.output_bytes:,} bytes): restore it, or start afresh "
            "with --overwrite (collected results would be paid for again)."
        )
