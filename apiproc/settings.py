"""One typed settings object for a run, and the checks that make a bad one fail early.

    settings = Settings(requests_path="in.jsonl", output_path=default_output_path("in.jsonl"),
                        api_key=resolve_api_key(None))
    settings.validate()

Errors a user can cause raise `SettingsError` with one sentence saying what to do.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from apiproc.errors import SettingsError
from apiproc.limiter import Limits
from apiproc.providers import APIS, KEY_OPTIONAL, KEY_VARIABLES, SIMULATED_APIS
from apiproc.providers.anthropic import DEFAULT_TIMEOUT, DEFAULT_VERSION
from apiproc.providers.base import TRANSPORTS
from apiproc.results import OUTPUT_FORMATS
from apiproc.tokens import OUTPUT_ACCOUNTINGS

SIMULATED_API_KEY = "sk-ant-simulated-key"
DEFAULT_CONCURRENCY = 512
DEFAULT_ATTEMPTS = 5
DEFAULT_RATE_LIMIT_RETRIES = 30
DEFAULT_RETRY_BASE_DELAY = 1.0
DEFAULT_GRACE_PERIOD = 30.0
# A guess: the API's ping interval is undocumented; reports put it at about 15-30 s, so three
# of the longest reported gaps pass before a silent stream counts as stalled.
DEFAULT_IDLE_TIMEOUT = 90.0
LOOPBACK_HOSTS = ("localhost", "::1")
# --retry-errored: errors a rerun may fix (rate limits, overloaded, server errors, timeouts,
# connection errors, apiproc's own), or every error, permanent 4xx answers too.
RETRY_ERRORED = ("fixable", "all")

MODES = ("online", "batch")
FALLBACKS = ("batch", "online")
MAX_BATCH_SIZE = 100_000


@dataclass(slots=True)
class BatchOptions:
    """How `--mode batch` splits, polls and sends again."""

    size: int | None = None  # requests per batch at most (the API's limit when None)
    max_bytes: int | None = None  # bytes per batch at most (the API's limit, less a margin)
    poll_interval: float = 30.0  # seconds between polls after a change
    poll_max_interval: float | None = None  # longest wait while nothing changes
    fallback: str = "batch"  # where requests go again: a new batch, or the online path
    max_queue: int | None = None  # requests in unfinished batches at most
    api_rpm: float = 50.0  # calls per minute to the batch endpoints (the lowest tier's limit)
    adopt: str | None = None  # the batch an unconfirmed create made, when the list is ambiguous
    create_settle: float = 10.0  # seconds a create may take to show in the list
    wait: bool = True  # follow the batches to the end; False: submit, collect, exit (cron)


@dataclass(slots=True)
class Settings:
    """Everything one run needs to know, as the command line or a caller gave it."""

    requests_path: str
    output_path: str
    api_key: str
    request_url: str | None = None  # None: the API's own endpoint
    api: str = "anthropic"
    region: str | None = None
    project: str | None = None
    limits: Limits = field(default_factory=Limits)
    # From --limits-file: limits by model class (or model id); the flags fill the gaps.
    class_limits: dict[str, Limits] = field(default_factory=dict)
    max_attempts: int = DEFAULT_ATTEMPTS
    max_rate_limit_retries: int = DEFAULT_RATE_LIMIT_RETRIES
    retry_base_delay: float = DEFAULT_RETRY_BASE_DELAY
    max_concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    transport: str = "auto"
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    anthropic_version: str = DEFAULT_VERSION
    anthropic_betas: tuple[str, ...] = ()
    output_format: str = "batch"
    output_accounting: str | None = None  # None: as the API counts by default
    use_caching: bool = False
    simulate: bool = False
    ramp: bool = True
    overwrite: bool = False
    retry_errored: str | None = None  # None, "fixable" or "all" (see RETRY_ERRORED)
    force: bool = False
    wait: bool = False  # for another run that holds the output, instead of refusing
    fsync: bool = False
    grace_period: float = DEFAULT_GRACE_PERIOD
    allow_insecure_http: bool = False
    cache_warmup: bool = True
    cache_aware_limits: bool = True
    mode: str = "online"
    batch: BatchOptions = field(default_factory=BatchOptions)

    def validate(self) -> None:
        for name, value in vars_of(self.limits).items():
            if value is not None and value <= 0:
                raise SettingsError(f"--{name.replace('_', '-')} must be a positive number.")
        if self.max_attempts < 1:
            raise SettingsError("--max-attempts must be at least 1.")
        if self.max_rate_limit_retries < 0:
            raise SettingsError("--max-rate-limit-retries must not be negative.")
        if self.retry_base_delay < 0:
            raise SettingsError("--retry-base-delay must not be negative.")
        if self.max_concurrency < 1:
            raise SettingsError("--max-concurrency must be at least 1.")
        if self.timeout <= 0:
            raise SettingsError("--timeout must be a positive number of seconds.")
        if self.transport not in TRANSPORTS:
            raise SettingsError(f"--transport must be one of {', '.join(TRANSPORTS)}.")
        if self.idle_timeout <= 0:
            raise SettingsError("--idle-timeout must be a positive number of seconds.")
        if self.output_format not in OUTPUT_FORMATS:
            raise SettingsError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}.")
        if self.api not in APIS:
            raise SettingsError(f"--api must be one of {', '.join(APIS)}.")
        if self.simulate and self.api not in SIMULATED_APIS:
            raise SettingsError(
                f"--simulate serves the {' and '.join(sorted(SIMULATED_APIS))} APIs, "
                f"not {self.api}; drop --simulate or choose one of those with --api."
            )
        if self.output_accounting is not None and self.output_accounting not in OUTPUT_ACCOUNTINGS:
            raise SettingsError(
                f"--output-accounting must be one of {', '.join(OUTPUT_ACCOUNTINGS)}."
            )
        if self.grace_period < 0:
            raise SettingsError("--grace-period must not be negative.")
        if self.retry_errored is not None and self.retry_errored not in RETRY_ERRORED:
            raise SettingsError("--retry-errored takes no value, or 'all'.")
        if self.overwrite and self.retry_errored:
            raise SettingsError("--overwrite starts afresh, so --retry-errored has nothing to do.")
        self._validate_url()
        self._validate_paths()
        if self.mode == "batch":
            self._validate_batch()
        elif self.mode not in MODES:
            raise SettingsError(f"--mode must be one of {', '.join(MODES)}.")

    def _validate_batch(self) -> None:
        batch = self.batch
        if self.requests_path == "-" or self.output_path == "-":
            raise SettingsError(
                "--mode batch reads its requests from a file and writes to a file (not '-'), "
                "so that a rerun can find the batches again."
            )
        if batch.size is not None and not 1 <= batch.size <= MAX_BATCH_SIZE:
            raise SettingsError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE:,}.")
        if batch.max_bytes is not None and batch.max_bytes < 1:
            raise SettingsError("--batch-bytes must be a positive number of bytes.")
        if batch.poll_interval <= 0:
            raise SettingsError("--poll-interval must be a positive number of seconds.")
        if batch.fallback not in FALLBACKS:
            raise SettingsError(f"--fallback must be one of {', '.join(FALLBACKS)}.")
        if batch.max_queue is not None and batch.max_queue < 1:
            raise SettingsError("--max-batch-queue must be at least 1.")
        if batch.api_rpm <= 0:
            raise SettingsError("--batch-api-rpm must be a positive number.")

    def _validate_url(self) -> None:
        if self.request_url is None:
            return
        url = urlsplit(self.request_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SettingsError(f"--request-url must be an http(s) URL, not {self.request_url!r}.")
        if url.scheme == "http" and not _is_loopback(url.hostname) and not self.allow_insecure_http:
            raise SettingsError(
                f"Refusing to send the API key in clear text to {url.hostname}: use https, "
                "or --allow-insecure-http if that server is trusted."
            )

    def _validate_paths(self) -> None:
        if self.requests_path != "-":
            source = Path(self.requests_path)
            if not source.exists():
                raise SettingsError(f"The requests file {self.requests_path} does not exist.")
            if source.is_dir():
                raise SettingsError(f"{self.requests_path} is a directory, not a requests file.")
            if not os.access(source, os.R_OK):
                raise SettingsError(f"The requests file {self.requests_path} cannot be read.")
        if self.output_path == "-":
            return
        target = Path(self.output_path)
        if self.requests_path != "-" and target.exists() and target.samefile(self.requests_path):
            raise SettingsError("The output file must not be the requests file.")
        if target.is_dir():
            raise SettingsError(f"The output path {self.output_path} is a directory.")
        parent = _existing_parent(target)
        if not os.access(parent, os.W_OK):
            raise SettingsError(f"Cannot write to {parent}: choose another output path.")


def vars_of(limits: Limits) -> dict[str, float | None]:
    return {
        "max_requests_per_minute": limits.requests_per_minute,
        "max_input_tokens_per_minute": limits.input_tokens_per_minute,
        "max_output_tokens_per_minute": limits.output_tokens_per_minute,
        "max_tokens_per_minute": limits.tokens_per_minute,
    }


def default_output_path(requests_path: str) -> str:
    """`<stem>_results.jsonl` beside the input; stdout when the input is stdin."""
    if requests_path == "-":
        return "-"
    source = Path(requests_path)
    return str(source.with_name(f"{source.stem}_results.jsonl"))


def resolve_api_key(given: str | None, simulate: bool = False, api: str = "anthropic") -> str:
    """The key from the option, else the API's variable (ANTHROPIC_API_KEY, OPENAI_API_KEY,
    ...) from the environment or `.env`; "" for an API that signs in another way."""
    if given:
        return given
    if simulate:
        return SIMULATED_API_KEY
    from dotenv import find_dotenv, load_dotenv

    load_dotenv(find_dotenv(usecwd=True), override=False)
    variables = KEY_VARIABLES.get(api, ())
    for variable in variables:
        if os.environ.get(variable):
            return os.environ[variable]
    if api in KEY_OPTIONAL or not variables:
        return ""
    raise SettingsError(
        f"No API key: pass --api-key, set {variables[0]} in the environment or a .env "
        "file, or add --simulate to run against the bundled simulator."
    )


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _existing_parent(path: Path) -> Path:
    parent = path.resolve().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent
