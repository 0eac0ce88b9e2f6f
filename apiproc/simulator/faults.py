"""Injected faults: which one (if any) a request gets, and how a dropped connection looks.

    fault = draw_fault(config, chance)  # "429", "529", "500", "502", "drop", "stall",
                                        # "stream_error" or None
    return hang_up(request)  # close the connection without a response

The draw comes from the simulator's seeded generator, so a run with the same seed and the
same order of requests meets the same faults. Most faults come before the answer begins.
For a streamed answer, ``stall`` and ``stream_error`` strike partway through it
(``MIDWAY_FAULTS``), after the 200 and some events have been sent.
"""

from __future__ import annotations

import random

from aiohttp import web

from apiproc.simulator.config import SimulatorConfig

INJECTED_RETRY_AFTER = 1
MIDWAY_FAULTS = frozenset({"stall", "stream_error"})
# The error event the docs show arriving after a 200 (§A.4).
OVERLOADED_EVENT = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

PROXY_502_PAGE = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"""


def draw_fault(config: SimulatorConfig, chance: random.Random) -> str | None:
    """Pick at most one injected fault, before any bucket is charged."""
    c = config
    draw = chance.random()
    edge = 0.0
    for kind, rate in (
        ("429", c.rate_429),
        ("529", c.rate_529),
        ("500", c.rate_500),
        ("502", c.rate_502_html),
        ("drop", c.rate_drop),
        ("stall", c.rate_stall),
        ("stream_error", c.rate_stream_error),
    ):
        edge += rate
        if draw < edge:
            return kind
    return None


def hang_up(request: web.Request) -> web.StreamResponse:
    """Close the connection without a response, as a dropped connection looks to a client."""
    if request.transport is not None:
        request.transport.close()
    # aiohttp finds the transport closed and discards this response quietly.
    return web.Response(status=500)
