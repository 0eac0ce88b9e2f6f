"""Server-sent events for ``"stream": true``: the documented events, pings, and cut streams.

    stream = await EventStream.open(request, headers, ping_interval=15.0)
    stream.send("message_start", {"type": "message_start", "message": start})
    await stream.idle(2.5)  # send what is queued, wait, ping after ping_interval of silence
    await stream.close()

A streamed answer is a 200 ``text/event-stream`` (shared/reference/anthropic-api.md §A.4):
``message_start`` (the message with empty content and the input usage), then per content
block ``content_block_start``, ``content_block_delta`` events and ``content_block_stop``,
then ``message_delta`` (stop reason and cumulative usage) and ``message_stop``. ``ping``
events may come anywhere; an error after the 200 arrives as an ``error`` event. Every event
carries its ``event:`` name, which clients such as the official SDK dispatch on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

PING = {"type": "ping"}
# A guess: the API's deltas carry a few tokens each; the docs do not say how many.
TOKENS_PER_DELTA = 5


class EventStream:
    """One streamed answer being written; a write raises ConnectionError once the client
    has gone.

    Events sent together go out in one write when the stream next waits or ends, as they
    would share TCP segments anyway; a stream generated instantly costs one write.
    """

    def __init__(self, request: web.Request, response: web.StreamResponse, ping_interval: float):
        self.request = request
        self.response = response
        self.ping_interval = ping_interval
        self._pending: list[bytes] = []
        self._last_event = asyncio.get_running_loop().time()

    @classmethod
    async def open(
        cls, request: web.Request, headers: Mapping[str, str], ping_interval: float
    ) -> EventStream:
        """Send the 200 and its headers; the events follow."""
        response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        response.headers["cache-control"] = "no-cache"  # a guess: usual for event streams
        await response.prepare(request)
        return cls(request, response, ping_interval)

    def send(self, event: str, data: Mapping[str, Any]) -> None:
        """Queue one event; it goes out at the next wait, flush or close."""
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        self._pending.append(f"event: {event}\ndata: {text}\n\n".encode())
        self._last_event = asyncio.get_running_loop().time()

    async def flush(self) -> None:
        if self._pending:
            chunk, self._pending = b"".join(self._pending), []
            await self.response.write(chunk)

    async def idle(self, seconds: float) -> None:
        """Let ``seconds`` pass, sending a ping whenever the stream was silent for a while."""
        if seconds <= 0:
            return
        await self.flush()
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while True:
            now = loop.time()
            ping_at = self._last_event + self.ping_interval
            if self.ping_interval <= 0 or end <= ping_at:
                if end > now:
                    await asyncio.sleep(end - now)
                return
            await asyncio.sleep(max(0.0, ping_at - now))
            self.send("ping", PING)
            await self.flush()

    async def close(self) -> None:
        await self.flush()
        await self.response.write_eof()

    def hang_up(self) -> None:
        """Cut the connection mid-stream, as a stalled proxy or a reset looks to a client."""
        if self.request.transport is not None:
            self.request.transport.close()


def text_pieces(text: str, tokens: int) -> list[tuple[int, str]]:
    """The answer's text as (tokens, text) deltas whose texts join back to ``text``.

    The simulated text is ``tokens`` one-token words joined by spaces.
    """
    words = text.split(" ") if tokens > 0 else []
    pieces = []
    for start in range(0, len(words), TOKENS_PER_DELTA):
        chunk = words[start : start + TOKENS_PER_DELTA]
        lead = " " if start else ""
        pieces.append((len(chunk), lead + " ".join(chunk)))
    return pieces
