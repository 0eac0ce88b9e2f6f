"""Prompt caching done right: warm each shared prefix once, then read it in parallel.

    groups = PrefixGroups(clock, estimator, release=requeue, facts=provider.model)
    if not groups.park(job):            # False: send it now, as its prefix's warmer or a reader
        cost = groups.cost(job, cost)   # a warm prefix is left out where reads are not counted
        groups.answered(job, outcome)   # after the attempt: warm, refresh or re-open the prefix

Why. The jobs of a dataset usually share a long system prompt or document marked with
`cache_control`. The API makes a cached prefix readable only once the response that
writes it has begun, so a client that fires fifty such requests at once gets fifty misses
and pays the cache-write premium fifty times. Here the first request of a new prefix goes
alone; the rest of its group are parked (the dispatcher goes on with other jobs) until it
has answered, and then go in parallel and read the cache.

A job's group is its cached prefix: everything up to its last breakpoint (a block with
`cache_control` in tools, system or messages, or the last block when the request has the
top-level `cache_control`), serialised canonically without the markers, with the model,
and hashed. When that breakpoint marks the prompt's final block and there is an earlier
one, the earlier one decides: the final block is the job's own, the earlier prefix is
what jobs share. Jobs without a breakpoint have no group and never wait.

A group is warm from its warmer's answer until the cache's lifetime (5 minutes, or 1 hour
with `ttl: "1h"`) after the last request that wrote or read it was let go, less a margin;
every hit refreshes it, and a lapsed group is warmed again.

Bounds, so that warm-up can delay a group a little but never strand or starve anything:
- parked jobs wait for one in-flight warmer at a time; when it fails, its group is let go
  at once (one of them warms next), and after MAX_FAILED_WARMUPS failures in a row the
  group goes without warm-up;
- they wait at most `patience` seconds for a slow warmer: by then its response has most
  likely begun (a long generation), so the cache is written; a non-streaming client
  cannot see that moment itself;
- at most `max_parked` jobs wait in memory; past that, `full` tells the engine to read no
  further input until a warm-up ends;
- an answer showing that nothing was cached (the prefix is shorter than the model's
  minimum, which also gets one warning) ends warm-up for the group;
- at most MAX_GROUPS groups are remembered; forgetting an idle one costs at most one
  extra warm-up.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, NamedTuple

from apiproc.clock import Clock
from apiproc.jobs import Job
from apiproc.jsonio import dumps_canonical
from apiproc.limiter import Cost
from apiproc.providers.base import ModelFacts, Outcome, Usage, Verdict
from apiproc.tokens import TokenEstimator

log = logging.getLogger("apiproc")

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
DEFAULT_TTL = "5m"
# A request let go as a reader may still wait in the limiter: count the cache lapsed early.
REWARM_MARGIN = 0.1
WARMUP_PATIENCE = 30.0
MAX_PARKED = 2_048
MAX_FAILED_WARMUPS = 3
MAX_GROUPS = 10_000
MAX_WARNINGS = 10

Wake = Callable[[float, Callable[[], None]], object]


# ---- what a request caches --------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class CachedPrefix:
    """The part of a request that jobs share in the cache: the prompt up to a breakpoint."""

    key: bytes  # hash of the model and the canonical prefix, markers left out
    model: str
    ttl_seconds: float
    request: dict[str, Any]  # the prefix alone, shaped as a request, to count its tokens
    whole: bool  # the breakpoint is on the last block: the prefix is the whole prompt


class _Block(NamedTuple):
    section: str  # "tools", "system" or "messages"
    message: int  # index of its message, for "messages"
    block: Any


def cached_prefix(params: dict[str, Any]) -> CachedPrefix | None:
    """The prefix `params` asks the API to cache, or None when it marks no breakpoint."""
    blocks = list(_prompt_blocks(params))
    found = _shared_breakpoint(blocks, params.get("cache_control"))
    if found is None:
        return None
    position, ttl = found
    request = _prefix_request(params, blocks[: position + 1])
    key = hashlib.sha256(dumps_canonical(request)).digest()
    model = str(params.get("model", ""))
    return CachedPrefix(key, model, TTL_SECONDS[ttl], request, position == len(blocks) - 1)


def with_system_breakpoint(params: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of `params` with the end of its system prompt marked for caching; None when
    the request marks anything itself or has no system prompt. `params` is left as read."""
    if _marker(params) is not None or any(_marker(b.block) for b in _prompt_blocks(params)):
        return None
    system = params.get("system")
    if isinstance(system, str) and system:
        system = [{"type": "text", "text": system}]
    if not isinstance(system, list) or not system or not isinstance(system[-1], dict):
        return None
    marked = [*system[:-1], {**system[-1], "cache_control": {"type": "ephemeral"}}]
    return {**params, "system": marked}


def _prompt_blocks(params: dict[str, Any]) -> Iterator[_Block]:
    """Every block in the order the cache covers them: tools, system, messages."""
    for tool in params.get("tools") or ():
        yield _Block("tools", 0, tool)
    system = params.get("system")
    if isinstance(system, str) and system:
        yield _Block("system", 0, {"type": "text", "text": system})
    elif isinstance(system, list):
        for block in system:
            yield _Block("system", 0, block)
    for index, message in enumerate(params.get("messages") or ()):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield _Block("messages", index, {"type": "text", "text": content})
        elif isinstance(content, list):
            for block in content:
                yield _Block("messages", index, block)


def _marker(block: Any) -> dict[str, Any] | None:
    control = block.get("cache_control") if isinstance(block, dict) else None
    return control if isinstance(control, dict) else None


def _shared_breakpoint(blocks: list[_Block], top: Any) -> tuple[int, str] | None:
    """Position and ttl of the breakpoint that jobs share: the last one, unless it marks
    the prompt's final block (usually the job's own question, kept for a later turn) and
    an earlier one exists. The top-level marker marks the final block."""
    marks = [(i, _ttl(m)) for i, b in enumerate(blocks) if (m := _marker(b.block)) is not None]
    final = len(blocks) - 1
    if isinstance(top, dict) and blocks and (not marks or marks[-1][0] != final):
        marks.append((final, _ttl(top)))
    if len(marks) > 1 and marks[-1][0] == final:
        return marks[-2]
    return marks[-1] if marks else None


def _ttl(marker: dict[str, Any]) -> str:
    ttl = marker.get("ttl")
    return ttl if ttl in TTL_SECONDS else DEFAULT_TTL


def _prefix_request(params: dict[str, Any], blocks: list[_Block]) -> dict[str, Any]:
    request: dict[str, Any] = {"model": params.get("model")}
    messages: list[dict[str, Any]] = []
    current = -1
    for section, index, block in blocks:
        if _marker(block) is not None:
            block = {key: value for key, value in block.items() if key != "cache_control"}
        if section != "messages":
            request.setdefault(section, []).append(block)
            continue
        if index != current:
            current = index
            messages.append({"role": params["messages"][index].get("role"), "content": []})
        messages[-1]["content"].append(block)
    if messages:
        request["messages"] = messages
        for name in ("tool_choice", "thinking"):  # changing them invalidates the messages' cache
            if params.get(name) is not None:
                request[name] = params[name]
    return request


# ---- the groups ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Group:
    """The jobs sharing one cached prefix, and what is known of its cache entry."""

    key: bytes
    model: str
    ttl_seconds: float
    raw_tokens: int  # the estimator's raw count of the prefix
    first_id: str  # the first job seen with it, to name it in warnings
    warm_until: float = -math.inf
    warmer: str | None = None  # custom_id of the job writing it now
    warming_since: float = 0.0
    parked: deque[Job] = field(default_factory=deque)
    failures: int = 0  # warm-ups failed in a row
    cacheable: bool = True  # False once an answer showed that nothing was cached

    def warm(self, now: float) -> bool:
        return now < self.warm_until - REWARM_MARGIN * self.ttl_seconds


@dataclass(slots=True)
class _Sent:
    """A job let go by `park`, until its answer."""

    group: _Group
    sent_at: float
    reads: bool  # its prefix was warm when it was let go


class PrefixGroups:
    """Which cached prefixes are warm, and which jobs wait for one to be warmed.

    `release(jobs)` is called with parked jobs when they may go; the caller hands them
    back to `park()`. `wake(delay, callback)` (e.g. the event loop's `call_later`) lets
    parked jobs go after `patience` even if no other event comes. `facts(model)` says
    how long a prefix the model caches and whether its cache reads count toward limits.
    """

    def __init__(
        self,
        clock: Clock,
        estimator: TokenEstimator,
        release: Callable[[list[Job]], None],
        *,
        warmup: bool = True,
        add_breakpoints: bool = False,
        cache_aware: bool = True,
        max_parked: int = MAX_PARKED,
        patience: float = WARMUP_PATIENCE,
        wake: Wake | None = None,
        facts: Callable[[str], ModelFacts] | None = None,
    ) -> None:
        self.clock = clock
        self.estimator = estimator
        self.release = release
        self.warmup = warmup
        self.add_breakpoints = add_breakpoints
        self.cache_aware = cache_aware
        self.max_parked = max_parked
        self.patience = patience
        self.wake = wake
        self.facts = facts or _unknown_model
        self._groups: dict[bytes, _Group] = {}  # least recently used first
        # Jobs let go by `park` until their answer; while empty, `cost` changes nothing.
        self.sent: dict[str, _Sent] = {}
        self._parked = 0
        self._warned: set[bytes] = set()

    @property
    def full(self) -> bool:
        """As many jobs are parked as memory allows: read no more input for now."""
        return self._parked >= self.max_parked

    def park(self, job: Job) -> bool:
        """Park `job` if its prefix is being warmed by another; False means send it now."""
        if self.add_breakpoints and (marked := with_system_breakpoint(job.params)) is not None:
            job.send_instead(marked)
        elif job.unmarked:
            return False  # no breakpoint, without walking its blocks
        prefix = cached_prefix(job.params)
        if prefix is None:
            return False
        now = self.clock.now()
        group = self._group(prefix, job)
        if group.warmer is not None and now >= group.warming_since + self.patience:
            self._stop_waiting(group)
        reads = group.cacheable and group.warm(now)
        if not reads and self._warms(group):
            if group.warmer is not None:
                self._wait(group, job, now)
                return True
            group.warmer, group.warming_since = job.custom_id, now
            log.debug("%s: warming the prompt cache for its group", job.custom_id)
        self.sent[job.custom_id] = _Sent(group, now, reads)
        return False

    def cost(self, job: Job, cost: Cost) -> Cost:
        """`cost` without the warm prefix, for the models whose cache reads are not counted."""
        sent = self.sent.get(job.custom_id)
        estimate = job.estimate
        if (
            not self.cache_aware
            or sent is None
            or not sent.reads
            or estimate is None
            or estimate.raw_input <= 0
            or self.facts(estimate.model).cache_reads_count
        ):
            return cost
        uncached = max(0, estimate.raw_input - sent.group.raw_tokens)
        input_tokens = math.ceil(cost.input_tokens * uncached / estimate.raw_input)
        return replace(cost, input_tokens=input_tokens)

    def answered(self, job: Job, outcome: Outcome | None = None) -> None:
        """After each attempt of a job `park` let go; None when it was never sent."""
        sent = self.sent.pop(job.custom_id, None)
        if sent is None:
            return
        group = sent.group
        warming = group.warmer == job.custom_id
        if outcome is not None and outcome.verdict is Verdict.SUCCESS:
            self._learn(group, sent, outcome.usage or Usage())
        elif warming and outcome is not None and not outcome.rate_limited:
            group.failures += 1  # a 429 was not processed: it says nothing about the prefix
        if warming:
            group.warmer = None
            self._release(group)

    def release_all(self) -> bool:
        """Let every parked job go; True if there were any. For when nothing is in flight."""
        if not self._parked:
            return False
        waiting = [group for group in self._groups.values() if group.parked]
        for group in waiting:
            group.warmer = None
            self._release(group)
        return bool(waiting)

    # ---- internals ----------------------------------------------------------------------

    def _warms(self, group: _Group) -> bool:
        return self.warmup and group.cacheable and group.failures < MAX_FAILED_WARMUPS

    def _group(self, prefix: CachedPrefix, job: Job) -> _Group:
        group = self._groups.pop(prefix.key, None)
        if group is None:
            raw = self._raw_tokens(prefix, job)
            group = _Group(prefix.key, prefix.model, prefix.ttl_seconds, raw, job.custom_id)
            self._check_length(group)
            self._forget_idle()
        self._groups[prefix.key] = group
        return group

    def _raw_tokens(self, prefix: CachedPrefix, job: Job) -> int:
        if not prefix.whole:
            return self.estimator.count(prefix.request)
        # Such a prefix is often the job's alone: count the prompt once, for its estimate too.
        if job.estimate is None or job.estimate.provisional:
            job.estimate = self.estimator.estimate(job.params, exact=True)
        return job.estimate.raw_input

    def _wait(self, group: _Group, job: Job, now: float) -> None:
        if not group.parked and self.wake is not None:
            deadline = group.warming_since + self.patience
            overdue = partial(self._overdue, group, group.warmer, group.warming_since)
            self.wake(max(0.0, deadline - now), overdue)
        group.parked.append(job)
        self._parked += 1

    def _overdue(self, group: _Group, warmer: str | None, since: float) -> None:
        # The same warm-up still running, not a later one (perhaps by the same job's retry).
        if group.warmer is not None and (group.warmer, group.warming_since) == (warmer, since):
            self._stop_waiting(group)

    def _stop_waiting(self, group: _Group) -> None:
        """The warmer is slow, not stuck before its answer began: count the prefix written."""
        log.debug("%s: slow to answer; its group goes on without waiting", group.warmer)
        group.warm_until = max(group.warm_until, group.warming_since + group.ttl_seconds)
        group.warmer = None
        self._release(group)

    def _learn(self, group: _Group, sent: _Sent, usage: Usage) -> None:
        if usage.cache_creation_input_tokens or usage.cache_read_input_tokens:
            group.warm_until = max(group.warm_until, sent.sent_at + group.ttl_seconds)
            group.failures = 0
        elif group.cacheable:
            group.cacheable = False
            self._warn(group, "the API cached nothing for it, so its requests pay full price")

    def _release(self, group: _Group) -> None:
        if not group.parked:
            return
        jobs = list(group.parked)
        group.parked.clear()
        self._parked -= len(jobs)
        self.release(jobs)

    def _forget_idle(self) -> None:
        excess = len(self._groups) - MAX_GROUPS
        if excess <= 0:
            return
        # Forget a tenth more than needed, so that the scan is rare.
        idle = [key for key, g in self._groups.items() if g.warmer is None and not g.parked]
        for key in idle[: excess + MAX_GROUPS // 10]:
            del self._groups[key]

    def _check_length(self, group: _Group) -> None:
        minimum = self.facts(group.model).min_cacheable_tokens
        estimated = group.raw_tokens * self.estimator.ratio(group.model)
        if minimum is not None and estimated < minimum:
            self._warn(
                group,
                f"is about {estimated:,.0f} tokens, shorter than the {minimum:,} the model "
                "caches at least: the API will silently cache nothing for it",
            )

    def _warn(self, group: _Group, problem: str) -> None:
        if group.key in self._warned or len(self._warned) > MAX_WARNINGS:
            return
        self._warned.add(group.key)
        if len(self._warned) > MAX_WARNINGS:
            log.warning("more cached prefixes cannot be cached; they are not named")
            return
        log.warning(
            "the cached prefix first seen in %s (%s) %s", group.first_id, group.model, problem
        )


def _unknown_model(model: str) -> ModelFacts:
    """Without a provider's word: reads not counted, no known minimum."""
    return ModelFacts(limit_class=model, token_ratio=1.0)
