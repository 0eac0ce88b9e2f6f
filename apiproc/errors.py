"""The errors a user can cause or meet, under one base they can catch, each with its exit status.

    try:
        run(settings)
    except ApiprocError as error:
        sys.exit(error.exit_status)

Every message is one sentence that says what to do; none of these carries a traceback
to the user. Anything else raised inside apiproc is a bug of ours and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERRORED = 1  # the run finished, some requests are recorded as errored
EXIT_USAGE = 2  # options, input file, output file, resume mismatch, output in use
EXIT_FATAL = 3  # an answer that every request would get: bad key, billing, spend limit
EXIT_UNRECORDED = 4  # results that were paid for could not be written
EXIT_PENDING = 75  # batch mode with --no-wait: batches still run; run the command again later
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away, as a shell expects
EXIT_ON_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


class ApiprocError(Exception):
    """Base of every error apiproc reports to the user without a traceback."""

    exit_status = EXIT_USAGE


class SettingsError(ApiprocError):
    """A setting a user gave (or left out) cannot work."""


class InputError(ApiprocError):
    """The input as a whole cannot be read (missing file, a directory, ...)."""


class OutputError(ApiprocError):
    """The output file cannot be opened for appending."""


class ResumeMismatch(ApiprocError):
    """The existing output was made from a different input, or in another format."""
