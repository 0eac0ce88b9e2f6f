"""Output records and the writer that appends them.

    with ResultWriter("out.jsonl") as writer:
        writer.write(Result(custom_id="a", line_no=1, message={...}, attempts=1))

Every final outcome, whatever produced it (an answer, a permanent error, retries
exhausted, a bad input line), becomes one `Result` and one line in the Message Batches
results shape:

    {"custom_id": "a", "result": {"type": "succeeded", "message": {...}},
     "metadata": {...}, "line": 1, "attempts": 1, "request_id": "req_...",
     "fingerprint": "3f2a..."}
    {"custom_id": "b", "result": {"type": "errored", "error": {"type": "error",
     "error": {"type": "...", "message": "..."}, "request_id": "req_..."}}, ...}

`metadata` appears only when the input line had it; `request_id` when the API gave one;
`fingerprint` is the request's as read (see jobs.py), for resume. A batch request that was
canceled or expired as many times as it may be attempted ends as `{"type": "canceled"}` or
`{"type": "expired"}`, the batch results' own shapes. The `cookbook` format
writes the classic `[request, response, metadata]` arrays instead, with the request as
read from the input (not as apiproc may have changed it), which resume matches.
Each line is written with one `write` on an append-only descriptor, so a line is
never interleaved or half-written by this process. A line the output does not take
whole (disk full, I/O error, broken pipe) raises `WriteFailed`, and what part of it
got out is cut off again; where that cannot be done (a pipe) nothing more is written.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apiproc.errors import OutputError, WriteFailed
from apiproc.jsonio import dumps_line

OUTPUT_FORMATS = ("batch", "cookbook")


@dataclass(slots=True)
class Result:
    """One request's final outcome: either `message` or `error` is set."""

    custom_id: str
    line_no: int
    message: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metadata: Any = None
    request: Any = None  # as read from the input: the cookbook format writes it
    request_id: str | None = None
    attempts: int = 0
    fingerprint: str | None = None
    outcome: str | None = None  # "canceled" or "expired": a batch request never processed

    @property
    def succeeded(self) -> bool:
        return self.message is not None

    @property
    def error_type(self) -> str:
        if self.outcome is not None:
            return self.outcome
        return str((self.error or {}).get("type", "api_error"))


def batch_record(result: Result) -> dict[str, Any]:
    if result.message is not None:
        outcome: dict[str, Any] = {"type": "succeeded", "message": result.message}
    elif result.outcome is not None:
        outcome = {"type": result.outcome}
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
    if result.fingerprint:
        record["fingerprint"] = result.fingerprint
    return record


def cookbook_record(result: Result) -> list[Any]:
    """The classic script's line: [request, response or list of errors, metadata?]."""
    answer: Any = result.message
    if answer is None and result.outcome is not None:
        answer = [result.outcome]
    elif answer is None:
        error = result.error or {}
        answer = [f"{error.get('type', 'error')}: {error.get('message', '')}"]
    record = [result.request, answer]
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
        self._broken: OSError | None = None  # a part of a line is out and stays out

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
        """Append one whole line, or raise WriteFailed and leave no part of it behind."""
        data = dumps_line(self._format(result))
        assert self._fd is not None, "write() before open()"
        if self._broken is not None:
            raise WriteFailed(self.path, self._broken)
        written = 0
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # rare: a pipe or a signal took part of the line
                written += os.write(self._fd, memoryview(data)[written:])
            if self.fsync and self._owns_fd:
                os.fsync(self._fd)
        except OSError as error:
            if written:
                self._take_back(written, error)
            raise WriteFailed(self.path, error) from None

    def _take_back(self, written: int, error: OSError) -> None:
        """Cut the part of a line that got out off the end of the file; where that cannot
        be done, write nothing more: a line appended to a torn one would be lost too."""
        fd = self._fd
        assert fd is not None
        try:
            os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - written)
        except OSError:
            self._broken = error

    def sync(self) -> None:
        """Force what was written to disk (before a step that relies on it is recorded)."""
        if self._fd is not None and self._owns_fd:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None and self._owns_fd:
            os.close(self._fd)
        self._fd = None


def resumable(output_path: str) -> bool:
    """A file a later run can read back (or one not made yet): not stdout, a pipe or a
    device. Only such an output is scanned on resume, locked and given a sidecar."""
    if output_path == "-":
        return False
    try:
        return stat.S_ISREG(os.stat(output_path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def first_few(ids: Sequence[str], count: int = 5) -> str:
    """`a, b, c, d, e and 12 more`: ids named in a message, the rest counted."""
    named = ", ".join(ids[:count])
    rest = len(ids) - count
    return f"{named} and {rest:,} more" if rest > 0 else named
