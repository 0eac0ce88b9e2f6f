"""Command line: `apiproc run`, `apiproc simulate`, and the classic script's flags.

    apiproc run requests.jsonl -o results.jsonl --max-requests-per-minute 1000
    apiproc run requests.jsonl --simulate
    apiproc simulate --port 8080 --requests-per-minute 3000 --latency 0.2

Options only: each command builds a `Settings` and hands it to the engine. `apiproc batch
...` lives in `apiproc.cli_batch`; what both share, in `apiproc.cli_common`.
Exit status (the first that applies, in this order):
    4   results received (and paid for) could not be written to the output;
    141 the output's reader went away (a broken pipe, as with `| head -1`);
    130 interrupted by SIGINT (Ctrl-C); 143 stopped by SIGTERM;
    3   stopped by an authentication, permission, billing or spend-limit answer;
    2   usage or input/output file error, the output in use by another run, or lines that
        differ from the requests answered under their ids;
    4   a request read has no result line (never 0 then);
    75  batch mode left batches running (--no-wait, or the batch service did not answer):
        run the same command again later;
    1   some requests are recorded as errored;
    0   every request read has a succeeded line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any

import click

from apiproc import runner
from apiproc.cli_batch import batch
from apiproc.cli_common import (
    EXIT_INTERRUPTED,
    Display,
    api_key_or_exit,
    exit_status,
    log_to_stderr,
    option,
    refused,
    resume_command,
    run_batches,
    usage_error,
    waiting_for,
)
from apiproc.errors import (
    EXIT_ERRORED,
    EXIT_OK,
    EXIT_USAGE,
    ApiprocError,
    SettingsError,
)
from apiproc.limiter import Limits
from apiproc.limits_file import read_limits_file
from apiproc.loop import run as run_loop
from apiproc.providers import APIS, url_from_environment
from apiproc.providers.anthropic import DEFAULT_URL, DEFAULT_VERSION
from apiproc.providers.anthropic_versions import API_VERSIONS
from apiproc.providers.base import TRANSPORTS
from apiproc.redact import redact
from apiproc.report import Reporter, print_estimate
from apiproc.settings import (
    DEFAULT_ATTEMPTS,
    DEFAULT_CONCURRENCY,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_RATE_LIMIT_RETRIES,
    DEFAULT_RETRY_BASE_DELAY,
    DEFAULT_TIMEOUT,
    MAX_BATCH_SIZE,
    RETRY_ERRORED,
    BatchOptions,
    Settings,
    default_output_path,
)

CLASSIC_REQUESTS_PER_MINUTE = 40.0
CLASSIC_TOKENS_PER_MINUTE = 16_000.0
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


class LogLevel(click.ParamType):
    """A logging level as a number (10, 20, 30, 40) or a name (DEBUG, INFO, ...)."""

    name = "level"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        if text.upper() in LOG_LEVELS:
            return LOG_LEVELS[text.upper()]
        self.fail(f"{value!r} is not a logging level (use 10/20/30/40 or DEBUG/INFO/...)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="apiproc")
def main() -> None:
    """Send a JSONL file of LLM API requests as fast as the rate limits allow.

    Anthropic Messages (the default), OpenAI-compatible Chat Completions (--api openai),
    Claude on Bedrock (--api bedrock, bedrock-mantle) and on Vertex AI (--api vertex).
    """


main.add_command(batch)


@main.command()
@click.argument("requests", metavar="REQUESTS")
@option(
    "-o",
    "--output",
    "--save-filepath",
    "output",
    metavar="OUTPUT",
    help="Output JSONL ('-' for stdout). Default: <input stem>_results.jsonl beside the "
    "input, or stdout when reading stdin.",
)
@click.option(
    "--api",
    type=click.Choice(APIS),
    default="anthropic",
    show_default=True,
    help="Which API to send to: the Messages API, an OpenAI-compatible Chat Completions "
    "server, Claude on Bedrock (InvokeModel or the bedrock-mantle Messages API) or on Vertex AI.",
)
@option(
    "--request-url",
    help="Endpoint. Default: the API's own (openai: a base URL such as "
    "http://localhost:8000/v1 will do; bedrock, vertex: the base URL before the model path).",
)
@click.option("--region", help="Cloud region for --api bedrock, bedrock-mantle and vertex.")
@click.option("--project", help="Google Cloud project for --api vertex.")
@option(
    "--api-key",
    help="API key. Default: ANTHROPIC_API_KEY, or OPENAI_API_KEY for --api openai, from the "
    "environment or .env. Bedrock and Vertex sign in with the cloud's own credentials.",
)
@option(
    "--max-requests-per-minute",
    type=float,
    help="Requests per minute. Default: the limit the API reports in its headers.",
)
@option(
    "--max-tokens-per-minute",
    type=float,
    help="Combined input+output tokens per minute (the classic limit; OpenAI's and "
    "Bedrock's tokens-per-minute budget).",
)
@option("--max-input-tokens-per-minute", type=float, help="Input tokens per minute.")
@option("--max-output-tokens-per-minute", type=float, help="Output tokens per minute.")
@option(
    "--limits-file",
    metavar="PATH",
    help="Limits per model class (TOML, or JSON for *.json): one table per class, e.g. "
    "[haiku-4-5] requests_per_minute = 4000. The flags above apply to every class and "
    "fill what a table leaves out.",
)
@option(
    "--max-attempts",
    type=int,
    default=DEFAULT_ATTEMPTS,
    show_default=True,
    help="Attempts per request before it is recorded as errored; 429 answers do not count.",
)
@option(
    "--max-rate-limit-retries",
    type=int,
    default=DEFAULT_RATE_LIMIT_RETRIES,
    show_default=True,
    help="429 (rate limited) answers a request may get and still be sent again, after "
    "the server's retry-after; they do not use up --max-attempts.",
)
@option(
    "--retry-base-delay",
    type=float,
    default=DEFAULT_RETRY_BASE_DELAY,
    show_default=True,
    help="Back-off before the 2nd attempt; doubles each attempt (full jitter, 60 s cap).",
)
@option(
    "--max-concurrency",
    type=int,
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once.",
)
@option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds one non-streamed attempt may take; long generations are legitimate. A "
    "streamed attempt may take this long, or longer when its max_tokens needs it: an hour "
    "per 128,000 tokens.",
)
@option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default="auto",
    show_default=True,
    help='stream: send every request as a stream; plain: none (a line\'s "stream" is '
    "dropped); auto: stream the lines that ask for it, and those whose max_tokens could "
    "outlast --timeout at an hour per 128,000 tokens (over 21,333 at 600 s), or exceed a "
    "model's non-streaming cap. Streamed answers are written exactly like the others.",
)
@option(
    "--idle-timeout",
    type=float,
    default=DEFAULT_IDLE_TIMEOUT,
    show_default=True,
    help="While streaming, seconds without a byte (pings count) before the connection is "
    "taken for stalled and the request retried.",
)
@option(
    "--logging-level",
    type=LogLevel(),
    default="WARNING",
    show_default=True,
    help="10/20/30/40 or DEBUG/INFO/WARNING/ERROR.",
)
@option(
    "--anthropic-version",
    type=click.Choice(API_VERSIONS),
    default=DEFAULT_VERSION,
    show_default=True,
    help="API version. 2026-10-21 refuses temperature, top_p and top_k: such lines become "
    "bad lines, never sent.",
)
@option("--anthropic-beta", multiple=True, help="Beta feature name; repeat for several.")
@option(
    "--output-format",
    type=click.Choice(["batch", "cookbook"]),
    default="batch",
    show_default=True,
    help="batch: Message Batches result lines; cookbook: classic arrays.",
)
@option(
    "--output-accounting",
    type=click.Choice(["generated", "max_tokens"]),
    help="How the API counts output tokens against its limit: only generated tokens, or "
    "max_tokens at the start. Default: generated for the Messages API (current docs), "
    "max_tokens for the others.",
)
@option(
    "--use-caching",
    type=click.BOOL,
    default=False,
    is_flag=False,
    flag_value=True,
    help="Add a prompt-cache breakpoint at the end of the system prompt of requests "
    "that mark none.",
)
@option(
    "--cache-warmup/--no-cache-warmup",
    default=True,
    show_default=True,
    help="Send the first request of each cached prefix alone and the rest of its group "
    "once it has answered, so that they read the cache instead of all writing it.",
)
@option(
    "--cache-aware-limits/--no-cache-aware-limits",
    default=True,
    show_default=True,
    help="Leave a warm cached prefix out of the input-token estimate, for the models "
    "whose cache reads do not count toward the input-token limit.",
)
@option(
    "--ramp/--no-ramp",
    default=True,
    show_default=True,
    help="Ramp bursts up gradually (recommended by the API docs).",
)
@option(
    "--progress-every",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between progress lines on stderr.",
)
@click.option("--overwrite", is_flag=True, help="Start afresh instead of resuming the output.")
@option(
    "--retry-errored",
    type=click.Choice(RETRY_ERRORED),
    is_flag=False,
    flag_value="fixable",
    default=None,
    metavar="[all]",
    help="On resume, send again the requests whose result was an error a rerun may fix "
    "(rate limits, overloaded, server errors, timeouts, connection errors); with 'all', "
    "permanent 4xx answers too. Their old lines are removed.",
)
@click.option(
    "--force",
    is_flag=True,
    help="On resume, send again the requests whose line changed since their result was "
    "written, replacing those results (without it such a run is refused).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="When another run is writing the same output, wait for it to end instead of "
    "refusing to start.",
)
@click.option("--fsync", is_flag=True, help="Force every result line to disk before the next.")
@option(
    "--grace-period",
    type=float,
    default=DEFAULT_GRACE_PERIOD,
    show_default=True,
    help="On Ctrl-C/SIGTERM, seconds to let in-flight requests finish.",
)
@option("--summary-json", metavar="PATH", help="Also write the final summary as JSON here.")
@option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow sending the key over plain http to a host other than this machine.",
)
@click.option("--quiet", is_flag=True, help="Only warnings and the summary.")
@click.option(
    "--simulate",
    is_flag=True,
    help="Start the bundled API simulator on 127.0.0.1 and send everything there.",
)
@click.option(
    "--mode",
    type=click.Choice(["online", "batch"]),
    default="online",
    show_default=True,
    help="online: as fast as the rate limits allow; batch: through the Message Batches API, "
    "at half the price, within 24 hours (resumable: rerun the same command).",
)
@option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH_SIZE),
    help="Batch mode: requests per batch at most (default: the API's 100,000).",
)
@option("--batch-bytes", type=click.IntRange(1), hidden=True)
@option(
    "--poll-interval",
    type=float,
    help="Batch mode: seconds between polls, longer while nothing changes. Default: 30, "
    "or 1 with --simulate.",
)
@option(
    "--no-wait",
    is_flag=True,
    help="Batch mode: submit what can be submitted, write what has ended, and exit (status "
    "75 while batches still run): for cron, run the same command again later.",
)
@option("--poll-max-interval", type=float, help="Batch mode: longest wait between polls.")
@option(
    "--fallback",
    type=click.Choice(["batch", "online"]),
    default="batch",
    show_default=True,
    help="Batch mode: where errored (transient), expired and canceled requests go again: "
    "a new batch, or the online path (when a deadline is near).",
)
@option(
    "--max-batch-queue",
    type=click.IntRange(1),
    help="Batch mode: requests in unfinished batches at most (the account's queue limit).",
)
@option(
    "--batch-api-rpm",
    type=float,
    help="Batch mode: calls per minute to the batch endpoints. Default: 50 (the lowest "
    "tier's limit), or the simulator's 1,000 with --simulate.",
)
@option(
    "--adopt-batch",
    metavar="BATCH_ID",
    help="Batch mode: the batch an interrupted create made, when the account's list "
    "cannot tell (the run says when).",
)
@option("--batch-create-settle", type=float, default=10.0, hidden=True)
def run(requests: str, output: str | None, **options: Any) -> None:
    """Send every request in REQUESTS ('-' for stdin) and append one result line each."""
    settings = _settings(requests, output, options)
    display = Display(
        logging_level=options["logging_level"],
        progress_every=options["progress_every"],
        quiet=options["quiet"],
        summary_json=options["summary_json"],
    )
    sys.exit(execute(settings, display))


def _limits(options: dict[str, Any]) -> Limits:
    """The per-minute limit options a command has (the classic one has only two)."""
    return Limits(
        requests_per_minute=options.get("max_requests_per_minute"),
        input_tokens_per_minute=options.get("max_input_tokens_per_minute"),
        output_tokens_per_minute=options.get("max_output_tokens_per_minute"),
        tokens_per_minute=options.get("max_tokens_per_minute"),
    )


def _class_limits(options: dict[str, Any]) -> dict[str, Limits]:
    """The --limits-file's limits by class; a clear exit when the file is wrong."""
    path = options.get("limits_file")
    if not path:
        return {}
    try:
        return read_limits_file(path)
    except SettingsError as error:
        usage_error(str(error))


def _settings(requests: str, output: str | None, options: dict[str, Any]) -> Settings:
    api_key = api_key_or_exit(options)
    return Settings(
        requests_path=requests,
        output_path=output or default_output_path(requests),
        api_key=api_key,
        request_url=options["request_url"] or url_from_environment(options["api"]),
        api=options["api"],
        region=options["region"],
        project=options["project"],
        limits=_limits(options),
        class_limits=_class_limits(options),
        max_attempts=options["max_attempts"],
        max_rate_limit_retries=options["max_rate_limit_retries"],
        retry_base_delay=options["retry_base_delay"],
        max_concurrency=options["max_concurrency"],
        timeout=options["timeout"],
        transport=options["transport"],
        idle_timeout=options["idle_timeout"],
        anthropic_version=options["anthropic_version"],
        anthropic_betas=tuple(options["anthropic_beta"]),
        output_format=options["output_format"],
        output_accounting=options["output_accounting"],
        use_caching=bool(options["use_caching"]),
        simulate=options["simulate"],
        ramp=options["ramp"],
        overwrite=options["overwrite"],
        retry_errored=options["retry_errored"],
        force=options["force"],
        wait=options["wait"],
        fsync=options["fsync"],
        grace_period=options["grace_period"],
        allow_insecure_http=options["allow_insecure_http"],
        cache_warmup=options["cache_warmup"],
        cache_aware_limits=options["cache_aware_limits"],
        mode=options["mode"],
        batch=BatchOptions(
            size=options["batch_size"],
            max_bytes=options["batch_bytes"],
            poll_interval=options["poll_interval"] or (1.0 if options["simulate"] else 30.0),
            wait=not options["no_wait"],
            poll_max_interval=options["poll_max_interval"],
            fallback=options["fallback"],
            max_queue=options["max_batch_queue"],
            api_rpm=options["batch_api_rpm"] or (1_000.0 if options["simulate"] else 50.0),
            adopt=options["adopt_batch"],
            create_settle=options["batch_create_settle"],
        ),
    )


def execute(settings: Settings, display: Display) -> int:
    """Run a job; return the exit status. User errors get one sentence, no traceback."""
    reporter = Reporter(sys.stderr, quiet=display.quiet, interval=display.progress_every)
    if refused(settings, reporter):
        return EXIT_USAGE
    level = display.logging_level
    log_to_stderr(max(level, logging.WARNING) if display.quiet else level, settings.api_key)
    resume = resume_command()

    if settings.mode == "batch":
        return run_batches(settings, display, reporter, resume)

    def stopping(name: str, hurried: bool) -> None:
        if hurried:
            reporter.line(
                f"{name}: no longer waiting for the requests in flight; "
                "send it again to quit at once."
            )
            return
        reporter.line(
            f"{name}: finishing the requests in flight (up to {settings.grace_period:g} s); "
            "send it again to quit at once."
        )

    try:
        stats = runner.run(
            settings,
            progress=reporter.follow_with_total(settings.requests_path),
            on_stopping=stopping,
            owner=resume,
            on_waiting=waiting_for(settings, reporter),
        )
    except ApiprocError as error:
        reporter.error(redact(str(error), settings.api_key))
        return error.exit_status
    except KeyboardInterrupt:
        reporter.error("interrupted.")
        return EXIT_INTERRUPTED
    if stats.broken_pipe and settings.output_path == "-":
        _silence_stdout()
    reporter.summary(stats, settings.output_path, resume)
    if display.summary_json:
        reporter.write_summary_json(stats, settings.output_path, display.summary_json)
    return exit_status(stats)


def _silence_stdout() -> None:
    """The reader of stdout is gone: send whatever else goes there (an interpreter flush
    at exit) nowhere, instead of raising another broken pipe."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@main.command()
@click.argument("requests", metavar="REQUESTS", type=click.Path(dir_okay=False))
@click.option(
    "--api",
    type=click.Choice(APIS),
    default="anthropic",
    show_default=True,
    help="Which API's request rules and prices to apply.",
)
@option("--max-requests-per-minute", type=float, help="Requests per minute.")
@option("--max-tokens-per-minute", type=float, help="Combined tokens per minute.")
@option("--max-input-tokens-per-minute", type=float, help="Input tokens per minute.")
@option("--max-output-tokens-per-minute", type=float, help="Output tokens per minute.")
@option(
    "--anthropic-version",
    type=click.Choice(API_VERSIONS),
    default=DEFAULT_VERSION,
    show_default=True,
    help="The API version the run will use; lines it refuses are bad lines.",
)
@option(
    "--show-bad-lines", type=int, default=20, show_default=True, help="How many bad lines to list."
)
def estimate(
    requests: str, api: str, show_bad_lines: int, anthropic_version: str, **limits: float | None
) -> None:
    """Validate REQUESTS and estimate tokens, cost and time, without calling any API.

    Exit status 0 when every line is a valid request, 1 when some are not, 2 when the
    file cannot be read.
    """
    from apiproc.preflight import preflight
    from apiproc.providers import rules_for

    rules = rules_for(api, anthropic_version)  # nothing is sent, no credentials are needed
    try:
        report = preflight(requests, facts=rules.model, check=rules.validate)
    except OSError as error:
        usage_error(f"Cannot read {requests}: {error.strerror}.")
    given = _limits(limits)
    for value in given.by_dimension().values():
        if value <= 0:
            usage_error("Limits must be positive numbers.")
    today = datetime.now(timezone.utc).date()
    print_estimate(report, given, show_bad_lines, rules.prices_as_of, today)
    sys.exit(EXIT_OK if report.bad_lines == 0 else EXIT_ERRORED)


@main.command()
@click.option("--port", type=int, default=8080, show_default=True, help="0 picks a free port.")
@click.option("--requests-per-minute", type=float, default=4_000, show_default=True)
@click.option("--input-tokens-per-minute", type=float, default=2_000_000, show_default=True)
@click.option("--output-tokens-per-minute", type=float, default=400_000, show_default=True)
@click.option(
    "--tokens-per-minute",
    type=float,
    default=2_400_000,
    show_default=True,
    help="The OpenAI endpoint's one budget for input and output tokens.",
)
@click.option(
    "--output-accounting",
    type=click.Choice(["generated", "max_tokens"]),
    default="generated",
    show_default=True,
)
@click.option(
    "--window-seconds",
    type=float,
    default=None,
    help="Also enforce every limit over this shorter interval.",
)
@click.option(
    "--latency",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds before a response begins.",
)
@click.option("--latency-jitter", type=float, default=0.0, show_default=True)
@click.option(
    "--output-tokens-per-second",
    type=float,
    default=0.0,
    show_default=True,
    help="Generation speed, which paces a streamed answer (0: instant).",
)
@click.option("--rate-429", type=float, default=0.0, show_default=True)
@click.option("--rate-529", type=float, default=0.0, show_default=True)
@click.option("--rate-500", type=float, default=0.0, show_default=True)
@click.option("--rate-502-html", type=float, default=0.0, show_default=True)
@click.option("--rate-drop", type=float, default=0.0, show_default=True)
@click.option("--rate-stall", type=float, default=0.0, show_default=True)
@click.option("--stall-seconds", type=float, default=30.0, show_default=True)
@click.option(
    "--rate-stream-error",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of answers overloaded partway: an error event in a stream, else a 529.",
)
@click.option(
    "--ping-interval",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds of silence in a stream before a ping event (0: none).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--batch-processing-seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds from creating a batch until it ends.",
)
@click.option(
    "--batch-errored-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of batch results errored for a transient reason.",
)
@click.option(
    "--batch-expired-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of batch results expired.",
)
@click.option(
    "--batch-create-latency",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds a batch create takes (the batch exists halfway).",
)
@click.option("--batch-requests-per-minute", type=float, default=1_000, show_default=True)
@click.option("--batch-queue-limit", type=int, default=200_000, show_default=True)
@click.option(
    "--output-tokens",
    default="16,128",
    show_default=True,
    metavar="MIN,MAX",
    help="Range of generated lengths, clipped to max_tokens.",
)
@click.option(
    "--limits-file",
    metavar="PATH",
    help="Other limits for some model classes, in the format of `run --limits-file` "
    "(requests, input and output tokens per minute); the other classes keep the above.",
)
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="The simulated API's date, which decides the retired models. Default: today (UTC).",
)
def simulate(
    output_tokens: str, limits_file: str | None, today: datetime | None, **options: Any
) -> None:
    """Run the bundled API simulator on 127.0.0.1 until Ctrl-C.

    It serves the Messages API at /v1/messages and OpenAI Chat Completions at
    /v1/chat/completions.
    """
    from apiproc.simulator import SimulatorConfig, serve_forever

    try:
        low, high = (int(part) for part in output_tokens.split(","))
    except ValueError:
        raise click.BadParameter(
            "give two integers, MIN,MAX", param_hint="--output-tokens"
        ) from None
    config = SimulatorConfig(
        record=False,
        output_tokens=(low, high),
        class_limits=_simulated_class_limits(limits_file),
        today=today.date() if today is not None else None,
        **options,
    )

    def ready(simulator: Any) -> None:
        click.echo(f"Simulator listening on {simulator.messages_url}", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(serve_forever(config, ready=ready))


def _simulated_class_limits(path: str | None) -> dict[str, dict[str, float]]:
    """The simulator's limits by rate pool, from a limits file (a model id names its pool)."""
    from apiproc.simulator.models import MODELS

    by_pool: dict[str, dict[str, float]] = {}
    for key, limits in _class_limits({"limits_file": path}).items():
        pool = MODELS[key].rate_pool if key in MODELS else key
        given = {
            "requests_per_minute": limits.requests_per_minute,
            "input_tokens_per_minute": limits.input_tokens_per_minute,
            "output_tokens_per_minute": limits.output_tokens_per_minute,
        }
        by_pool[pool] = {name: value for name, value in given.items() if value is not None}
    return by_pool


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--requests_filepath", required=True, help="JSONL file of requests.")
@click.option("--save_filepath", default=None, help="Output file (default: *_results.jsonl).")
@click.option("--request_url", default=DEFAULT_URL, show_default=True)
@click.option("--api_key", default=None, help="Default: ANTHROPIC_API_KEY or .env.")
@click.option(
    "--max_requests_per_minute", type=float, default=CLASSIC_REQUESTS_PER_MINUTE, show_default=True
)
@click.option(
    "--max_tokens_per_minute", type=float, default=CLASSIC_TOKENS_PER_MINUTE, show_default=True
)
@click.option("--max_attempts", type=int, default=DEFAULT_ATTEMPTS, show_default=True)
@click.option("--logging_level", type=LogLevel(), default="INFO", show_default=True)
@click.option("--use_caching", type=click.BOOL, default=False, is_flag=False, flag_value=True)
@click.option("--simulate", is_flag=True, help="Send everything to the bundled simulator.")
def classic_main(**options: Any) -> None:
    """The classic parallel-processor command line, run by apiproc."""
    requests = options["requests_filepath"]
    api_key = api_key_or_exit(options)
    settings = Settings(
        requests_path=requests,
        output_path=options["save_filepath"] or default_output_path(requests),
        api_key=api_key,
        request_url=options["request_url"],
        limits=_limits(options),
        max_attempts=options["max_attempts"],
        output_format="cookbook",
        use_caching=bool(options["use_caching"]),
        simulate=options["simulate"],
    )
    sys.exit(execute(settings, Display(logging_level=options["logging_level"])))
