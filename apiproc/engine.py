"""The pipeline: read lines, admit under the rate limits, send, retry, append results.

    engine = Engine(settings, provider, writer, finished=already_in_output)
    stats = await engine.run(lambda engine: feed_file(engine, "requests.jsonl"))

What it does and why. A job file can hold millions of requests and the account's limits
are the only thing that should bound how fast it runs. So the engine keeps the API
exactly as busy as its limits allow: never idle while there is room, never so eager
that it earns 429s, and never holding more than a bounded window of the file in memory.

Inputs: a `Settings` (paths, limits, retry and timeout policy, provider options).
Outputs: one line per request in the output file, and `RunStats` for the summary.

How the main loop is structured. Three kinds of coroutine cooperate:
1. A producer reads the input in batches of lines and turns each line into a `Job` (or a
   `BadLine`, recorded at once) on a bounded queue.
2. One dispatcher takes the next job — a retry whose back-off has passed first, then new
   input — and hands it to the queue of its model's rate-limit class. The API limits
   each class on its own, so each class has its own limiter (`Limiters`) and its own
   admitter: a coroutine that takes the class's jobs first come first served, waits for
   the class's limiter to admit the job's estimated cost, then for a free in-flight slot
   (shared by all classes). A class whose bucket is empty holds up only itself. The
   dispatcher reads ahead at most LOOKAHEAD_JOBS jobs (and LOOKAHEAD_BYTES of their
   lines) waiting in those queues, so memory stays bounded. Nothing polls: each
   coroutine sleeps whenever nothing can happen. A job whose cached prompt prefix another
   request is warming is parked instead (`caching.PrefixGroups`) and comes back once
   the prefix is warm.
3. Each admitted attempt runs as its own task: it sends the request, classifies the
   answer through the provider, and hands the limiter the reservation with what came
   back (usage, rate-limit headers, retry-after) in one `finish()` call; then it either
   writes the final result or schedules a retry with back-off. Whatever goes wrong
   inside it, the job ends recorded or retried. A fatal answer (bad key, spend cap)
   stops admission and ends the run quickly.
The run ends when the input is exhausted and nothing is in flight or waiting to retry.

A result the output refuses (disk full, broken pipe) stops admission at once: the
attempts in flight finish and their results are written if the output takes them, and
every id that could not be written is kept in `RunStats.unwritten`. `RunStats` counts
what was read and what was recorded, so a run that lost a result cannot look complete.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp

from apiproc.caching import PrefixGroups
from apiproc.clock import Clock, MonotonicClock
from apiproc.errors import WriteFailed
from apiproc.jobs import BadLine, Job, JobReader, line_batches, open_input
from apiproc.limiter import (
    NOTHING,
    AttemptReport,
    Cost,
    Limiters,
    Limits,
    RateLimiter,
    RequestTooLarge,
    Reservation,
)
from apiproc.pricing import Bill, PriceOf
from apiproc.providers.base import HttpRequest, Outcome, Provider, Usage, Verdict
from apiproc.results import Result, ResultWriter
from apiproc.resume import Earlier, Finished
from apiproc.retry import backoff_delay
from apiproc.settings import Settings
from apiproc.tokens import TokenEstimator

log = logging.getLogger("apiproc")

INPUT_QUEUE_SIZE = 1024
CONNECT_TIMEOUT = 30.0
# Error types of apiproc's own that a later run may not meet (the rest are the API's).
OWN_TRANSIENT_ERRORS = frozenset({"connection_error", "timeout_error", "internal_error"})
# Read ahead of admission at most this much: jobs waiting in their class's queue, and
# the bytes of their lines.
LOOKAHEAD_JOBS = 4_096
LOOKAHEAD_BYTES = 64_000_000
# A success that reported no usage: the request, and nothing known beyond it.
NO_USAGE = Cost(requests=1)
# Reading and estimating a long run of input at once would hold up everything else.
YIELD_EVERY = 64
Work = TypeVar("Work")


@dataclass(slots=True)
class RunStats:
    """What happened in one run, for the summary and the exit status."""

    succeeded: int = 0
    errored: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    bills: dict[str, Bill] = field(default_factory=dict)  # usage and cost, by model
    started: float = 0.0
    finished: float = 0.0
    fatal: str | None = None
    interrupted: str | None = None  # the signal that stopped the run
    hurried: str | None = None  # a signal that cut the wait after another stop
    skipped: int = 0  # already final in the output from earlier runs
    changed: list[str] = field(default_factory=list)  # ids whose result answers another line
    abandoned: int = 0  # in flight when the grace period ran out
    read: int = 0  # requests and bad lines taken from the input to be sent or recorded
    unwritten: list[str] = field(default_factory=list)  # ids of results the output refused
    write_error: str | None = None  # why the first of them could not be written
    broken_pipe: bool = False  # the output's reader went away
    # model -> (learned input ratio to cl100k, responses learned from)
    estimates: dict[str, tuple[float, int]] = field(default_factory=dict)
    on_bytes: bool = False  # no input token limit came within reach: prompts went uncounted
    # The provider's prices, for the cost in progress lines and the summary.
    price_of: PriceOf | None = field(default=None, repr=False)
    prices_as_of: str = ""

    def charge(self, model: str, usage: Usage) -> None:
        """Add one answer's usage to its model's bill."""
        bill = self.bills.get(model)
        if bill is None:
            price = self.price_of(model) if self.price_of is not None else None
            bill = self.bills[model] = Bill(price)
        bill.add(usage)

    @property
    def usage(self) -> Usage:
        """The usage of every answer, summed over the bills."""
        total = Usage()
        for bill in self.bills.values():
            total.add(bill.usage)
        return total

    @property
    def done(self) -> int:
        return self.succeeded + self.errored_total

    @property
    def errored_total(self) -> int:
        return sum(self.errored.values())

    @property
    def unrecorded(self) -> int:
        """Requests read in this run that have no line in the output."""
        return self.read - self.done

    @property
    def elapsed(self) -> float:
        return max(0.0, (self.finished or time.monotonic()) - self.started)


class Engine:
    def __init__(
        self,
        settings: Settings,
        provider: Provider,
        writer: ResultWriter,
        limiter: Limiters | None = None,
        estimator: TokenEstimator | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        finished: Finished | None = None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.writer = writer
        self.clock = clock or MonotonicClock()
        self.limiter = limiter or Limiters(
            settings.limits,
            by_class=_by_class(settings.class_limits, provider),
            clock=self.clock,
            ramp=settings.ramp,
        )
        self.estimator = estimator or TokenEstimator(
            settings.output_accounting or provider.output_accounting,
            prior=lambda model: provider.model(model).token_ratio,
            background=True,
            lazy=True,
        )
        if settings.use_caching:  # prefixes are measured in tokens from the first request
            self.estimator.count_exactly()
        self.rng = rng or random.Random()
        self.stats = RunStats(
            price_of=lambda model: provider.model(model).price,
            prices_as_of=provider.prices_as_of,
        )
        self.finished = finished
        # Input read and not yet routed; the producer waits while it holds INPUT_QUEUE_SIZE.
        self._inbox: deque[Job | BadLine] = deque()
        self._inbox_room = asyncio.Event()
        self._ready: deque[Job] = deque()
        self._classes: dict[str, _ClassQueue] = {}
        self._waiting = _Waiting()
        self._read = 0
        self._changed = asyncio.Event()
        self._slots: _Slots[tuple[Job, Reservation]] = _Slots(settings.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._input_done = False
        self._stopping = False
        self._hurry = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        # A plain attempt's --timeout is kept by one sweep (`_Deadlines`), not by a timer
        # of aiohttp's per request; a streamed one sets its own (`_timeout`).
        self._plain_timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        self._deadlines = _Deadlines(settings.timeout)
        # Prompt caching: jobs wait here while their shared prefix is being warmed.
        self.cache = PrefixGroups(
            self.clock,
            self.estimator,
            release=self._release,
            warmup=settings.cache_warmup,
            add_breakpoints=settings.use_caching,
            cache_aware=settings.cache_aware_limits,
            wake=lambda delay, callback: asyncio.get_running_loop().call_later(delay, callback),
            facts=provider.model,
        )

    # ---- the run -----------------------------------------------------------------------

    async def run(self, produce: Callable[[Engine], Any]) -> RunStats:
        """Run to the end; `produce(engine)` is the coroutine that feeds `engine.put()`."""
        self.stats.started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=self.settings.max_concurrency, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=self._plain_timeout, headers=self.provider.session_headers
        ) as session:
            self._session = session
            producer = asyncio.create_task(self._produce(produce))
            self._dispatcher = asyncio.create_task(self._dispatch())
            try:
                await self._dispatcher
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
            finally:
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
                await self._finish_in_flight(self.settings.grace_period if self._stopping else None)
        self.stats.finished = time.monotonic()
        self.stats.estimates = self.estimator.learned()
        self.stats.on_bytes = not self.estimator.counting
        if not producer.cancelled() and producer.exception() is not None:
            raise producer.exception()  # type: ignore[misc]
        return self.stats

    async def put(self, item: Job | BadLine) -> None:
        inbox = self._inbox
        while len(inbox) >= INPUT_QUEUE_SIZE:
            self._inbox_room.clear()
            await self._inbox_room.wait()
        inbox.append(item)
        self.stats.read += 1
        if len(inbox) == 1:  # the dispatcher may be waiting for input; else it is not
            self._changed.set()

    def offer(self, item: Job | BadLine) -> bool:
        """Queue a job for admission at once, past the dispatcher, when that is all the
        dispatcher would do with it: nothing read before it waits to be routed, no retry
        is ready, and the look-ahead and the prompt cache have room. False: `put()` it."""
        if (
            self._inbox
            or self._ready
            or self._stopping
            or type(item) is not Job
            or not self._waiting.has_room
            or self.cache.full
        ):
            return False
        self.stats.read += 1
        self._route_job(item, False)
        return True

    async def _produce(self, produce: Callable[[Engine], Any]) -> None:
        try:
            await produce(self)
        finally:
            self._input_done = True
            self._changed.set()

    async def _dispatch(self) -> None:
        try:
            await self._route()
        finally:
            await self._stop_admitters()

    async def _route(self) -> None:
        while not self._stopping:
            taken = await self._next()
            if taken is None:
                return
            item, ready = taken
            if isinstance(item, BadLine):
                self._record(
                    Result(
                        item.custom_id,
                        item.line_no,
                        error=_bad_line_error(item),
                        metadata=item.metadata,
                        request=item.text,
                        fingerprint=item.fingerprint,
                    )
                )
                continue
            self._route_job(item, ready)

    async def _next(self) -> tuple[Job | BadLine, bool] | None:
        """A ready retry (True), else the next input item (False); None when all is done."""
        while True:
            if self._ready:
                return self._ready.popleft(), True
            if self._inbox and not self.cache.full and self._waiting.has_room:
                self._read += 1
                if self._read % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let the admitters and answers in while reading
                    continue
                if len(self._inbox) == INPUT_QUEUE_SIZE // 2:
                    self._inbox_room.set()  # a full producer refills half at once
                return self._inbox.popleft(), False
            idle = not self._tasks and not self._timers and not self._classes
            if idle and self.cache.release_all():
                continue  # parked, but nothing in flight is warming their prefix
            if self._input_done and idle and not self._inbox:
                return None
            self._changed.clear()
            await self._changed.wait()

    def _route_job(self, job: Job, ready: bool) -> None:
        """To its class's queue, unless parked while its prefix is warmed: then it is given
        back through `_release`."""
        if not self.cache.park(job):
            self._enqueue(job, ready)

    # ---- admission, one admitter per rate-limit class -----------------------------------

    def _enqueue(self, job: Job, ready: bool) -> None:
        """Queue `job` behind the others of its class, a ready retry (or a job let go by
        the prompt cache) before new input, as it came first; start the class's admitter."""
        limit_class = self.provider.model(str(job.params.get("model", ""))).limit_class
        queue = self._classes.get(limit_class)
        if queue is None:
            queue = self._classes[limit_class] = _ClassQueue(
                limit_class, self.limiter.of(limit_class)
            )
        (queue.ready if ready else queue.fresh).append(job)
        self._waiting.add(job)
        if queue.admitter is None and self._slots.has_free:  # else the senders pull it
            self._start_admitter(queue)

    def _start_admitter(self, queue: _ClassQueue) -> None:
        queue.admitter = asyncio.create_task(self._admit_class(queue))

    async def _admit_class(self, queue: _ClassQueue) -> None:
        """Admit the class's jobs in order while a slot is free or they must wait for
        the limiter; end when the queue is empty, or when every slot is busy: then the
        senders take its jobs on as they finish (`_pull`), and start it again for a job
        that must wait."""
        limiter = queue.limiter
        at_once = False
        try:
            while (queue.ready or queue.fresh) and not self._stopping:
                if at_once and not self._slots.has_free and not limiter.waiting:
                    return  # the senders pull the next, as they did this one
                job = (queue.ready or queue.fresh).popleft()
                if self._waiting.remove(job):
                    self._changed.set()  # room to read further ahead again
                try:
                    at_once = await self._admit(job, limiter)
                except Exception as error:  # a bug of ours: keep its traceback, never lose it
                    log.exception("internal error while admitting %s", job.custom_id)
                    self._record_job(job, error=_internal_error(error))
        finally:
            queue.admitter = None
            if not (queue.ready or queue.fresh) and self._classes.get(queue.name) is queue:
                del self._classes[queue.name]
            self._changed.set()

    async def _admit(self, job: Job, limiter: RateLimiter) -> bool:
        """Admit `job` and send it when a slot is free; True when the limiter admitted
        it without waiting."""
        cost, reservation = self._admit_now(job, limiter)
        at_once = reservation is not None
        try:
            if reservation is None:
                reservation = await self._reserve(job, cost, limiter)
        except RequestTooLarge as error:
            self.cache.answered(job)
            self._record_job(
                job, error={"type": "invalid_request_error", "message": f"request {error}"}
            )
            return False
        # The slot after the limiter: a class waiting for room must not hold a slot that
        # another class could use.
        if self._slots.take() or not await self._slots.wait((job, reservation)):
            task = asyncio.create_task(self._sender(job, reservation))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        return at_once

    def _admit_now(self, job: Job, limiter: RateLimiter) -> tuple[Cost, Reservation | None]:
        """`job`'s cost, and its reservation if the limiter admits it without waiting."""
        if limiter.tokens_within_reach:
            self.estimator.count_exactly()
        cost = self._cost(job)
        try:
            return cost, limiter.admit_now(cost)
        except RequestTooLarge:
            return cost, None  # _reserve tells, counting a byte-bound prompt first

    def _pull(self) -> tuple[Job, Reservation] | None:
        """For a sender done with its attempt: the next job of a class that the limiter
        admits at once, classes taking turns. So while every slot is busy, jobs go out as
        slots come free, with no task to start and no admitter to wake. A job that would
        have to wait goes back to the head of its queue, for its admitter."""
        classes = self._classes
        for limit_class, queue in classes.items():
            jobs = queue.ready or queue.fresh
            if not jobs:
                continue
            reservation = None
            if not queue.limiter.waiting:
                job = jobs.popleft()
                try:
                    reservation = self._admit_now(job, queue.limiter)[1]
                except Exception:
                    reservation = None  # its admitter records the error
                if reservation is None:
                    jobs.appendleft(job)
            if reservation is None:
                if queue.admitter is None:
                    self._start_admitter(queue)
                continue
            if self._waiting.remove(job):
                self._changed.set()  # room to read further ahead again
            if not (queue.ready or queue.fresh) and queue.admitter is None:
                del classes[limit_class]  # as its admitter would have on leaving
            elif len(classes) > 1:
                classes[limit_class] = classes.pop(limit_class)  # its turn is over
            return job, reservation
        return None

    async def _reserve(self, job: Job, cost: Cost, limiter: RateLimiter) -> Reservation:
        try:
            return await limiter.acquire(cost)
        except RequestTooLarge:
            if job.estimate is None or not job.estimate.provisional:
                raise
        # A byte bound too large for a limit: only the real count can say it is.
        job.estimate = self.estimator.estimate(job.params, exact=True)
        return await limiter.acquire(self._cost(job))

    async def _stop_admitters(self) -> None:
        admitters = [queue.admitter for queue in self._classes.values() if queue.admitter]
        for admitter in admitters:
            admitter.cancel()
        await asyncio.gather(*admitters, return_exceptions=True)
        self._classes.clear()

    def _release(self, jobs: list[Job]) -> None:
        self._ready.extend(jobs)
        self._changed.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.give()
        for queue in self._classes.values():  # a class left to the senders, who are gone
            if queue.admitter is None and (queue.ready or queue.fresh) and not self._stopping:
                self._start_admitter(queue)
        if not self._tasks:  # the dispatcher waits for the last one to see the run end
            self._changed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("internal error in a request task", exc_info=task.exception())

    def _cost(self, job: Job) -> Cost:
        # Estimated at each admission (a retry's too) from what has been learned by now;
        # the prompt's count, or its byte bound until it can be counted, is made once.
        earlier = job.estimate
        if earlier is None:
            estimate = job.estimate = self.estimator.estimate(job.params)
        else:
            estimate = job.estimate = self.estimator.again(earlier, job.params)
        cost = Cost(1, estimate.input_tokens, estimate.output_tokens)
        # Only a job let go with a cached prefix may cost less: no call for the others.
        return self.cache.cost(job, cost) if self.cache.sent else cost

    # ---- one attempt -------------------------------------------------------------------

    async def _sender(self, job: Job, reservation: Reservation) -> None:
        """Send `job`, then, on the same slot, each admitted job that waits for one: a task
        per run of attempts rather than one per attempt, which the event loop pays for.
        Each attempt is guarded: whatever raises, its job ends recorded or retried (or,
        after a stop, left for a rerun). The attempt is not a coroutine of its own: every
        wake-up of the task passes through each coroutine it awaits."""
        work: tuple[Job, Reservation] | None = (job, reservation)
        task = asyncio.current_task()  # once: asking costs a Python call in 3.11
        assert task is not None
        while work is not None:
            job, reservation = work
            job.attempts += 1
            self.stats.attempts += 1
            limiter = self.limiter.of(reservation.limit_class)
            try:
                outcome = await self._send(job, reservation, limiter, task)
            except Exception as error:  # a bug of ours: keep its traceback, never lose it
                log.exception("internal error while sending %s", job.custom_id)
                outcome = Outcome(Verdict.PERMANENT, error=_internal_error(error))
            self._answered(job, reservation, outcome, limiter)
            work = None if self._stopping else self._slots.pass_on() or self._pull()

    def _answered(
        self, job: Job, reservation: Reservation, outcome: Outcome, limiter: RateLimiter
    ) -> None:
        try:
            self.cache.answered(job, outcome)
            limiter.finish(reservation, self._report(job, outcome))
        except Exception:  # bookkeeping only: the answer itself must still be recorded
            log.exception("internal error while accounting for %s", job.custom_id)
        try:
            self._conclude(job, outcome)
        except Exception as error:
            log.exception("internal error while concluding %s", job.custom_id)
            if not job.final:
                self._rescue(job, outcome, error)

    def _conclude(self, job: Job, outcome: Outcome) -> None:
        if outcome.verdict is Verdict.SUCCESS:
            self._succeeded(job, outcome)
        elif outcome.verdict is Verdict.FATAL:
            self._fatal(outcome)
        elif outcome.verdict is Verdict.RETRY:
            self.stats.rate_limited += outcome.rate_limited
            job.rate_limited += outcome.rate_limited
            self._retry_or_give_up(job, outcome)
        else:
            self._record_job(job, outcome)

    def _rescue(self, job: Job, outcome: Outcome, error: Exception) -> None:
        """Record a job whose conclusion failed: its answer if it had one, else the error."""
        if outcome.verdict is Verdict.SUCCESS:
            self._record_job(job, outcome)
        else:
            self._record_job(job, error=_internal_error(error))

    def _report(self, job: Job, outcome: Outcome) -> AttemptReport:
        """What the attempt tells the limiter: what the server counted, and its headers."""
        verdict = outcome.verdict
        if verdict is Verdict.SUCCESS:
            used: Cost | None = self._counted(job, outcome.usage) if outcome.usage else NO_USAGE
        elif verdict is Verdict.FATAL or outcome.rate_limited:
            used = NOTHING  # refused before any work was done
        elif verdict is Verdict.PERMANENT:
            used = Cost(requests=1)
        else:
            used = None  # the server may have done the work before failing: keep it charged
        return AttemptReport(
            used=used,
            server=outcome.server,
            rate_limited=outcome.rate_limited,
            retry_after=outcome.retry_after,
            succeeded=verdict is Verdict.SUCCESS,
            api_answer=outcome.api_answer,
        )

    def _counted(self, job: Job, usage: Usage) -> Cost:
        """The usage as the rate limits count it."""
        counted_input = usage.input_tokens + usage.cache_creation_input_tokens
        if (
            usage.cache_read_input_tokens
            and self.provider.model(job.params["model"]).cache_reads_count
        ):
            counted_input += usage.cache_read_input_tokens
        return Cost(1, counted_input, usage.output_tokens)

    async def _send(
        self,
        job: Job,
        reservation: Reservation,
        limiter: RateLimiter,
        sender: asyncio.Task[None],
    ) -> Outcome:
        """One attempt on the wire, within --timeout (a plain one) or the stream's limits.
        A streamed answer is read as it arrives: its usage is charged as reported, and a
        silence longer than the idle timeout cuts it short. `sender` is the task running
        it, which the deadline of a plain attempt cancels."""
        assert self._session is not None
        request = self.provider.request(job.params)
        task = None
        if not request.stream:
            task = sender
            self._deadlines.start(task)
        try:
            async with self._session.post(
                request.url,
                data=request.body,
                headers=request.headers or None,
                timeout=self._timeout(request),
            ) as response:
                decoder = self.provider.decoder(response.status, response.headers)
                if decoder is None:
                    payload = await response.read()
                    return self.provider.classify(
                        response.status, response.headers, payload, limiter.wants_figures()
                    )
                async for chunk in response.content.iter_any():
                    usage = decoder.feed(chunk)
                    if usage is not None:
                        limiter.progress(reservation, self._counted(job, usage))
                return decoder.finish()
        except asyncio.CancelledError:
            if task is None or not self._deadlines.end(task):
                raise  # a stop, not the deadline
            message = f"no complete answer within {self.settings.timeout:g} s"
            return Outcome(Verdict.RETRY, error={"type": "timeout_error", "message": message})
        except aiohttp.SocketTimeoutError:
            message = f"no byte for {self.settings.idle_timeout:g} s: the answer stalled"
            return Outcome(Verdict.RETRY, error={"type": "timeout_error", "message": message})
        except aiohttp.ConnectionTimeoutError:
            message = f"no connection within {CONNECT_TIMEOUT:g} s"
            return Outcome(Verdict.RETRY, error={"type": "connection_error", "message": message})
        except asyncio.TimeoutError:
            limit = request.time_limit or self.settings.timeout
            message = f"no complete answer within {limit:g} s"
            return Outcome(Verdict.RETRY, error={"type": "timeout_error", "message": message})
        except aiohttp.ClientError as error:
            message = f"{type(error).__name__}: {error}".rstrip(": ")
            return Outcome(Verdict.RETRY, error={"type": "connection_error", "message": message})
        finally:
            if task is not None:  # over in time, or cut as the answer came: it stands
                self._deadlines.end(task)

    def _timeout(self, request: HttpRequest) -> aiohttp.ClientTimeout:
        """`--timeout` bounds a plain attempt. In a streamed one, no byte for `idle_timeout`
        is a stall (pings count as bytes), and the whole may take the provider's time limit,
        which allows for long generations."""
        if not request.stream:
            return self._plain_timeout
        return aiohttp.ClientTimeout(
            total=request.time_limit or self.settings.timeout,
            sock_connect=CONNECT_TIMEOUT,
            sock_read=self.settings.idle_timeout,
        )

    def _succeeded(self, job: Job, outcome: Outcome) -> None:
        usage = outcome.usage or Usage()
        estimate = job.estimate
        model = estimate.model if estimate else str(job.params.get("model"))
        self.stats.charge(model, usage)
        self._record_job(job, outcome)
        if estimate is not None:
            self.estimator.learn(estimate, usage)

    def _retry_or_give_up(self, job: Job, outcome: Outcome) -> None:
        if self._stopping:
            return  # no final record: a rerun sends it again
        failures = self._failures(job, outcome)
        if failures > self._allowed(outcome):
            log.warning(
                "%s: giving up after %d attempts (%s)",
                job.custom_id,
                job.attempts,
                outcome.error_type,
            )
            self._record_job(job, outcome)
            return
        delay = backoff_delay(
            failures, outcome.retry_after, self.rng, base=self.settings.retry_base_delay
        )
        log.debug(
            "%s: attempt %d failed (%s), retrying in %.2f s",
            job.custom_id,
            job.attempts,
            outcome.error_type,
            delay,
        )
        self.stats.retries += 1
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def ready() -> None:
            self._timers.discard(handle)  # type: ignore[arg-type]
            self._ready.append(job)
            self._changed.set()

        handle = loop.call_later(delay, ready)
        self._timers.add(handle)

    @staticmethod
    def _failures(job: Job, outcome: Outcome) -> int:
        """Failed attempts of the kind `outcome` is: 429s and other failures count apart."""
        return job.rate_limited if outcome.rate_limited else job.attempts - job.rate_limited

    def _allowed(self, outcome: Outcome) -> int:
        """Failures of that kind a job may have and still be sent again."""
        if outcome.rate_limited:  # the server's pacing meeting ours: not the request's fault
            return self.settings.max_rate_limit_retries
        return self.settings.max_attempts - 1

    def _fatal(self, outcome: Outcome) -> None:
        if self._stopping:
            return
        error = outcome.error or {}
        self.stats.fatal = (
            f"HTTP {outcome.status} {error.get('type', 'error')}: {error.get('message', '')}"
        )
        log.error("stopping: %s", self.stats.fatal)
        self._stop()

    def request_stop(self, reason: str) -> None:
        """Graceful stop: admit nothing more, let in-flight requests finish and be written.

        When the run is already stopping (a fatal answer, a write failure, an earlier
        signal), stop waiting for the requests in flight instead: they are abandoned."""
        if self._stopping:
            self.stats.hurried = self.stats.hurried or reason
            self._hurry.set()
            return
        self.stats.interrupted = reason
        self._stop()

    def _stop(self) -> None:
        self._stopping = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._dispatcher is not None:
            self._dispatcher.cancel()

    async def _finish_in_flight(self, grace: float | None) -> None:
        """Let in-flight attempts finish (within `grace` seconds when stopping, and only
        until `request_stop` asks to hurry)."""
        if not self._tasks:
            return
        everything = asyncio.gather(*self._tasks, return_exceptions=True)
        hurry = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait({everything, hurry}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        self.stats.abandoned = len(pending)
        await asyncio.gather(everything, hurry, return_exceptions=True)

    @property
    def stopping(self) -> bool:
        """The run admits nothing more: a signal, a fatal answer or a write failure."""
        return self._stopping

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def _record_job(
        self, job: Job, outcome: Outcome | None = None, error: dict[str, Any] | None = None
    ) -> None:
        job.final = True
        self._record(
            Result(
                job.custom_id,
                job.line_no,
                message=outcome.message if outcome else None,
                error=outcome.error if outcome and outcome.message is None else error,
                metadata=job.metadata,
                request=job.request,
                request_id=outcome.request_id if outcome else None,
                attempts=job.attempts,
                fingerprint=job.fingerprint,
            )
        )

    def _record(self, result: Result) -> None:
        """Write a final result; one the output refuses is remembered and stops the run."""
        try:
            self.writer.write(result)
        except Exception as error:
            self._unwritten(result, error)
            return
        if result.message is not None:  # succeeded
            self.stats.succeeded += 1
        else:
            kind = result.error_type
            self.stats.errored[kind] = self.stats.errored.get(kind, 0) + 1

    def _unwritten(self, result: Result, error: Exception) -> None:
        stats = self.stats
        stats.unwritten.append(result.custom_id)
        if stats.write_error is not None:
            log.debug("%s: not written either (%s)", result.custom_id, error)
            return
        if isinstance(error, WriteFailed):
            stats.write_error = str(error)
            stats.broken_pipe = error.broken_pipe
            others = len(self._tasks) - (asyncio.current_task() in self._tasks)
            log.error(
                "%s Stopping: nothing new is sent; the requests in flight (%d) are finished "
                "and written if the output takes them.",
                error,
                others,
            )
        else:  # a bug of ours: keep its traceback
            stats.write_error = f"internal error while writing: {type(error).__name__}: {error}"
            log.error("internal error while writing %s", result.custom_id, exc_info=error)
        self._stop()


@dataclass(slots=True)
class _ClassQueue:
    """The jobs of one rate-limit class waiting for admission, and their admitter."""

    name: str
    limiter: RateLimiter
    ready: deque[Job] = field(default_factory=deque)  # retries and jobs let go by the cache
    fresh: deque[Job] = field(default_factory=deque)  # new input
    admitter: asyncio.Task[None] | None = None


class _Slots(Generic[Work]):
    """Requests in flight at most: a semaphore whose free slot is taken without a
    coroutine, first come first served among those that waited. A waiter waits with its
    work in hand, so that whoever finishes first may take the work on with its own slot."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[tuple[asyncio.Future[bool], Work]] = deque()

    @property
    def has_free(self) -> bool:
        return self.free > 0 and not self._waiters

    def take(self) -> bool:
        """Take a slot now if one is free and nobody waits for it."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def wait(self, work: Work) -> bool:
        """Wait for a slot with `work`: True when a holder of a slot took the work on
        (`pass_on`), False when a slot given back is now the waiter's (`give`)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((waiter, work))
        try:
            return await waiter
        except asyncio.CancelledError:
            if not waiter.done():
                self._waiters.remove((waiter, work))
            elif not waiter.cancelled() and not waiter.result():
                self.give()  # handed over as this was cancelled: pass it on
            raise

    def give(self) -> None:
        """Give a slot back: to the first waiter, else free."""
        while self._waiters:
            waiter, _ = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)
                return
        self.free += 1

    def pass_on(self) -> Work | None:
        """The first waiter's work, for the caller to do with the slot it holds (its
        waiter is told so); None when nobody waits."""
        while self._waiters:
            waiter, work = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return work
        return None


class _Deadlines:
    """Plain attempts in flight, each to be cut `seconds` after it started. A timer per
    attempt costs the event loop more than the rest of the attempt's bookkeeping, so one
    sweep, while any are in flight, cuts those overdue a little after their time: within
    a quarter of `seconds`, and at most a second."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._every = min(1.0, seconds / 4)
        # Task -> deadline; one duration for all, so the earliest deadlines come first.
        self._running: dict[asyncio.Task[Any], float] = {}
        self._cut: set[asyncio.Task[Any]] = set()
        self._sweep: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[Any]) -> None:
        loop = task.get_loop()
        self._running[task] = loop.time() + self.seconds
        if self._sweep is None:
            self._sweep = loop.call_later(self._every, self._cut_overdue, loop)

    def end(self, task: asyncio.Task[Any]) -> bool:
        """The attempt of `task` is over; True when the sweep cut it (its cancellation,
        if it had not been delivered yet, is withdrawn)."""
        if self._running.pop(task, None) is not None:
            return False  # in time
        if task not in self._cut:
            return False
        self._cut.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+ counts cancellations
        if uncancel is not None and task.cancelling():
            uncancel()
        return True

    def _cut_overdue(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        now = loop.time()
        overdue = []
        for task, deadline in self._running.items():
            if deadline > now:
                break
            overdue.append(task)
        for task in overdue:
            del self._running[task]
            self._cut.add(task)
            task.cancel()
        if self._running:
            self._sweep = loop.call_later(self._every, self._cut_overdue, loop)


@dataclass(slots=True)
class _Waiting:
    """What the class queues hold: the dispatcher reads ahead only while there is room,
    and once they are full, goes on when a quarter has been admitted, not at each job."""

    jobs: int = 0
    size: int = 0  # bytes of their lines
    full: bool = False

    @property
    def has_room(self) -> bool:
        return self.jobs < LOOKAHEAD_JOBS and self.size < LOOKAHEAD_BYTES

    def add(self, job: Job) -> None:
        self.jobs += 1
        self.size += job.size
        if not self.has_room:
            self.full = True

    def remove(self, job: Job) -> bool:
        """Take `job` out; True when the dispatcher, held up by a full look-ahead, may go on."""
        self.jobs -= 1
        self.size -= job.size
        if (
            self.full
            and self.jobs <= LOOKAHEAD_JOBS * 3 // 4
            and self.size <= LOOKAHEAD_BYTES * 3 // 4
        ):
            self.full = False
            return True
        return False


def _by_class(by_key: dict[str, Limits], provider: Provider) -> dict[str, Limits]:
    """The limits file's entries by rate-limit class (an entry may name a model)."""
    return {provider.model(key).limit_class: limits for key, limits in by_key.items()}


def _internal_error(error: BaseException) -> dict[str, Any]:
    return {"type": "internal_error", "message": f"internal error: {type(error).__name__}: {error}"}


def _bad_line_error(item: BadLine) -> dict[str, Any]:
    return {"type": "invalid_request_error", "message": item.message, "code": item.code}


async def feed_file(engine: Engine, path: str) -> None:
    """Producer: read `path` (or stdin for `-`) into the engine, batch by batch,
    leaving out what earlier runs already finished. A line whose id has a result that
    answered another request is not sent either: it is counted in `stats.changed`
    (a file's changed lines are found before the run; stdin's only as they come)."""
    reader = JobReader(engine.provider.validate, fingerprints=True)
    finished = engine.finished
    with open_input(path) as handle:
        async for lines in line_batches(handle):
            for raw in lines:
                item = reader.feed(raw)
                if item is None:
                    continue
                earlier = (
                    finished.earlier(item.custom_id, item.fingerprint)
                    if finished is not None
                    else Earlier.NOTHING
                )
                if earlier is Earlier.ANSWERED:
                    engine.stats.skipped += 1
                elif earlier is Earlier.CHANGED:
                    engine.stats.changed.append(item.custom_id)
                elif not engine.offer(item):
                    await engine.put(item)
