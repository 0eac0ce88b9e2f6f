"""Limit discovery: learn a class's limits from the server before sending in bulk.

    discovery = Discovery(active=True)
    await discovery.turn()          # one probe at a time until the server has told
    discovery.sent()
    verdict = discovery.answered(told=bool(headers), api_answer=True)  # LEARNED, WAIT, FALL_BACK

Without a given request limit nothing says how fast a class may go, so its first
request goes alone and the rate-limit headers of its answer set the pace. Only a real
API answer (a 2xx or 4xx JSON answer) that lacks the headers counts as the server not
telling: a dropped connection, a 5xx or 529 without headers, or a proxy's HTML page
says nothing about limits, so the next request simply probes again. After
`DISCOVERY_ATTEMPTS` real answers without headers the class falls back to
`FALLBACK_LIMITS`; headers that arrive later replace the fallback, upward or downward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType

DISCOVERY_ATTEMPTS = 3
FALLBACK_LIMITS: Mapping[str, float] = MappingProxyType({"requests": 50.0})


class Step(Enum):
    LEARNED = "learned"  # the server told its limits
    WAIT = "wait"  # nothing learned yet: the next request probes again
    FALL_BACK = "fall back"  # the server never tells: use FALLBACK_LIMITS


class Discovery:
    def __init__(self, active: bool) -> None:
        self.active = active
        self.misses = 0  # real API answers without rate-limit headers
        self._probe_out = False
        self._back: asyncio.Future[None] | None = None

    async def turn(self) -> None:
        """Wait until no probe is out (at once when discovery is over)."""
        while self.active and self._probe_out:
            if self._back is None or self._back.done():
                self._back = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._back)

    def sent(self) -> None:
        if self.active:
            self._probe_out = True

    def answered(self, told: bool, api_answer: bool) -> Step:
        """An attempt came back; `told`: it carried rate-limit headers."""
        if not self.active:
            return Step.LEARNED
        self._probe_out = False
        step = Step.LEARNED if told else Step.WAIT
        if not told and api_answer:
            self.misses += 1
            if self.misses >= DISCOVERY_ATTEMPTS:
                step = Step.FALL_BACK
        if step is not Step.WAIT:
            self.active = False
        if self._back is not None and not self._back.done():
            self._back.set_result(None)
        return step
