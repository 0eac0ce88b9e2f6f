"""Output records and the writer that appends them.

    with ResultWriter("out.jsonl") as writer:
        writer.write(Result(custom_id="a", line_no=1, message={...}, attempts=1))

Every final outcome, whatever produced it (an answer, a permanent error, retries
exhausted, a bad input line), becomes one `Result` and one line in the Message Batches
results shape:

    {"custom_id": "a", "result": {"type": "succeeded", "message": {...}},
     "metadata": {...}, "line": 1, "attempts": 1, "request_id": "req_..."}
    {"custom_id": "b", "result": {"type": "errored", "error": {"type": "error",
     "error": {"type": "...", "message": "..."}, "request_id": "req_..."}}, ...}

`metadata` appears only when the input line had it; `request_id` when the API gave one.
The `cookbook` format writes the classic `[request, response, metadata]` arrays instead.
Each line is written with one `write` on an append-only descriptor, so a line is
never interleaved or half-written by this process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apiproc.jsonio import dumps_line

OUTPUT_FORMATS = ("batch", "cookbook")


class OutputError(Exception):
    """The output file cannot be opened for appending."""


@dataclass(slots=True)
class Result:
    """One request's final outcome: either `message` or `error` is set."""

    custom_id: str
    line_no: int
    message: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metadata: Any = None
    params: Any = None
    request_id: str | None = None
    attempts: int = 0

    @property
    def succeeded(self) -> bool:
        return self.message is not None

    @property
    def error_type(self) -> str:
        return str((self.error or {}).get("type", "api_error"))


def batch_record(result: Result) -> dict[str, Any]:
    if result.message is not None:
        outcome: dict[str, Any] = {"type": "succeeded", "message": result.message}
    else:
        outcome = {
            "type": "errored",
            "error": {"type": "error", "error": result.error, "request_id": result.request_id},
        }
    record: dict[str, Any] = {"custom_id": result.custom_id, "result": outcome}
    if result.metadata is not None:
        record["metadata"] = result.metadata
    record["line"] = result.line_no
    record["attempts"] = result.attempts
    if result.request_id is not None:
        record["request_id"] = result.request_id
    return record


def cookbook_record(result: Result) -> list[Any]:
    """The classic script's line: [request, response or list of errors, metadata?]."""
    answer: Any = result.message
    if answer is None:
        error = result.error or {}
        answer = [f"{error.get('type', 'error')}: {error.get('message', '')}"]
    record = [result.params, answer]
    if result.metadata is not None:
        record.append(result.metadata)
    return record


class ResultWriter:
    """Appends one JSON line per result to a file, or to stdout for `-`."""

    def __init__(self, path: str, output_format: str = "batch", fsync: bool = False) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}")
        self.path = path
        self.fsync = fsync
        self._format = cookbook_record if output_format == "cookbook" else batch_record
        self._fd: int | None = None
        self._owns_fd = path != "-"
        self.lines_written = 0

    def __enter__(self) -> ResultWriter:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        if not self._owns_fd:
            self._fd = sys.stdout.fileno()
            return
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise OutputError(
                f"Cannot write the output file {self.path}: {error.strerror}."
            ) from None

    def write(self, result: Result) -> None:
        data = dumps_line(self._format(result))
        assert self._fd is not None, "write() before open()"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync and self._owns_fd:
            os.fsync(self._fd)
        self.lines_written += 1

    def close(self) -> None:
        if self._fd is not None and self._owns_fd:
            os.close(self._fd)
        self._fd = None
