"""What the `apiproc` commands share: option spelling, the key, errors, logs, exit statuses.

    @option("--max-attempts", type=int)    # also accepted as --max_attempts
    key = api_key_or_exit(options)         # one sentence and exit status 2 when there is none
    sys.exit(run_batches(settings, Display(), Reporter(sys.stderr), resume_command()))

`apiproc.cli` (run, estimate, simulate, the classic flags) and `apiproc.cli_batch`
(`apiproc batch ...`) both build on these; they live apart from both so that neither
command module has to import the other.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from apiproc import runner
from apiproc.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_ERRORED,
    EXIT_FATAL,
    EXIT_OK,
    EXIT_ON_SIGNAL,
    EXIT_PENDING,
    EXIT_UNRECORDED,
    EXIT_USAGE,
    ApiprocError,
    SettingsError,
)
from apiproc.redact import install_redaction, redact, redact_arguments
from apiproc.report import Reporter
from apiproc.settings import Settings, resolve_api_key

EXIT_INTERRUPTED = EXIT_ON_SIGNAL["SIGINT"]


def option(*names: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An option spelled both with hyphens and with the classic underscores."""
    spelled = list(names)
    for name in names:
        if name.startswith("--") and "-" in name[2:] and "/" not in name:
            spelled.append("--" + name[2:].replace("-", "_"))
    return click.option(*spelled, **kwargs)


def api_key_or_exit(options: dict[str, Any]) -> str:
    """The key from the options, the environment or .env; a clear exit when there is none."""
    try:
        return resolve_api_key(
            options["api_key"],
            simulate=options.get("simulate", False),
            api=options.get("api", "anthropic"),
        )
    except SettingsError as error:
        usage_error(str(error))


def usage_error(message: str) -> NoReturn:
    """A mistake the person can fix: one sentence on stderr, exit status 2."""
    Reporter(sys.stderr).error(message)
    sys.exit(EXIT_USAGE)


def refused(settings: Settings, reporter: Reporter) -> bool:
    """Whether the settings cannot run, said in one sentence that never shows the key."""
    try:
        settings.validate()
    except SettingsError as error:
        reporter.error(redact(str(error), settings.api_key))
        return True
    return False


def log_to_stderr(level: int, api_key: str) -> None:
    """Send log lines from `level` up to stderr, with the key never shown."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_redaction(api_key)


@dataclass(slots=True, frozen=True)
class Display:
    """How the run talks to the person: log level, progress cadence, quietness."""

    logging_level: int = logging.WARNING
    progress_every: float = 10.0
    quiet: bool = False
    summary_json: str | None = None


def waiting_for(settings: Settings, reporter: Reporter) -> Callable[[str], None]:
    """What to say while another run (`holder`) still writes the output."""

    def waiting(holder: str) -> None:
        reporter.line(f"Waiting for the run writing {settings.output_path} to end ({holder}).")

    return waiting


def resume_command() -> str:
    """The command line that started this run, to print for resuming it."""
    program = Path(sys.argv[0]).name
    head = ["apiproc"] if program in ("__main__.py", "apiproc") else ["python", sys.argv[0]]
    return shlex.join(head + redact_arguments(sys.argv[1:]))


def run_batches(
    settings: Settings,
    display: Display,
    reporter: Reporter,
    resume: str,
    mode: str = "run",
) -> int:
    """A batch-mode run (or collect, or cancel): progress per poll, the batch summary."""
    from apiproc.batch.report import BatchDisplay, summary_lines, summary_record

    progress = BatchDisplay(reporter)

    def stopping(name: str, hurried: bool) -> None:
        progress.close()
        reporter.line(
            f"{name}: stopping after the current step; the batches go on at the provider. "
            "Send it again to quit at once."
        )

    try:
        if mode == "run":
            stats = runner.run(
                settings,
                on_stopping=stopping,
                owner=resume,
                on_waiting=waiting_for(settings, reporter),
                batch_display=progress,
            )
        else:
            stats = runner.run_batch_command(
                settings, mode, batch_display=progress, on_stopping=stopping, owner=resume
            )
    except ApiprocError as error:
        progress.close()
        reporter.error(redact(str(error), settings.api_key))
        return error.exit_status
    except KeyboardInterrupt:
        progress.close()
        reporter.error("interrupted; rerun the same command to resume.")
        return EXIT_INTERRUPTED
    progress.close()
    lines = summary_lines(stats, settings.output_path)
    if stats.interrupted or stats.fatal or stats.pending:
        lines.append(f"Resume:    {resume}")
    if stats.live:
        lines.append(f"Cancel:    apiproc batch cancel {shlex.quote(stats.state_path)}")
    reporter.line("\n".join(lines))
    if display.summary_json:
        record = summary_record(stats, settings.output_path)
        Path(display.summary_json).write_text(json.dumps(record, indent=2) + "\n")
    return exit_status(stats)


def exit_status(stats: Any) -> int:
    """The status from what the run did; never 0 when a request read has no result line."""
    if stats.unwritten:
        return EXIT_BROKEN_PIPE if stats.broken_pipe else EXIT_UNRECORDED
    if stats.interrupted:
        return EXIT_ON_SIGNAL.get(stats.interrupted, EXIT_INTERRUPTED)
    if stats.fatal:
        return EXIT_FATAL
    if stats.changed:
        return EXIT_USAGE
    if stats.unrecorded:
        return EXIT_UNRECORDED
    if getattr(stats, "pending", False):
        return EXIT_PENDING  # batch mode left work at the provider or for a later run
    return EXIT_OK if stats.errored_total == 0 else EXIT_ERRORED
