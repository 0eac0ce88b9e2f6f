"""Server-sent events, read incrementally from the bytes of an HTTP body.

    parser = SseParser()
    for event in parser.feed(b"event: ping\\ndata: {}\\n\\n"):
        event.name, event.data  # "ping", "{}"

The event-stream format of the HTML standard: lines ending in LF, CRLF or CR; `event:`
names the event, `data:` lines join with newlines, a blank line ends the event, a line
starting with `:` is a comment. Chunks may split lines and events anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class ServerSentEvent:
    """One event of a stream: its name and its data lines joined."""

    name: str  # "message" when the event named none, as the standard says
    data: str


class SseParser:
    """Turns chunks of an event stream into whole events."""

    def __init__(self) -> None:
        self._pending = b""
        self._name = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> Iterator[ServerSentEvent]:
        """The events completed by `chunk`, in order."""
        data = self._pending + chunk
        # A CR at the very end may be the first half of a CRLF split between chunks.
        held = b"\r" if data.endswith(b"\r") else b""
        data = data[: len(data) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, rest = data.split(b"\n")
        self._pending = rest + held
        for line in lines:
            event = self._line(line.decode("utf-8", errors="replace"))
            if event is not None:
                yield event

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        name, data = self._name, self._data
        self._name, self._data = "", []
        if not data:
            return None  # the standard dispatches nothing for an event without data
        return ServerSentEvent(name or "message", "\n".join(data))
