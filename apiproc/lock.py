"""One run per output: an exclusive advisory lock on a file beside the output.

    with OutputLock("results.jsonl", owner="apiproc run in.jsonl -o results.jsonl"):
        ...  # no other apiproc run appends to results.jsonl meanwhile

Two runs appending to one output (a cron job that starts while the last one still runs)
would send and pay for every request twice. So a run holds `flock(LOCK_EX)` on
`<output>.apiproc.lock` from before it reads the output back until its last line is
written. The kernel drops the lock when the process ends, however it ends (`kill -9`
too), so a stale lock file never blocks anyone. The file holds the owner's pid and
command line (the key already masked by the caller) for the message of the run that
is turned away, or that waits with `wait=True`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from apiproc.errors import OutputError, OutputInUse

log = logging.getLogger("apiproc")

LOCK_SUFFIX = ".apiproc.lock"


def lock_path(output_path: str) -> str:
    return f"{output_path}{LOCK_SUFFIX}"


class OutputLock:
    """Held from `__enter__` to `__exit__`; raises OutputInUse when another run holds it."""

    def __init__(
        self,
        output_path: str,
        owner: str,
        wait: bool = False,
        on_waiting: Callable[[str], None] | None = None,
    ) -> None:
        self.output_path = output_path
        self.path = lock_path(output_path)
        self.owner = owner
        self.wait = wait
        self.on_waiting = on_waiting
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        while self._fd is None:
            fd = self._open()
            try:
                self._lock(fd)
            except BaseException:
                os.close(fd)
                raise
            if self._still_there(fd):
                self._fd = fd
            else:
                os.close(fd)  # its owner removed it as we waited: lock the new one
        self._write_owner(self._fd)

    def release(self) -> None:
        """Remove the lock file while still holding it, then let go."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # removed by hand: the lock goes with the fd
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def _open(self) -> int:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise OutputError(
                f"Cannot create the lock file {self.path}: {error.strerror}."
            ) from None

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _holder(fd)
        except OSError as error:  # a file system without locks (some network mounts)
            log.warning(
                "cannot lock %s (%s): a second run on this output would not be turned away",
                self.path,
                error.strerror,
            )
            return
        if not self.wait:
            raise OutputInUse(
                f"{self.output_path} is being written by another apiproc run ({holder}). "
                "Wait for it to end, or add --wait to start when it does."
            )
        if self.on_waiting is not None:
            self.on_waiting(holder)
        fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C interrupts it with KeyboardInterrupt

    def _still_there(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _write_owner(self, fd: int) -> None:
        record = json.dumps({"pid": os.getpid(), "command": self.owner}) + "\n"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode(), 0)
        except OSError:
            pass  # the lock holds without it; only the other run's message is poorer


def _holder(fd: int) -> str:
    """`pid 1234: apiproc run ...` from the lock file, as far as it says."""
    try:
        record = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or "pid" not in record:
        return "pid unknown"
    command = record.get("command")
    return f"pid {record['pid']}" + (f": {command}" if command else "")
