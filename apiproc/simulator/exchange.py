"""One request while the simulator answers it, and the ids the simulated APIs hand out.

    exchange = simulator.begin(request, counted=True)
    return simulator.respond(exchange, 200, payload, headers={"x-request-id": ...})

Every endpoint module answers through the same `Exchange`, so the traffic record
(`SimulatorStats`, `SeenRequest`) is kept the same way whichever API is simulated.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import web

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str, length: int) -> str:
    """`prefix` and `length` random letters and digits, as the APIs' ids look."""
    value = secrets.randbits(6 * length)
    chars = []
    for _ in range(length):
        value, digit = divmod(value, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return prefix + "".join(chars)


@dataclass(slots=True)
class Exchange:
    """One request while it is being answered."""

    request: web.Request
    received: float  # wall clock
    request_id: str
    counted: bool  # part of SimulatorStats (a generation endpoint)
    body: dict[str, Any] | None = None
    pool: Any = None  # the rate pool whose headers the answer carries
