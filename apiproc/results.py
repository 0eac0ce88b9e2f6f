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
A batch request that was canceled or expired as many times as it may be attempted ends
as `{"type": "canceled"}` or `{"type": "expired"}`, the batch results' own shapes.
The `cookbook` format writes the classic `[request, response, metadata]` arrays instead.
Each line is written with one `write` on an append-only descriptor, so a line is
never interleaved or half-written by this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from apiproc.errors import OutputError, ResumeMismatch
from apiproc.jsonio import dumps_canonical, dumps_line, loads

OUTPUT_FORMATS = ("batch", "cookbook")


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
    return record


def cookbook_record(result: Result) -> list[Any]:
    """The classic script's line: [request, response or list of errors, metadata?]."""
    answer: Any = result.message
    if answer is None and result.outcome is not None:
        answer = [result.outcome]
    elif answer is None:
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

    def sync(self) -> None:
        """Force what was written to disk (before a step that relies on it is recorded)."""
        if self._fd is not None and self._owns_fd:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None and self._owns_fd:
            os.close(self._fd)
        self._fd = None


# ---- resume: what an existing output already holds ------------------------------------


@dataclass(slots=True)
class Finished:
    """What earlier runs already finished, read once from the existing output."""

    ids: set[str]
    # The cookbook format has no ids: its lines are matched by the request they carry.
    requests: dict[str, int]
    repaired_bytes: int = 0
    dropped_errors: int = 0

    def __contains__(self, job: tuple[str, Any]) -> bool:
        custom_id, params = job
        if custom_id in self.ids:
            return True
        key = request_key(params) if self.requests and params is not None else None
        if key is not None and self.requests.get(key, 0) > 0:
            self.requests[key] -= 1
            return True
        return False


def request_key(params: Any) -> str:
    """A stable fingerprint of a request body, to match cookbook lines on resume."""
    return hashlib.blake2b(dumps_canonical(params), digest_size=16).hexdigest()


def repair_torn_tail(path: str) -> int:
    """Cut an incomplete last line (a crash mid-write) off the file; bytes removed.

    Only the torn tail is touched: every complete line stays byte for byte.
    """
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        keep = _end_of_last_complete_line(handle, size)
        handle.truncate(keep)
        return size - keep


def _end_of_last_complete_line(handle: Any, size: int) -> int:
    position = size
    chunk = 1 << 16
    while position > 0:
        start = max(0, position - chunk)
        handle.seek(start)
        block = handle.read(position - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


def scan_finished(path: str, output_format: str, retry_errored: bool) -> Finished:
    """Repair a torn tail, then collect what is final in the output, in one pass.

    With `retry_errored`, errored records are not final: they are removed from the file
    (copied without them to a temporary file, renamed over the output) so that a
    retried request still ends with exactly one line.
    """
    finished = Finished(ids=set(), requests={})
    if path == "-" or not os.path.exists(path):
        return finished
    finished.repaired_bytes = repair_torn_tail(path)
    temporary = f"{path}.rewrite"
    with open(path, "rb") as handle, _maybe_open(temporary, retry_errored) as kept:
        for raw in handle:
            try:
                record = loads(raw)
            except ValueError:
                record = None  # not ours to judge: kept as it is, counts for nothing
            if retry_errored and record is not None and _is_errored(record, output_format):
                finished.dropped_errors += 1
                continue
            if kept is not None:
                kept.write(raw)
            if record is not None:
                _remember(finished, record, output_format)
    if retry_errored:
        _replace_or_discard(temporary, path, finished.dropped_errors > 0)
    return finished


@contextmanager
def _maybe_open(path: str, wanted: bool) -> Iterator[IO[bytes] | None]:
    if not wanted:
        yield None
        return
    with open(path, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def _replace_or_discard(temporary: str, path: str, replace: bool) -> None:
    if replace:
        os.replace(temporary, path)
    else:
        os.remove(temporary)


def _is_errored(record: Any, output_format: str) -> bool:
    if output_format == "cookbook":
        return isinstance(record, list) and len(record) >= 2 and isinstance(record[1], list)
    return isinstance(record, dict) and (record.get("result") or {}).get("type") != "succeeded"


def _remember(finished: Finished, record: Any, output_format: str) -> None:
    if output_format == "cookbook":
        if isinstance(record, list) and record:
            key = request_key(record[0])
            finished.requests[key] = finished.requests.get(key, 0) + 1
    elif isinstance(record, dict) and isinstance(record.get("custom_id"), str):
        finished.ids.add(record["custom_id"])


# ---- which input an output belongs to ----------------------------------------------------

IDENTITY_HEAD_BYTES = 1 << 16


def sidecar_path(output_path: str) -> str:
    return f"{output_path}.apiproc.json"


def input_identity(requests_path: str, head_bytes: int = IDENTITY_HEAD_BYTES) -> dict[str, Any]:
    """The input's first bytes, hashed: lines appended later do not change it."""
    with open(requests_path, "rb") as handle:
        head = handle.read(head_bytes)
    return {
        "input": os.path.abspath(requests_path),
        "head_bytes": len(head),
        "head_sha256": hashlib.sha256(head).hexdigest(),
    }


def check_output_identity(
    requests_path: str, output_path: str, output_format: str, force: bool
) -> None:
    """Refuse to resume into an output made from another input (unless `force`) or in
    another format (its lines would match nothing, and everything would be sent again);
    record both when the output has no record yet."""
    if output_path == "-":
        return
    sidecar = Path(sidecar_path(output_path))
    recorded = _read_record(sidecar)
    written_as = recorded.get("output_format")
    if written_as and written_as != output_format:
        raise ResumeMismatch(
            f"{output_path} was written in the {written_as} format: resume it with "
            f"--output-format {written_as}, or --overwrite to start afresh."
        )
    expected = recorded.get("head_sha256")
    if expected and requests_path != "-" and not force:
        head_bytes = int(recorded.get("head_bytes", 0))
        if input_identity(requests_path, head_bytes)["head_sha256"] != expected:
            raise ResumeMismatch(
                f"{output_path} holds results of another input ({recorded.get('input')}). "
                "Use another output, --overwrite to start it afresh, or --force to add to it."
            )
    if recorded and not force:
        return
    record = input_identity(requests_path) if requests_path != "-" else {}
    record["output_format"] = output_format
    try:
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(json.dumps(record, indent=2) + "\n")
    except OSError as error:
        raise OutputError(f"Cannot write {sidecar}: {error.strerror}.") from None


def _read_record(sidecar: Path) -> dict[str, Any]:
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def start_afresh(output_path: str) -> None:
    """--overwrite: empty the output and forget its input identity."""
    if output_path == "-":
        return
    for path in (output_path, sidecar_path(output_path)):
        if os.path.exists(path):
            os.remove(path)
