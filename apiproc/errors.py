"""The errors a user can cause or meet, under one base they can catch, each with its exit status.

    try:
        run(settings)
    except ApiprocError as error:
        sys.exit(error.exit_status)

Every message is one sentence that says what to do; none of these carries a traceback
to the user. Anything else raised inside apiproc is a bug of ours and keeps its traceback.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_ERRORED = 1  # the run finished, some requests are recorded as errored
EXIT_USAGE = 2  # options, input file, output file, changed requests, output in use
EXIT_FATAL = 3  # an answer that every request would get: bad key, billing, spend limit
EXIT_UNRECORDED = 4  # results that were paid for could not be written, or went missing
EXIT_PENDING = 75  # batch mode with --no-wait: batches still run; run the command again later
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the output's reader went away, as a shell expects
EXIT_ON_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


class ApiprocError(Exception):
    """Base of every error apiproc reports to the user without a traceback."""

    exit_status = EXIT_USAGE


class SettingsError(ApiprocError):
    """A setting a user gave (or left out) cannot work."""


class MissingExtra(SettingsError):
    """An API that needs an optional dependency a plain install leaves out."""

    def __init__(self, api: str, extra: str, library: str) -> None:
        super().__init__(
            f"--api {api} needs {library}, which a plain install leaves out: "
            f"pip install 'apiproc[{extra}]'."
        )


class InputError(ApiprocError):
    """The input as a whole cannot be read (missing file, a directory, ...)."""


class OutputError(ApiprocError):
    """The output file cannot be opened for appending."""


class ResumeMismatch(ApiprocError):
    """The existing output holds other requests under the same ids, or another format."""


class OutputInUse(ApiprocError):
    """Another apiproc run is writing the same output."""


class WriteFailed(OutputError):
    """A result could not be written to the output: disk full, I/O error, broken pipe, ..."""

    def __init__(self, path: str, error: OSError) -> None:
        self.errno = error.errno
        where = "stdout" if path == "-" else path
        if self.broken_pipe:
            message = f"The reader of {where} went away (broken pipe)."
        else:
            message = f"Cannot write to {where}: {error.strerror or error}."
        super().__init__(message)

    @property
    def broken_pipe(self) -> bool:
        return self.errno == errno.EPIPE

    @property
    def exit_status(self) -> int:  # type: ignore[override]
        return EXIT_BROKEN_PIPE if self.broken_pipe else EXIT_UNRECORDED
