"""Input lines to jobs: three line formats, stable ids, validation, bad-line records.

    with open_input("requests.jsonl") as lines:
        for item in read_jobs(lines, check=provider.validate):
            ...  # a Job to send, or a BadLine to record as errored

A line is one JSON object in one of these shapes:
- a request body (of the Messages API, or of the API `--api` names); its top-level
  `metadata` object is passed through to the output and not sent, except
  `metadata.user_id`, which is the API's own field and is sent;
  an optional top-level `custom_id` names the request and is not sent;
- a Message Batches line `{"custom_id": ..., "params": {...}, "metadata": ...}`: `params`
  is sent as is, `metadata` passed through;
- an OpenAI batch line `{"custom_id": ..., "method": "POST", "url": ..., "body": {...}}`:
  `body` is sent.
A line without an id gets `line-<number>`. Blank lines are skipped. The file is read
line by line, never whole. A line is checked for the shape every request needs here, then
by the provider's `check` for what its API would certainly refuse. Every bad line carries a
reason code (`INVALID_JSON_LINE`, ...) in the spirit of the batch APIs' own input
validation, the same in every mode.

A request's fingerprint is a short hash of it as read (key order and spacing aside),
before apiproc adds anything: resume skips an id only when the fingerprint of its line
matches the one written with its result.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from apiproc.errors import InputError
from apiproc.jsonio import dumps_canonical, loads
from apiproc.tokens import Estimate

MAX_CUSTOM_ID = 64
READ_HINT = 1 << 16
FINGERPRINT_BYTES = 8  # 16 hex characters
# Reason codes of bad lines.
INVALID_JSON_LINE = "invalid_json_line"
MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
INVALID_REQUEST = "invalid_request"
INVALID_CUSTOM_ID = "invalid_custom_id"
DUPLICATE_CUSTOM_ID = "duplicate_custom_id"
STREAMING_UNSUPPORTED = "streaming_unsupported"
REQUEST_TOO_LARGE = "request_too_large"

# The provider's own check of a well-shaped request: None, or why its API would refuse it.
Check = Callable[[dict[str, Any]], "str | None"]


@dataclass(slots=True)
class Job:
    """One request to send, and what the pipeline learns about it on the way."""

    custom_id: str
    params: dict[str, Any]
    line_no: int
    metadata: Any = None
    attempts: int = 0
    rate_limited: int = 0  # the attempts answered 429: they do not count toward max attempts
    estimate: Estimate | None = None
    final: bool = False  # its final result was handed to the writer
    fingerprint: str = ""  # of the request as read; set by a JobReader asked for it
    as_read: dict[str, Any] | None = None  # the request as read, once `params` was changed
    # Its line cannot hold a cache breakpoint: no "cache_control" in it, nor any \u escape.
    unmarked: bool = False
    size: int = 0  # bytes of its line: what reading ahead of it holds in memory

    @property
    def request(self) -> dict[str, Any]:
        """The request as read from the input, whatever apiproc sends instead."""
        return self.params if self.as_read is None else self.as_read

    def send_instead(self, params: dict[str, Any]) -> None:
        """Send `params` (a changed copy); the request as read stays for the output."""
        if self.as_read is None:
            self.as_read = self.params
        self.params = params


@dataclass(slots=True)
class BadLine:
    """A line that cannot become a request; it is recorded as errored, the run goes on."""

    custom_id: str
    line_no: int
    reason: str
    metadata: Any = None
    text: str = ""  # the line as read
    fingerprint: str = ""
    code: str = INVALID_REQUEST

    @property
    def request(self) -> str:
        return self.text

    @property
    def message(self) -> str:
        return f"line {self.line_no}: {self.reason}"


@contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """The requests file as binary lines; `-` is standard input."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"The requests file {path} does not exist.") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory; give the requests JSONL file.") from None
    except PermissionError:
        raise InputError(f"The requests file {path} cannot be read (permission denied).") from None
    with handle:
        yield handle


def request_fingerprint(request: Any) -> str:
    """16 hex characters that change whenever the request does (key order aside)."""
    return hashlib.blake2b(dumps_canonical(request), digest_size=FINGERPRINT_BYTES).hexdigest()


class JobReader:
    """Numbers lines and keeps ids unique across a whole input, fed one line at a time.

    Ids a line gives itself are kept in a set; ids derived from line numbers
    (`line-<n>`) cost one bit each, so memory stays flat for files without ids. With
    `fingerprints`, every item gets the fingerprint of its request as read.
    """

    def __init__(self, check: Check | None = None, fingerprints: bool = False) -> None:
        self.line_no = 0
        self._check = check
        self.fingerprints = fingerprints
        self._given: set[str] = set()
        self._derived = bytearray()

    def feed(self, raw: bytes) -> Job | BadLine | None:
        """The next physical line; None for a blank one."""
        self.line_no = line_no = self.line_no + 1
        if not raw or raw.isspace():  # blank; isspace stops at the first other byte
            return None
        own = f"line-{line_no}"
        item = _parse(raw, line_no, own, self._check)
        custom_id = item.custom_id
        # This line's derived id can only have been taken by a line that gave it itself.
        if custom_id in self._given or (custom_id != own and self._taken(custom_id)):
            item = BadLine(
                custom_id=self._free_id(),
                line_no=line_no,
                reason=f"duplicate custom_id {custom_id!r}: ids must be unique in a file",
                metadata=item.metadata,
                text=_text(raw),
                code=DUPLICATE_CUSTOM_ID,
            )
            custom_id = item.custom_id
        if custom_id == own:
            index = line_no >> 3
            if index >= len(self._derived):
                self._derived.extend(bytes(index + 1 - len(self._derived) + 4096))
            self._derived[index] |= 1 << (line_no & 7)
        else:
            self._given.add(custom_id)
        if self.fingerprints:
            item.fingerprint = request_fingerprint(item.request)
        return item

    def _free_id(self) -> str:
        """An id for a duplicate's error record that no other line has."""
        candidate = f"line-{self.line_no}"
        suffix = 0
        while self._taken(candidate):
            suffix += 1
            candidate = f"line-{self.line_no}-duplicate-{suffix}"
        return candidate

    def _taken(self, custom_id: str) -> bool:
        """Whether an earlier line has `custom_id`."""
        if custom_id in self._given:
            return True
        line_no = _derived_line(custom_id)
        return line_no is not None and self._has_bit(line_no)

    def _has_bit(self, line_no: int) -> bool:
        index = line_no >> 3
        return index < len(self._derived) and bool(self._derived[index] & (1 << (line_no & 7)))


def _derived_line(custom_id: str) -> int | None:
    """N for an id of the form `line-N`, else None."""
    if custom_id.startswith("line-") and custom_id[5:].isdigit():
        return int(custom_id[5:])
    return None


def read_jobs(lines: Iterable[bytes], check: Check | None = None) -> Iterator[Job | BadLine]:
    """Turn raw lines into jobs and bad lines, in file order."""
    reader = JobReader(check)
    for raw in lines:
        item = reader.feed(raw)
        if item is not None:
            yield item


async def line_batches(handle: IO[bytes]) -> AsyncIterator[list[bytes]]:
    """The input's lines in batches, without blocking the event loop on a slow pipe.

    A regular file is read directly (a disk read does not stall for long); a pipe or
    terminal is read in a worker thread, which returns whatever has arrived so far.
    """
    if stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        while lines := handle.readlines(READ_HINT):
            yield lines
            await asyncio.sleep(0)
        return
    loop = asyncio.get_running_loop()
    tail = b""
    while chunk := await loop.run_in_executor(None, os.read, handle.fileno(), READ_HINT):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        if lines:
            yield lines
    if tail:
        yield [tail]


def parse_line(raw: bytes, line_no: int, check: Check | None = None) -> Job | BadLine:
    """One input line to a Job, or a BadLine saying what is wrong with it."""
    return _parse(raw, line_no, f"line-{line_no}", check)


def _parse(raw: bytes, line_no: int, derived: str, check: Check | None) -> Job | BadLine:
    """`parse_line`, given the id the line gets when it names none (`derived`)."""
    try:
        data = loads(raw)
    except ValueError as error:
        reason = f"not valid JSON ({_short(error)})"
        return BadLine(derived, line_no, reason, text=_text(raw), code=INVALID_JSON_LINE)
    if not isinstance(data, dict):
        return BadLine(
            derived, line_no, "not a JSON object", text=_text(raw), code=INVALID_JSON_LINE
        )
    if "custom_id" in data or "params" in data or "body" in data or "metadata" in data:
        custom_id, params, metadata, sent_metadata, problem = _parts(data, derived)
        if problem:
            return BadLine(derived, line_no, problem, metadata, _text(raw), code=INVALID_CUSTOM_ID)
        if not isinstance(params, dict):
            return BadLine(custom_id, line_no, "params must be a JSON object", metadata, _text(raw))
    else:  # a bare request, the usual line: the line's own object is the body
        custom_id, params, metadata, sent_metadata = derived, data, None, None
    problem = validate_params(params) or (check(params) if check is not None else None)
    if problem:
        return BadLine(
            custom_id, line_no, problem, metadata, _text(raw), code=problem_code(problem)
        )
    if sent_metadata is not None:
        params["metadata"] = sent_metadata
    # `find`, not `in`: `in` first tries the needle as an integer, which costs an exception.
    unmarked = raw.find(b"cache_control") < 0 and raw.find(b"\\u") < 0
    return Job(custom_id, params, line_no, metadata, unmarked=unmarked, size=len(raw))


def _parts(
    data: dict[str, Any], derived: str
) -> tuple[str, Any, Any, dict[str, Any] | None, str | None]:
    """A line's id, request, metadata, the metadata it sends, and what is wrong with its id."""
    custom_id, problem = _custom_id(data, derived)
    if "params" in data:
        return custom_id, data["params"], data.get("metadata"), None, problem
    if "body" in data and ("method" in data or "url" in data):
        return custom_id, data["body"], data.get("metadata"), None, problem
    # The line's own object becomes the body: nothing else holds it.
    metadata = data.pop("metadata", None)
    data.pop("custom_id", None)
    return custom_id, data, metadata, _sent_metadata(metadata), problem


def validate_params(params: dict[str, Any]) -> str | None:
    """The reason `params` lacks what every API's request has (a model), or None; the rest
    is for the provider's check."""
    model = params.get("model")
    if model is None:
        return "model: Field required"
    if not isinstance(model, str) or not model:
        return "model: must be a non-empty string"
    return None


def problem_code(problem: str) -> str:
    """The reason code of a problem `validate_params` or a provider's check found."""
    # Our own messages follow the API's pydantic wording: "<field>: Field required".
    return MISSING_REQUIRED_PARAMETER if problem.endswith("Field required") else INVALID_REQUEST


def _custom_id(data: dict[str, Any], derived: str) -> tuple[str, str | None]:
    value = data.get("custom_id")
    if value is None:
        return derived, None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return derived, "custom_id must be a string"
    value = str(value)
    if not value or len(value) > MAX_CUSTOM_ID:
        return derived, f"custom_id must have 1 to {MAX_CUSTOM_ID} characters"
    return value, None


def _sent_metadata(metadata: Any) -> dict[str, Any] | None:
    """The part of a bare line's metadata that is the API's own: `user_id`."""
    if isinstance(metadata, dict) and "user_id" in metadata:
        return {"user_id": metadata["user_id"]}
    return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").strip()


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:120]


def rereadable(path: str) -> bool:
    """A regular file, which can be read twice; not stdin, a pipe or a device."""
    if path == "-":
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def count_lines(path: str) -> int:
    """Lines in a file, by counting newlines in large binary chunks (fast, no parsing)."""
    count = 0
    last = b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")
