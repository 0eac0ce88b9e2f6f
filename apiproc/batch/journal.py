"""The batch state file: an append-only journal beside the output, replayed on every start.

    journal = Journal.open(state_path(output_path))      # locked; torn tail repaired
    seq = journal.intend(chunk, purpose="new", at=time.time())   # before the create call
    journal.created(seq, batch_id, created_at)
    journal.state.live()                                  # batches whose results are unwritten

Why a journal. A batch job runs for hours and is paid for once it is submitted, so the
one thing that must survive a crash, `kill -9` or Ctrl-C is what was submitted. Every
step is one JSON line, written and fsync'd before the step it announces is taken:

- `start`: the input's identity and the batch endpoint, once;
- `intent`: a batch about to be created, with the requests it holds (spans of input lines
  with their byte offsets and earlier attempts), their count, size and a digest of their
  lines; where they came from (new input, or the pool of requests to send again);
- `created` / `not_created`: the batch id, or the proof that no batch was made;
- `status`: a batch's processing status when it changes;
- `written`: its results are in the output (which was then so many bytes long), and
  which requests go back to the pool;
- `online` / `online_done`: requests handed to the online path instead;
- `primed`: the prompt-cache priming was planned (how many requests prime it).

Replaying the lines rebuilds `JournalState`: where the first pass over the input stands,
the pool, the batches and what is known of each. A line cut short by a crash is removed
on open, as the output's torn tail is. The file is locked while a run uses it, so two runs
never submit the same requests.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from apiproc.errors import OutputError, ResumeMismatch
from apiproc.jsonio import dumps_line, loads
from apiproc.resume import repair_torn_tail

FORMAT = 1
# Purposes of a batch.
NEW = "new"
RETRY = "retry"
PRIME = "prime"
# What is known of an intent.
INTENDED = "intended"
CREATED = "created"
NOT_CREATED = "not_created"


IDENTITY_HEAD_BYTES = 1 << 16


def input_identity(requests_path: str, head_bytes: int = IDENTITY_HEAD_BYTES) -> dict[str, Any]:
    """The input's path and first bytes, hashed: lines appended later do not change it
    (the byte offsets the journal keeps would not survive an edit before them)."""
    with open(requests_path, "rb") as handle:
        head = handle.read(head_bytes)
    return {
        "input": os.path.abspath(requests_path),
        "head_bytes": len(head),
        "head_sha256": hashlib.sha256(head).hexdigest(),
    }


@dataclass(slots=True, frozen=True)
class Span:
    """`lines` consecutive input lines from line number `line` at byte `offset`; every
    request in them has had `attempts` attempts already."""

    line: int
    offset: int
    lines: int
    attempts: int = 0

    def as_list(self) -> list[int]:
        return [self.line, self.offset, self.lines, self.attempts]

    @classmethod
    def of(cls, value: list[int]) -> Span:
        line, offset, lines, attempts = value
        return cls(int(line), int(offset), int(lines), int(attempts))


@dataclass(slots=True)
class Intent:
    """One batch, from the intent to create it to its results written."""

    seq: int
    purpose: str
    spans: list[Span]
    count: int
    size: int
    digest: str
    at: float  # wall clock when the create call was about to be made
    state: str = INTENDED
    batch_id: str | None = None
    created_at: float | None = None
    status: str | None = None  # the provider's processing status, last seen
    counts: dict[str, int] = field(default_factory=dict)
    cancel_requested: bool = False
    written: bool = False

    @property
    def live(self) -> bool:
        """Created and its results not yet written: it may still hold requests."""
        return self.state == CREATED and not self.written


@dataclass(slots=True)
class JournalState:
    """What the journal's lines add up to."""

    identity: dict[str, Any] = field(default_factory=dict)
    endpoint: str = ""
    api: str = "anthropic"  # the --api whose batch service holds the batches
    intents: dict[int, Intent] = field(default_factory=dict)
    # The first pass over the input has planned everything before this line and byte.
    next_line: int = 1
    next_offset: int = 0
    # Requests waiting to be sent again (or planned but never sent), by first line.
    pool: dict[int, Span] = field(default_factory=dict)
    online: dict[int, list[Span]] = field(default_factory=dict)  # handed to the online path
    primed: bool = False
    primer_lines: set[int] = field(default_factory=set)
    output_bytes: int = 0  # the output was at least this long once results were written

    @property
    def next_seq(self) -> int:
        return max(self.intents, default=0) + 1

    def live(self) -> list[Intent]:
        return [intent for intent in self.intents.values() if intent.live]

    def unresolved(self) -> list[Intent]:
        """Intents whose create call may or may not have made a batch."""
        return [intent for intent in self.intents.values() if intent.state == INTENDED]

    def claimed_ids(self) -> set[str]:
        return {intent.batch_id for intent in self.intents.values() if intent.batch_id}

    def priming(self) -> bool:
        """A priming batch is planned or running: the first pass waits for it."""
        return any(
            intent.purpose == PRIME and intent.state != NOT_CREATED and not intent.written
            for intent in self.intents.values()
        )

    def settled(self) -> bool:
        """Nothing is live, unresolved, pooled or handed to the online path."""
        return not (self.live() or self.unresolved() or self.pool or self.online)

    def by_batch_id(self, batch_id: str) -> Intent | None:
        for intent in self.intents.values():
            if intent.batch_id == batch_id:
                return intent
        return None

    # ---- replay

    def apply(self, record: dict[str, Any]) -> None:
        """One journal line's effect; unknown events are ignored (a newer writer's)."""
        handler = getattr(self, f"_on_{record.get('event')}", None)
        if handler is not None:
            handler(record)

    def _on_start(self, record: dict[str, Any]) -> None:
        self.identity = record.get("input") or {}
        self.endpoint = str(record.get("endpoint", ""))
        self.api = str(record.get("api") or "anthropic")

    def _on_intent(self, record: dict[str, Any]) -> None:
        spans = [Span.of(value) for value in record["spans"]]
        intent = Intent(
            seq=int(record["seq"]),
            purpose=str(record["purpose"]),
            spans=spans,
            count=int(record["count"]),
            size=int(record["size"]),
            digest=str(record["digest"]),
            at=float(record["at"]),
        )
        self.intents[intent.seq] = intent
        for key in record.get("pool") or ():
            self.pool.pop(int(key), None)
        if record.get("rest"):
            rest = Span.of(record["rest"])
            self.pool[rest.line] = rest
        if record.get("new"):
            offset, line = record["new"]
            if offset > self.next_offset:
                self.next_offset, self.next_line = int(offset), int(line)
        if intent.purpose == PRIME:
            self.primer_lines.update(_lines_of(spans))

    def _on_created(self, record: dict[str, Any]) -> None:
        intent = self.intents[int(record["seq"])]
        intent.state = CREATED
        intent.batch_id = str(record["batch_id"])
        intent.created_at = record.get("created_at")

    def _on_not_created(self, record: dict[str, Any]) -> None:
        intent = self.intents[int(record["seq"])]
        intent.state = NOT_CREATED
        for span in intent.spans:  # back to the pool: they were never sent
            self.pool[span.line] = span

    def _on_status(self, record: dict[str, Any]) -> None:
        intent = self.intents[int(record["seq"])]
        intent.status = record.get("status")
        intent.counts = dict(record.get("counts") or {})

    def _on_cancel(self, record: dict[str, Any]) -> None:
        self.intents[int(record["seq"])].cancel_requested = True

    def _on_written(self, record: dict[str, Any]) -> None:
        intent = self.intents[int(record["seq"])]
        intent.written = True
        self.output_bytes = max(self.output_bytes, int(record.get("output_bytes") or 0))
        for value in record.get("retry") or ():
            span = Span.of(value)
            self.pool[span.line] = span

    def _on_online(self, record: dict[str, Any]) -> None:
        spans = [Span.of(value) for value in record["spans"]]
        for span in spans:
            self.pool.pop(span.line, None)
        self.online[int(record["id"])] = spans

    def _on_online_done(self, record: dict[str, Any]) -> None:
        self.online.pop(int(record["id"]), None)

    def _on_primed(self, record: dict[str, Any]) -> None:
        self.primed = True


def _lines_of(spans: list[Span]) -> set[int]:
    return {span.line + k for span in spans for k in range(span.lines)}


class Journal:
    """The state file, opened for appending and locked against a second run."""

    def __init__(self, path: str, fd: int, state: JournalState, repaired: int) -> None:
        self.path = path
        self.state = state
        self.repaired_bytes = repaired
        self._fd: int | None = fd

    @classmethod
    def open(cls, path: str) -> Journal:
        """Lock, repair a torn last line, replay; a missing file starts empty."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise OutputError(
                f"Cannot open the batch state file {path}: {error.strerror}."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(
                f"Another apiproc run is using {path}: wait for it to finish, or stop it first."
            ) from None
        repaired = repair_torn_tail(path)
        return cls(path, fd, read_state(path), repaired)

    def append(self, record: dict[str, Any]) -> None:
        """Write one step and force it to disk before the step is taken."""
        assert self._fd is not None, "append() after close()"
        data = dumps_line(record)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.state.apply(record)

    def restart(self, keep_as: str | None = None) -> None:
        """Start an empty journal in the same (still locked) file; keep a copy if asked."""
        assert self._fd is not None, "restart() after close()"
        if keep_as is not None:
            shutil.copyfile(self.path, keep_as)
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self.state = JournalState()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- steps

    def start(
        self, identity: dict[str, Any], endpoint: str, at: float, api: str = "anthropic"
    ) -> None:
        self.append(
            {
                "event": "start",
                "format": FORMAT,
                "input": identity,
                "endpoint": endpoint,
                "api": api,
                "at": at,
            }
        )

    def intend(
        self,
        *,
        purpose: str,
        spans: list[Span],
        count: int,
        size: int,
        digest: str,
        at: float,
        pool: list[int],
        rest: Span | None,
        new: tuple[int, int] | None,
    ) -> int:
        seq = self.state.next_seq
        self.append(
            {
                "event": "intent",
                "seq": seq,
                "purpose": purpose,
                "count": count,
                "size": size,
                "digest": digest,
                "at": at,
                "spans": [span.as_list() for span in spans],
                "pool": pool,
                "rest": rest.as_list() if rest else None,
                "new": list(new) if new else None,
            }
        )
        return seq

    def created(self, seq: int, batch_id: str, created_at: float, adopted: bool = False) -> None:
        record = {"event": "created", "seq": seq, "batch_id": batch_id, "created_at": created_at}
        if adopted:
            record["adopted"] = True
        self.append(record)

    def not_created(self, seq: int, reason: str) -> None:
        self.append({"event": "not_created", "seq": seq, "reason": reason})

    def status(self, seq: int, status: str, counts: dict[str, int]) -> None:
        intent = self.state.intents[seq]
        if intent.status != status or intent.counts != counts:
            self.append({"event": "status", "seq": seq, "status": status, "counts": counts})

    def cancel(self, seq: int) -> None:
        self.append({"event": "cancel", "seq": seq})

    def written(
        self, seq: int, retry: list[Span], tally: dict[str, int], output_bytes: int
    ) -> None:
        self.append(
            {
                "event": "written",
                "seq": seq,
                "retry": [span.as_list() for span in retry],
                "tally": tally,
                "output_bytes": output_bytes,
            }
        )

    def online(self, spans: list[Span]) -> int:
        key = max(self.state.online, default=0) + 1
        self.append({"event": "online", "id": key, "spans": [span.as_list() for span in spans]})
        return key

    def online_done(self, key: int) -> None:
        self.append({"event": "online_done", "id": key})

    def primed(self, requests: int) -> None:
        self.append({"event": "primed", "requests": requests})


def read_state(path: str) -> JournalState:
    """Replay a state file without locking it (for `apiproc batch status`)."""
    state = JournalState()
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return state
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                break  # a torn last line: the step it announced was never taken
            try:
                record = loads(raw)
                state.apply(record)
            except (ValueError, KeyError, TypeError) as error:
                raise ResumeMismatch(
                    f"The batch state file {path} is damaged at line {number} ({error}); "
                    "keep it for the batches it names, and start a new output."
                ) from None
    return state
