"""The prompt cache of one simulated organisation, on the event-loop clock (§C).

    cache = PromptCache()
    plan = cache.plan(prompt, spec, now)  # reads, writes and plain input; changes nothing
    cache.refresh(plan, now); cache.store(plan, started_at=now, now=later)

A prefix becomes readable only once the response that writes it begins, so concurrent
requests with one new prefix all pay the write, as the docs warn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from apiproc.simulator.models import ModelSpec
from apiproc.simulator.tokens import Prompt, Segment

CACHE_LOOKBACK_BLOCKS = 20
CACHE_TTL_SECONDS = MappingProxyType({"5m": 300.0, "1h": 3600.0})


@dataclass(slots=True)
class _CacheEntry:
    tokens: int
    ttl_seconds: float
    expires_at: float  # event-loop time


@dataclass(slots=True)
class CachePlan:
    """How one request's prompt splits into cache reads, cache writes and plain input."""

    read_tokens: int = 0
    write_5m: int = 0
    write_1h: int = 0
    input_tokens: int = 0
    hit: bytes | None = None
    writes: list[tuple[bytes, int, str]] = field(default_factory=list)  # (digest, tokens, ttl)

    @property
    def creation_tokens(self) -> int:
        return self.write_5m + self.write_1h


class PromptCache:
    """Prefix cache of one simulated organisation, on the event-loop clock (§C)."""

    def __init__(self) -> None:
        self._entries: dict[bytes, _CacheEntry] = {}
        self._size_after_sweep = 0

    def plan(self, prompt: Prompt, spec: ModelSpec, now: float) -> CachePlan:
        """Split the prompt without changing the cache (the request may still be refused)."""
        segments = prompt.segments
        hit = self._longest_hit(segments, now)
        read = segments[hit].tokens if hit is not None else 0
        start = -1 if hit is None else hit
        eligible = [
            i
            for i, s in enumerate(segments)
            if s.ttl and i > start and s.tokens >= spec.min_cacheable
        ]
        plan = CachePlan(read_tokens=read, hit=segments[hit].digest if hit is not None else None)
        if eligible:
            # Mixed-TTL billing (§C): 1h writes up to the last 1h breakpoint, 5m after it.
            last_1h = max((i for i in eligible if segments[i].ttl == "1h"), default=None)
            one_hour_end = segments[last_1h].tokens if last_1h is not None else read
            plan.write_1h = one_hour_end - read
            plan.write_5m = segments[eligible[-1]].tokens - one_hour_end
            plan.writes = [
                (segments[i].digest, segments[i].tokens, segments[i].ttl or "5m") for i in eligible
            ]
        plan.input_tokens = prompt.total_tokens - read - plan.creation_tokens
        return plan

    def _longest_hit(self, segments: list[Segment], now: float) -> int | None:
        """The furthest live prefix within the lookback window of any breakpoint."""
        candidates: set[int] = set()
        for index, segment in enumerate(segments):
            if segment.ttl:
                candidates.update(range(max(0, index - CACHE_LOOKBACK_BLOCKS + 1), index + 1))
        for index in sorted(candidates, reverse=True):
            entry = self._entries.get(segments[index].digest)
            if entry is not None and entry.expires_at > now:
                return index
        return None

    def refresh(self, plan: CachePlan, now: float) -> None:
        entry = self._entries.get(plan.hit) if plan.hit is not None else None
        if entry is not None:
            entry.expires_at = max(entry.expires_at, now + entry.ttl_seconds)

    def store(self, plan: CachePlan, started_at: float, now: float) -> None:
        """Make the written prefixes readable; their lifetime runs from the request's start."""
        for digest, tokens, ttl in plan.writes:
            ttl_seconds = CACHE_TTL_SECONDS[ttl]
            self._entries[digest] = _CacheEntry(tokens, ttl_seconds, started_at + ttl_seconds)
        if len(self._entries) > 2 * self._size_after_sweep + 1_000:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._entries = {k: e for k, e in self._entries.items() if e.expires_at > now}
        self._size_after_sweep = len(self._entries)
