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
   input — and for it waits for a free in-flight slot, then for the `RateLimiter` to
   admit the job's estimated cost. Being one coroutine it admits strictly in order, and
   it sleeps whenever nothing can happen: it never polls. A job whose cached prompt
   prefix another request is warming is parked instead (`caching.PrefixGroups`) and
   comes back once the prefix is warm.
3. Each admitted attempt runs as its own task: it sends the request, classifies the
   answer through the provider, settles the reservation to the usage reported, feeds
   the server's rate-limit headers back to the limiter, and either writes the final
   result or schedules a retry with back-off. A fatal answer (bad key, spend cap) stops
   admission and ends the run quickly.
The run ends when the input is exhausted and nothing is in flight or waiting to retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from apiproc.caching import PrefixGroups
from apiproc.clock import Clock, MonotonicClock
from apiproc.jobs import BadLine, Job, JobReader, line_batches, open_input
from apiproc.limiter import (
    NOTHING,
    AttemptReport,
    Cost,
    RateLimiter,
    RequestTooLarge,
    Reservation,
)
from apiproc.pricing import Bill, PriceOf
from apiproc.providers.base import HttpRequest, Outcome, Provider, Usage, Verdict
from apiproc.results import Finished, Result, ResultWriter
from apiproc.retry import backoff_delay
from apiproc.settings import Settings
from apiproc.tokens import TokenEstimator

log = logging.getLogger("apiproc")

INPUT_QUEUE_SIZE = 1024
CONNECT_TIMEOUT = 30.0


@dataclass(slots=True)
class RunStats:
    """What happened in one run, for the summary and the exit status."""

    succeeded: int = 0
    errored: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    usage: Usage = field(default_factory=Usage)
    bills: dict[str, Bill] = field(default_factory=dict)  # cost by model, priced per answer
    started: float = 0.0
    finished: float = 0.0
    fatal: str | None = None
    interrupted: str | None = None  # the signal that stopped the run
    skipped: int = 0  # already final in the output from earlier runs
    abandoned: int = 0  # in flight when the grace period ran out
    # model -> (learned input ratio to cl100k, responses learned from)
    estimates: dict[str, tuple[float, int]] = field(default_factory=dict)
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
    def done(self) -> int:
        return self.succeeded + self.errored_total

    @property
    def errored_total(self) -> int:
        return sum(self.errored.values())

    @property
    def elapsed(self) -> float:
        return max(0.0, (self.finished or time.monotonic()) - self.started)


class Engine:
    def __init__(
        self,
        settings: Settings,
        provider: Provider,
        writer: ResultWriter,
        limiter: RateLimiter | None = None,
        estimator: TokenEstimator | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        finished: Finished | None = None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.writer = writer
        self.clock = clock or MonotonicClock()
        self.limiter = limiter or RateLimiter(
            settings.limits, clock=self.clock, ramp=settings.ramp, discover=True
        )
        self.estimator = estimator or TokenEstimator(
            settings.output_accounting, prior=lambda model: provider.model(model).token_ratio
        )
        self.rng = rng or random.Random()
        self.stats = RunStats(
            price_of=lambda model: provider.model(model).price,
            prices_as_of=provider.prices_as_of,
        )
        self.finished = finished
        self._queue: asyncio.Queue[Job | BadLine] = asyncio.Queue(INPUT_QUEUE_SIZE)
        self._ready: deque[Job] = deque()
        self._changed = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._input_done = False
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None
        self._dispatcher: asyncio.Task[None] | None = None
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
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout, sock_connect=CONNECT_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=self.settings.max_concurrency, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self.provider.session_headers
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
        if not producer.cancelled() and producer.exception() is not None:
            raise producer.exception()  # type: ignore[misc]
        return self.stats

    async def put(self, item: Job | BadLine) -> None:
        await self._queue.put(item)
        self._changed.set()

    async def _produce(self, produce: Callable[[Engine], Any]) -> None:
        try:
            await produce(self)
        finally:
            self._input_done = True
            self._changed.set()

    async def _dispatch(self) -> None:
        while not self._stopping:
            item = await self._next()
            if item is None:
                return
            if isinstance(item, BadLine):
                self._record(
                    Result(
                        item.custom_id,
                        item.line_no,
                        error=_bad_line_error(item),
                        metadata=item.metadata,
                    )
                )
                continue
            if self.cache.park(item):
                continue  # given back through _release once its prefix is warm
            await self._admit(item)

    async def _next(self) -> Job | BadLine | None:
        """A ready retry, else the next input item; None when everything is done."""
        while True:
            if self._ready:
                return self._ready.popleft()
            if not self._queue.empty() and not self.cache.full:
                return self._queue.get_nowait()
            idle = not self._tasks and not self._timers
            if idle and self.cache.release_all():
                continue  # parked, but nothing in flight is warming their prefix
            if self._input_done and idle:
                return None
            self._changed.clear()
            await self._changed.wait()

    async def _admit(self, job: Job) -> None:
        cost = self._cost(job)
        await self._slots.acquire()
        try:
            reservation = await self.limiter.acquire(cost)
        except RequestTooLarge as error:
            self._slots.release()
            self.cache.answered(job)
            self._record(
                _result(job, error={"type": "invalid_request_error", "message": f"request {error}"})
            )
            return
        except BaseException:
            self._slots.release()
            raise
        job.attempts += 1
        self.stats.attempts += 1
        task = asyncio.create_task(self._attempt(job, reservation))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _release(self, jobs: list[Job]) -> None:
        self._ready.extend(jobs)
        self._changed.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        self._changed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("internal error in a request task", exc_info=task.exception())

    def _cost(self, job: Job) -> Cost:
        if job.estimate is None:
            job.estimate = self.estimator.estimate(job.params)
        cost = Cost(
            requests=1,
            input_tokens=job.estimate.input_tokens,
            output_tokens=job.estimate.output_tokens,
        )
        return self.cache.cost(job, cost)

    # ---- one attempt -------------------------------------------------------------------

    async def _attempt(self, job: Job, reservation: Reservation) -> None:
        try:
            outcome = await self._send(job, reservation)
        except Exception as error:  # a bug of ours: keep its traceback, never lose the job
            log.exception("internal error while sending %s", job.custom_id)
            message = f"internal error: {type(error).__name__}: {error}"
            outcome = Outcome(
                Verdict.PERMANENT, error={"type": "internal_error", "message": message}
            )
        self.cache.answered(job, outcome)
        self.limiter.finish(reservation, self._report(job, outcome))
        if outcome.verdict is Verdict.SUCCESS:
            self._succeeded(job, outcome)
        elif outcome.verdict is Verdict.FATAL:
            self._fatal(outcome)
        elif outcome.verdict is Verdict.RETRY:
            self.stats.rate_limited += outcome.rate_limited
            self._retry_or_give_up(job, outcome)
        else:
            self._record(_result(job, outcome))

    def _report(self, job: Job, outcome: Outcome) -> AttemptReport:
        """What the attempt tells the limiter: what the server counted, and its headers."""
        verdict = outcome.verdict
        if verdict is Verdict.SUCCESS:
            used: Cost | None = self._counted(job, outcome.usage or Usage())
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
        )

    def _counted(self, job: Job, usage: Usage) -> Cost:
        """The usage as the rate limits count it."""
        counted_input = usage.input_tokens + usage.cache_creation_input_tokens
        if self.provider.model(job.params["model"]).cache_reads_count:
            counted_input += usage.cache_read_input_tokens
        return Cost(requests=1, input_tokens=counted_input, output_tokens=usage.output_tokens)

    async def _send(self, job: Job, reservation: Reservation) -> Outcome:
        """One attempt on the wire. A streamed answer is read as it arrives: its usage is
        charged as reported, and a silence longer than the idle timeout cuts it short."""
        assert self._session is not None
        request = self.provider.request(job.params)
        try:
            async with self._session.post(
                request.url,
                data=request.body,
                headers=request.headers or None,
                timeout=self._stream_timeout(request) if request.stream else None,
            ) as response:
                decoder = self.provider.decoder(response.status, response.headers)
                if decoder is None:
                    payload = await response.read()
                    return self.provider.classify(response.status, response.headers, payload)
                async for chunk in response.content.iter_any():
                    usage = decoder.feed(chunk)
                    if usage is not None:
                        self.limiter.progress(reservation, self._counted(job, usage))
                return decoder.finish()
        except aiohttp.SocketTimeoutError:
            message = f"no byte for {self.settings.idle_timeout:g} s: the answer stalled"
            return Outcome(Verdict.RETRY, error={"type": "timeout_error", "message": message})
        except asyncio.TimeoutError:
            limit = request.time_limit or self.settings.timeout
            message = f"no complete answer within {limit:g} s"
            return Outcome(Verdict.RETRY, error={"type": "timeout_error", "message": message})
        except aiohttp.ClientError as error:
            message = f"{type(error).__name__}: {error}".rstrip(": ")
            return Outcome(Verdict.RETRY, error={"type": "connection_error", "message": message})

    def _stream_timeout(self, request: HttpRequest) -> aiohttp.ClientTimeout:
        """A streamed attempt: no byte for `idle_timeout` is a stall (pings count as bytes);
        the whole may take the provider's time limit, which allows for long generations."""
        return aiohttp.ClientTimeout(
            total=request.time_limit or self.settings.timeout,
            sock_connect=CONNECT_TIMEOUT,
            sock_read=self.settings.idle_timeout,
        )

    def _succeeded(self, job: Job, outcome: Outcome) -> None:
        usage = outcome.usage or Usage()
        assert job.estimate is not None
        self.estimator.learn(job.estimate, usage)
        self.stats.usage.add(usage)
        self.stats.charge(job.estimate.model, usage)
        self._record(_result(job, outcome))

    def _retry_or_give_up(self, job: Job, outcome: Outcome) -> None:
        if self._stopping:
            return  # no final record: a rerun sends it again
        if job.attempts >= self.settings.max_attempts:
            log.warning(
                "%s: giving up after %d attempts (%s)",
                job.custom_id,
                job.attempts,
                outcome.error_type,
            )
            self._record(_result(job, outcome))
            return
        delay = backoff_delay(
            job.attempts, outcome.retry_after, self.rng, base=self.settings.retry_base_delay
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
        """Graceful stop: admit nothing more, let in-flight requests finish and be written."""
        if self._stopping:
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
        """Let in-flight attempts finish (within `grace` seconds when stopping)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        self.stats.abandoned = len(pending)
        if pending:
            await asyncio.wait(pending)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def _record(self, result: Result) -> None:
        self.writer.write(result)
        if result.succeeded:
            self.stats.succeeded += 1
        else:
            kind = result.error_type
            self.stats.errored[kind] = self.stats.errored.get(kind, 0) + 1


def _result(
    job: Job, outcome: Outcome | None = None, error: dict[str, Any] | None = None
) -> Result:
    return Result(
        custom_id=job.custom_id,
        line_no=job.line_no,
        message=outcome.message if outcome else None,
        error=outcome.error if outcome and outcome.message is None else error,
        metadata=job.metadata,
        params=job.params,
        request_id=outcome.request_id if outcome else None,
        attempts=job.attempts,
    )


def _bad_line_error(item: BadLine) -> dict[str, Any]:
    return {"type": "invalid_request_error", "message": item.message, "code": item.code}


async def feed_file(engine: Engine, path: str) -> None:
    """Producer: read `path` (or stdin for `-`) into the engine, batch by batch,
    leaving out what earlier runs already finished."""
    reader = JobReader(engine.provider.validate)
    finished = engine.finished
    with open_input(path) as handle:
        async for lines in line_batches(handle):
            for raw in lines:
                item = reader.feed(raw)
                if item is None:
                    continue
                if finished is not None and _already_final(item, finished):
                    engine.stats.skipped += 1
                    continue
                await engine.put(item)


def _already_final(item: Job | BadLine, finished: Finished) -> bool:
    params = item.params if isinstance(item, Job) else None
    return (item.custom_id, params) in finished
