"""Set up one run around the pipeline: lock, output, provider, simulator, signals.

    stats = run(settings, progress=reporter.follow(...), owner="apiproc run in.jsonl ...")

The engine moves data; this module prepares what it moves it between. It locks the
output against a second run, repairs and scans the existing output to resume from it,
builds the provider the settings name, starts the bundled simulator for `--simulate`,
opens the writer, and turns SIGINT/SIGTERM into a graceful stop (a second signal exits
at once; every written line is whole). `--mode batch` hands the run to `apiproc.batch`
instead.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from apiproc.engine import OWN_TRANSIENT_ERRORS, Engine, RunStats, feed_file
from apiproc.errors import EXIT_ON_SIGNAL, OutputError, ResumeMismatch, SettingsError
from apiproc.jobs import Check, rereadable
from apiproc.lock import OutputLock
from apiproc.loop import run as run_loop
from apiproc.providers import Provider, build_provider
from apiproc.results import ResultWriter, first_few, resumable
from apiproc.resume import (
    Finished,
    Resend,
    changed_requests,
    check_output_identity,
    drop_results,
    scan_output,
    start_afresh,
)
from apiproc.settings import Settings

log = logging.getLogger("apiproc")

Progress = Callable[[Engine], Coroutine[Any, Any, None]]
# Batch requests canceled or expired every time they were tried: a rerun may process them.
UNPROCESSED = frozenset({"canceled", "expired"})
# Allocations between two young-generation collections during a run (Python's default: 700).
GC_THRESHOLD = 10_000


def run(
    settings: Settings,
    progress: Progress | None = None,
    on_stopping: Callable[[str, bool], None] | None = None,
    owner: str = "",
    on_waiting: Callable[[str], None] | None = None,
    batch_display: Callable[[Any], None] | None = None,
) -> Any:
    """Hold the output's lock for the whole run, then run the job on the fastest loop.

    A second run on the same output raises OutputInUse, or with `settings.wait` waits
    (`on_waiting` is told who holds it). `owner` is this run's command line, for theirs.
    In batch mode the result is a `BatchStats`, and `batch_display(run)` shows progress.
    """
    with _output_lock(settings, owner, on_waiting):
        _settle_garbage_collector()
        return run_loop(run_job(settings, progress, on_stopping, batch_display))


def run_batch_command(
    settings: Settings,
    mode: str,
    batch_display: Callable[[Any], None] | None = None,
    on_stopping: Callable[[str, bool], None] | None = None,
    owner: str = "",
) -> Any:
    """`apiproc batch results|cancel`: collect (or cancel, then collect) the batches of an
    output's state file, holding the output's lock like a run."""
    from apiproc.batch import run_batches

    with _output_lock(settings, owner, None):
        return run_loop(
            run_batches(
                settings,
                provider_of(settings),
                display=batch_display,
                on_stopping=on_stopping,
                mode=mode,
            )
        )


def _settle_garbage_collector() -> None:
    """Start-up's objects live for the whole run: keep the cyclic GC from scanning them on
    every collection, and collect the run's own cycles less often (a few MB at most)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)


@contextmanager
def _output_lock(
    settings: Settings, owner: str, on_waiting: Callable[[str], None] | None
) -> Iterator[None]:
    if not resumable(settings.output_path):
        yield  # stdout, a pipe or a device: nothing is read back, so nothing to guard
        return
    with OutputLock(settings.output_path, owner, settings.wait, on_waiting):
        yield


async def run_job(
    settings: Settings,
    progress: Progress | None = None,
    on_stopping: Callable[[str, bool], None] | None = None,
    batch_display: Callable[[Any], None] | None = None,
) -> Any:
    """Run one job as the settings say, against the simulator when asked (the caller
    holds the output's lock: see `run`).

    `progress(engine)` runs beside the job (to report on the live figures) and is
    cancelled when it ends. The first SIGINT/SIGTERM stops gracefully, or cuts the wait
    for the requests in flight short when the run is already stopping (`on_stopping` is
    told which); a second one exits at once — the output stays whole and resumable.
    In batch mode `batch_display(run)` is called after each poll instead of `progress`.
    """
    if settings.simulate:
        from apiproc.simulator import Simulator

        async with Simulator() as simulator:
            settings.request_url = simulator.url_for(settings.api)
            return await _run_mode(settings, progress, on_stopping, batch_display)
    return await _run_mode(settings, progress, on_stopping, batch_display)


async def _run_mode(
    settings: Settings,
    progress: Progress | None,
    on_stopping: Callable[[str, bool], None] | None,
    batch_display: Callable[[Any], None] | None,
) -> Any:
    if settings.mode == "batch":
        from apiproc.batch import run_batches

        return await run_batches(
            settings, provider_of(settings), display=batch_display, on_stopping=on_stopping
        )
    refuse_while_batches_run(settings.output_path, settings.overwrite)
    return await _run(settings, progress, on_stopping)


def refuse_while_batches_run(output_path: str, overwrite: bool = False) -> None:
    """Online mode must not send requests that batches of the same output still hold;
    --overwrite also forgets the batch state of an output it empties."""
    if not resumable(output_path):
        return
    from apiproc.batch import state_path

    path = state_path(output_path)
    if not os.path.exists(path):
        return
    from apiproc.batch.journal import read_state  # only when there is a state file to read

    state = read_state(path)
    if state.live() or state.unresolved():
        raise OutputError(
            f"{output_path} has batches still running ({path}): collect them with "
            "--mode batch, or cancel them with `apiproc batch cancel`, before sending online."
        )
    if overwrite:
        os.remove(path)


def provider_of(settings: Settings) -> Provider:
    """The provider the settings name, checked against the options that need its help."""
    provider = build_provider(
        settings.api,
        api_key=settings.api_key,
        url=settings.request_url,
        version=settings.anthropic_version,
        betas=settings.anthropic_betas,
        transport=settings.transport,
        timeout=settings.timeout,
        region=settings.region,
        project=settings.project,
    )
    if settings.use_caching and not provider.cache_breakpoints:
        raise SettingsError(
            f"--use-caching adds cache_control breakpoints, which --api {provider.name} does "
            "not take; leave it out."
        )
    return provider


def prepare_output(settings: Settings, provider: Provider | None = None) -> Finished | None:
    """Start afresh, or repair and scan the existing output to resume from it; refuse
    (or with --force, send again) the requests whose line changed since their result."""
    output = settings.output_path
    if not resumable(output):
        return None  # stdout, a pipe or a device: nothing to read back
    if settings.overwrite:
        start_afresh(output)
    fresh = not os.path.exists(output) or os.path.getsize(output) == 0
    check_output_identity(settings.requests_path, output, settings.output_format, fresh)
    if fresh:
        return None
    finished = scan_output(output, settings.output_format, _resend(settings, provider))
    if finished.repaired_bytes:
        log.warning(
            "repaired %s: removed a torn last line (%d bytes); its request is sent again",
            output,
            finished.repaired_bytes,
        )
    if finished.dropped_errors:
        log.warning("removed %d errored results to send them again", finished.dropped_errors)
    if finished.unfingerprinted:
        log.warning(
            "%d results in %s were written by an older apiproc, without request "
            "fingerprints: they are matched by id only, so a line changed since would not "
            "be noticed",
            finished.unfingerprinted,
            output,
        )
    if rereadable(settings.requests_path):  # stdin or a pipe is checked as it is read
        check = provider.validate if provider is not None else None
        _send_changed_again_or_refuse(settings, finished, check)
    return finished


def _resend(settings: Settings, provider: Provider | None) -> Resend | None:
    """Which errored results --retry-errored sends again: all, or those a rerun may fix."""
    if settings.retry_errored == "all":
        return lambda error_type: True
    if settings.retry_errored is None:
        return None
    transient = provider.transient_error if provider is not None else lambda _: False
    return lambda error_type: (
        error_type in OWN_TRANSIENT_ERRORS or error_type in UNPROCESSED or transient(error_type)
    )


def _send_changed_again_or_refuse(
    settings: Settings, finished: Finished, check: Check | None
) -> None:
    changed = changed_requests(settings.requests_path, finished, check)
    if not changed:
        return
    lines = f"{len(changed):,} lines of" if len(changed) > 1 else "1 line of"
    what = (
        f"{lines} {settings.requests_path} differ{'s' if len(changed) == 1 else ''} from "
        f"the requests answered under the same id in {settings.output_path} "
        f"({first_few(changed)})"
    )
    if not settings.force:
        raise ResumeMismatch(
            f"{what}: the input changed since those results were written. Add --force to "
            "send them again and replace their results, --overwrite to start afresh, or "
            "write to another output."
        )
    removed = drop_results(settings.output_path, set(changed))
    finished.forget(changed)
    log.warning("%s: sending them again (--force); %d old results removed", what, removed)


async def _run(
    settings: Settings, progress: Progress | None, on_stopping: Callable[[str, bool], None] | None
) -> RunStats:
    provider = provider_of(settings)
    finished = prepare_output(settings, provider)
    with ResultWriter(settings.output_path, settings.output_format, settings.fsync) as writer:
        engine = Engine(settings, provider, writer, finished=finished)
        reporter = asyncio.create_task(progress(engine)) if progress else None
        with _signals(engine, on_stopping):
            try:
                return await engine.run(lambda e: feed_file(e, settings.requests_path))
            finally:
                if reporter is not None:
                    reporter.cancel()
                    await asyncio.gather(reporter, return_exceptions=True)


class Stoppable(Protocol):
    """What the signal handler stops: the engine, or a batch run."""

    stats: Any

    @property
    def stopping(self) -> bool: ...

    def request_stop(self, reason: str) -> None: ...


@contextmanager
def _signals(engine: Stoppable, on_stopping: Callable[[str, bool], None] | None) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def handle(name: str) -> None:
        if engine.stats.interrupted or engine.stats.hurried:
            os._exit(EXIT_ON_SIGNAL[name])  # second signal: every written line is whole
        hurried = engine.stopping  # already stopping: this signal cuts the wait short
        engine.request_stop(name)
        if on_stopping is not None:
            on_stopping(name, hurried)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handle, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread, or a platform without it: default handling
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
