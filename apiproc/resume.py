"""Resume: what an existing output already holds, and whether the input still asks for it.

    finished = scan_output("out.jsonl", "batch", resend=None)    # repairs a torn tail
    changed = changed_requests("in.jsonl", finished)              # ids whose line changed
    finished.earlier(job.custom_id, job.fingerprint)               # ANSWERED: skip it

A batch-format line carries the fingerprint of the request it answers (see jobs.py), so
an id is skipped only when its line still asks the very same thing: a regenerated input
whose `line-5` is now another request is found before anything is sent. Lines written
before fingerprints existed are matched by id alone. The cookbook format has no ids; its
lines hold the request as read, and are matched by that request's fingerprint.

Memory stays bounded by the output: one fingerprint per id in it, never the input.
`<output>.apiproc.json` records the output's format (resuming in another format would
match nothing and send everything again) and the input it was first made from.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

from apiproc.errors import OutputError, ResumeMismatch
from apiproc.jobs import Check, JobReader, open_input, request_fingerprint
from apiproc.jsonio import loads

log = logging.getLogger("apiproc")

Resend = Callable[[str], bool]  # error type -> send the request again


class Earlier(Enum):
    """What earlier runs left in the output for one request."""

    NOTHING = "nothing"  # no result yet: send it
    ANSWERED = "answered"  # a result of this very request: skip it
    CHANGED = "changed"  # a result under its id that answered another request


@dataclass(slots=True)
class Finished:
    """What earlier runs already finished, read once from the existing output."""

    output_format: str = "batch"
    # batch: custom_id -> fingerprint written with its result (None: an older line)
    ids: dict[str, str | None] = field(default_factory=dict)
    # cookbook: fingerprint of the request a line holds -> lines holding it
    requests: dict[str, int] = field(default_factory=dict)
    repaired_bytes: int = 0
    dropped_errors: int = 0
    unfingerprinted: int = 0  # batch lines written before fingerprints

    def earlier(self, custom_id: str, fingerprint: str) -> Earlier:
        if self.output_format == "cookbook":
            left = self.requests.get(fingerprint, 0)
            if not left:
                return Earlier.NOTHING
            self.requests[fingerprint] = left - 1  # each line answers one request
            return Earlier.ANSWERED
        if custom_id not in self.ids:
            return Earlier.NOTHING
        written = self.ids[custom_id]
        return Earlier.ANSWERED if written in (None, fingerprint) else Earlier.CHANGED

    @property
    def fingerprinted(self) -> bool:
        return len(self.ids) > self.unfingerprinted

    def forget(self, ids: Iterable[str]) -> None:
        for custom_id in ids:
            self.ids.pop(custom_id, None)


def scan_output(path: str, output_format: str, resend: Resend | None = None) -> Finished:
    """Repair a torn tail, then collect what is final in the output, in one pass.

    Errored records whose error type `resend` accepts are not final: they are removed
    from the file (copied without them to a temporary file, renamed over the output) so
    that a request sent again still ends with exactly one line.
    """
    finished = Finished(output_format)
    if not os.path.exists(path):
        return finished
    finished.repaired_bytes = repair_torn_tail(path)
    temporary = f"{path}.rewrite"
    with open(path, "rb") as handle, _maybe_open(temporary, resend is not None) as kept:
        for raw in handle:
            try:
                record = loads(raw)
            except ValueError:
                record = None  # not ours to judge: kept as it is, counts for nothing
            error_type = _error_type(record, output_format)
            if resend is not None and error_type is not None and resend(error_type):
                finished.dropped_errors += 1
                continue
            if kept is not None:
                kept.write(raw)
            if record is not None:
                _remember(finished, record)
    if resend is not None:
        _replace_or_discard(temporary, path, finished.dropped_errors > 0)
    return finished


def changed_requests(
    requests_path: str, finished: Finished, check: Check | None = None
) -> list[str]:
    """Ids whose line in the input differs from the request their result answered: one
    pass over the input, before anything is sent, reading lines as the run will (`check`
    is the provider's). Only batch lines carry fingerprints."""
    if finished.output_format != "batch" or not finished.fingerprinted:
        return []
    changed = []
    reader = JobReader(check, fingerprints=True)
    with open_input(requests_path) as handle:
        for raw in handle:
            item = reader.feed(raw)
            if item is None:
                continue
            if finished.earlier(item.custom_id, item.fingerprint) is Earlier.CHANGED:
                changed.append(item.custom_id)
    return changed


def drop_results(path: str, ids: set[str]) -> int:
    """Remove the batch lines of `ids` from the output (temporary file, then rename)."""
    dropped = 0
    temporary = f"{path}.rewrite"
    with open(path, "rb") as handle, _maybe_open(temporary, True) as kept:
        assert kept is not None
        for raw in handle:
            try:
                record = loads(raw)
            except ValueError:
                record = None
            if isinstance(record, dict) and record.get("custom_id") in ids:
                dropped += 1
                continue
            kept.write(raw)
    _replace_or_discard(temporary, path, dropped > 0)
    return dropped


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


def _error_type(record: Any, output_format: str) -> str | None:
    """The error type of an errored record; None for a success (or not a record)."""
    if output_format == "cookbook":
        if not (isinstance(record, list) and len(record) >= 2 and isinstance(record[1], list)):
            return None
        first = record[1][0] if record[1] and isinstance(record[1][0], str) else ""
        return first.split(":", 1)[0] or "unknown"
    if not isinstance(record, dict) or not isinstance(record.get("result"), dict):
        return None
    result = record["result"]
    if result.get("type") == "succeeded":
        return None
    if result.get("type") in ("canceled", "expired"):  # a batch request never processed
        return str(result["type"])
    error = (result.get("error") or {}).get("error") or {}
    return str(error.get("type") or "unknown") if isinstance(error, dict) else "unknown"


def _remember(finished: Finished, record: Any) -> None:
    if finished.output_format == "cookbook":
        if isinstance(record, list) and record:
            key = request_fingerprint(record[0])
            finished.requests[key] = finished.requests.get(key, 0) + 1
    elif isinstance(record, dict) and isinstance(record.get("custom_id"), str):
        fingerprint = record.get("fingerprint")
        if not isinstance(fingerprint, str):
            fingerprint = None
            finished.unfingerprinted += 1
        finished.ids[record["custom_id"]] = fingerprint


# ---- the sidecar: format and first input ------------------------------------------------


def sidecar_path(output_path: str) -> str:
    return f"{output_path}.apiproc.json"


def check_output_identity(
    requests_path: str, output_path: str, output_format: str, fresh: bool = False
) -> None:
    """Refuse to resume in another format (its lines would match nothing, and everything
    would be sent again); record the format and the input when the output has no record,
    or holds no line yet (`fresh`)."""
    sidecar = Path(sidecar_path(output_path))
    recorded = {} if fresh else _read_record(sidecar)
    written_as = recorded.get("output_format")
    if written_as and written_as != output_format:
        raise ResumeMismatch(
            f"{output_path} was written in the {written_as} format: resume it with "
            f"--output-format {written_as}, or --overwrite to start afresh."
        )
    source = "-" if requests_path == "-" else os.path.abspath(requests_path)
    first = recorded.get("input")
    if first and first != source and "-" not in (first, source):
        log.warning(
            "%s was started from %s; this run reads %s (results are matched by id and request)",
            output_path,
            first,
            source,
        )
    if written_as:
        return
    try:
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        record = {"input": source, "output_format": output_format}
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
    """--overwrite: empty the output and forget its sidecar."""
    for path in (output_path, sidecar_path(output_path)):
        if os.path.exists(path):
            os.remove(path)
