"""`apiproc batch ...`: follow, collect and cancel batches, those of an output or any one.

    apiproc batch status results.jsonl           # one line per batch, asked afresh
    apiproc batch results results.jsonl          # write the ended batches into the output
    apiproc batch cancel --batch-id msgbatch_... # or list, to page through the account's

The click side only: options, messages and exit statuses. What the commands do lives in
`apiproc.batch.commands`, imported when a command runs, so that `apiproc --help` and the
online path never load the batch machinery.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import click

from apiproc import runner
from apiproc.cli_common import (
    Display,
    api_key_or_exit,
    log_to_stderr,
    option,
    refused,
    resume_command,
    run_batches,
    usage_error,
)
from apiproc.errors import EXIT_FATAL, EXIT_USAGE, SettingsError
from apiproc.loop import run as run_loop
from apiproc.providers.anthropic import DEFAULT_URL, DEFAULT_VERSION
from apiproc.providers.anthropic_versions import API_VERSIONS
from apiproc.report import Reporter
from apiproc.settings import DEFAULT_ATTEMPTS, BatchOptions, Settings

# The APIs with a batch service in apiproc.
BATCH_APIS = ("anthropic", "openai")


def _command_errors() -> tuple[type[Exception], ...]:
    """What a batch command can meet that is not a bug: the API's refusal, the network, files."""
    from apiproc.providers.batches import BatchApiError  # batch only: kept out of start-up

    return (BatchApiError, ValueError, OSError, aiohttp.ClientError)


def _api_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """What a batch command needs to reach the API."""
    for decorator in reversed(
        [
            click.option(
                "--api",
                type=click.Choice(BATCH_APIS),
                help="Whose batches: the state file's API, else anthropic.",
            ),
            option(
                "--request-url",
                help=f"Messages endpoint, or the OpenAI base URL (default: the state file's, "
                f"else the API's own: {DEFAULT_URL} for anthropic).",
            ),
            option(
                "--api-key",
                help="API key. Default: ANTHROPIC_API_KEY (OPENAI_API_KEY for --api openai) "
                "or .env.",
            ),
            option(
                "--anthropic-version",
                type=click.Choice(API_VERSIONS),
                default=DEFAULT_VERSION,
                show_default=True,
            ),
            option("--anthropic-beta", multiple=True, help="Beta feature name; repeatable."),
            option("--allow-insecure-http", is_flag=True, help="Allow a plain-http remote host."),
        ]
    ):
        function = decorator(function)
    return function


def _batch_provider(options: dict[str, Any], url: str | None, api: str | None = None) -> Any:
    options["api"] = options.get("api") or api or "anthropic"
    settings = _api_settings(
        options, url or options["request_url"], requests_path="-", output_path="-"
    )
    try:
        settings._validate_url()
    except SettingsError as error:
        usage_error(str(error))
    return runner.provider_of(settings)


def _state_settings(state_path: str, options: dict[str, Any]) -> Settings:
    """Settings that collect or cancel the batches of a state file into its output."""
    from apiproc.batch.commands import messages_url, output_file, output_format
    from apiproc.batch.journal import read_state

    state = read_state(state_path)
    if not state.identity:
        usage_error(f"{state_path} is not a batch state file (or is empty).")
    output = output_file(state_path)
    options["api"] = options.get("api") or state.api
    return _api_settings(
        options,
        options["request_url"] or messages_url(state.endpoint),
        requests_path=str(state.identity.get("input", "")),
        output_path=output,
        output_format=output_format(output),
        max_attempts=options.get("max_attempts") or DEFAULT_ATTEMPTS,
        mode="batch",
        batch=BatchOptions(poll_interval=options.get("poll_interval") or 30.0),
    )


def _api_settings(options: dict[str, Any], request_url: str | None, **more: Any) -> Settings:
    """Settings that reach the API the options name: its key, endpoint, version and betas."""
    return Settings(
        api_key=api_key_or_exit(options),
        api=options["api"],
        request_url=request_url,
        anthropic_version=options["anthropic_version"],
        anthropic_betas=tuple(options["anthropic_beta"]),
        allow_insecure_http=options["allow_insecure_http"],
        **more,
    )


def _state_or_exit(target: str | None, batch_id: str | None) -> str | None:
    from apiproc.batch.commands import state_file

    if (target is None) == (batch_id is None):
        usage_error("Give an output (or its state file), or --batch-id, not both.")
    if target is None:
        return None
    path = state_file(target)
    if not Path(path).exists():
        usage_error(f"There is no batch state file {path}.")
    return path


@click.group()
def batch() -> None:
    """Follow, collect and cancel batches: those of a --mode batch output, or any one."""


@batch.command("status")
@click.argument("target", metavar="OUTPUT", required=False)
@click.option("--batch-id", help="One batch of the account instead of a state file's.")
@click.option("--offline", is_flag=True, help="Only what the state file knows; no API call.")
@_api_options
def batch_status(target: str | None, batch_id: str | None, offline: bool, **options: Any) -> None:
    """The batches of OUTPUT's state file (asked afresh), or one batch."""
    from apiproc.batch.commands import one_batch, status_rows
    from apiproc.batch.journal import read_state

    path = _state_or_exit(target, batch_id)
    try:
        if path is None:
            provider = _batch_provider(options, None)
            info = run_loop(one_batch(provider, str(batch_id)))
            click.echo(json.dumps(info.raw, indent=2))
            return
        state = read_state(path)
        url = options["request_url"] or _messages_url_of(state.endpoint)
        provider = _batch_provider(options, url, state.api) if not offline else None
        rows = run_loop(status_rows(provider, state, ask=not offline)) if provider else None
    except _command_errors() as error:
        _batch_command_failed(error)
    if rows is None:
        from apiproc.batch.commands import StatusRow

        rows = [
            StatusRow(
                i.seq,
                i.purpose,
                i.batch_id or "-",
                i.count,
                i.status or i.state,
                dict(i.counts),
                i.written,
                i.created_at,
            )
            for i in state.intents.values()
        ]
    _print_status(rows, state)


def _messages_url_of(endpoint: str) -> str | None:
    from apiproc.batch.commands import messages_url

    return messages_url(endpoint) if endpoint else None


def _print_status(rows: list[Any], state: Any) -> None:
    """One line per batch (plain, so that scripts can read it), then what is left."""
    for row in rows:
        counts = ", ".join(f"{k} {v:,}" for k, v in row.counts.items() if v)
        written = "written" if row.written else "not written"
        click.echo(
            f"{row.seq:>4} {row.purpose:<6} {row.batch_id:<36} {row.requests:>9,} "
            f"{row.status:<12} {written:<12} {counts}"
        )
    pooled = sum(span.lines for span in state.pool.values())
    click.echo(
        f"input planned up to line {state.next_line - 1:,}; {pooled:,} requests wait to be "
        "sent again; rerun the same `apiproc run` command to go on."
    )


@batch.command("results")
@click.argument("target", metavar="OUTPUT", required=False)
@click.option("--batch-id", help="One batch of the account instead of a state file's.")
@option("-o", "--output", "output", help="With --batch-id: the file to append the results to.")
@_api_options
def batch_results(
    target: str | None, batch_id: str | None, output: str | None, **options: Any
) -> None:
    """Write the ended batches of OUTPUT's state file into OUTPUT, or one batch's results."""
    from apiproc.batch.commands import download

    path = _state_or_exit(target, batch_id)
    if path is not None:
        sys.exit(_collect(path, options, "collect"))
    if not output:
        usage_error("With --batch-id, give the file to write to with -o.")
    try:
        counts = run_loop(download(_batch_provider(options, None), str(batch_id), output))
    except _command_errors() as error:
        _batch_command_failed(error)
    click.echo(", ".join(f"{kind} {n:,}" for kind, n in sorted(counts.items())) or "no results")


@batch.command("cancel")
@click.argument("target", metavar="OUTPUT", required=False)
@click.option("--batch-id", help="One batch of the account instead of a state file's.")
@_api_options
def batch_cancel(target: str | None, batch_id: str | None, **options: Any) -> None:
    """Cancel the running batches of OUTPUT's state file and collect their partial results
    (a rerun sends the canceled requests again), or cancel one batch."""
    from apiproc.batch.commands import one_batch

    path = _state_or_exit(target, batch_id)
    if path is not None:
        sys.exit(_collect(path, options, "cancel"))
    try:
        info = run_loop(one_batch(_batch_provider(options, None), str(batch_id), cancel=True))
    except _command_errors() as error:
        _batch_command_failed(error)
    click.echo(f"{info.id}: {info.status}")


@batch.command("list")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="Batches per page."
)
@click.option("--pages", type=click.IntRange(1), default=1, show_default=True)
@click.option("--all", "every", is_flag=True, help="Every page.")
@_api_options
def batch_list(limit: int, pages: int, every: bool, **options: Any) -> None:
    """Page through the account's batches, most recent first."""
    from apiproc.batch.commands import account_batches
    from apiproc.providers.anthropic_batches import format_time

    provider = _batch_provider(options, None)

    async def show() -> None:
        async for page in account_batches(provider, limit, None if every else pages):
            for info in page:
                counts = ", ".join(f"{k} {v:,}" for k, v in info.counts.as_dict().items() if v)
                click.echo(f"{info.id}  {format_time(info.created_at)}  {info.status:<11} {counts}")

    try:
        run_loop(show())
    except _command_errors() as error:
        _batch_command_failed(error)


def _collect(state_path: str, options: dict[str, Any], mode: str) -> int:
    settings = _state_settings(state_path, options)
    reporter = Reporter(sys.stderr)
    if refused(settings, reporter):
        return EXIT_USAGE
    log_to_stderr(logging.WARNING, settings.api_key)
    return run_batches(settings, Display(), reporter, resume_command(), mode=mode)


def _batch_command_failed(error: Exception) -> NoReturn:
    """An API refusal, an unreachable server or a bad file: one sentence, no traceback."""
    from apiproc.providers.base import Verdict
    from apiproc.providers.batches import BatchApiError

    Reporter(sys.stderr).error(f"{error}.")
    fatal = isinstance(error, BatchApiError) and error.verdict is Verdict.FATAL
    sys.exit(EXIT_FATAL if fatal else EXIT_USAGE)
