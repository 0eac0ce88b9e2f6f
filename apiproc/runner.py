"""Set up one run around the pipeline: output, provider, simulator, signals.

    stats = run_loop(run_job(settings, progress=reporter.follow(...)))

The engine moves data; this module prepares what it moves it between. It repairs and
scans the existing output to resume from it, builds the provider, starts the bundled
simulator for `--simulate`, opens the writer, and turns SIGINT/SIGTERM into a graceful
stop (a second signal exits at once; every written line is whole).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apiproc.engine import Engine, RunStats, feed_file
from apiproc.errors import EXIT_ON_SIGNAL, OutputError
from apiproc.providers import AnthropicProvider
from apiproc.results import (
    Finished,
    ResultWriter,
    check_output_identity,
    scan_finished,
    start_afresh,
)
from apiproc.settings import Settings

log = logging.getLogger("apiproc")

Progress = Callable[[Engine], Coroutine[Any, Any, None]]


async def run_job(
    settings: Settings,
    progress: Progress | None = None,
    on_stopping: Callable[[str], None] | None = None,
    batch_display: Callable[[Any], None] | None = None,
) -> Any:
    """Run one job as the settings say, against the simulator when asked.

    `progress(engine)` runs beside the job (to report on the live figures) and is
    cancelled when it ends; in batch mode `batch_display(run)` is called after each poll
    instead. The first SIGINT/SIGTERM stops gracefully (`on_stopping` is told); a second
    one exits at once — the output stays whole and resumable.
    """
    if settings.simulate:
        from apiproc.simulator import Simulator

        async with Simulator() as simulator:
            settings.request_url = simulator.messages_url
            return await _run_mode(settings, progress, on_stopping, batch_display)
    return await _run_mode(settings, progress, on_stopping, batch_display)


async def _run_mode(
    settings: Settings,
    progress: Progress | None,
    on_stopping: Callable[[str], None] | None,
    batch_display: Callable[[Any], None] | None,
) -> Any:
    if settings.mode == "batch":
        from apiproc.batch import run_batches

        provider = _provider(settings)
        return await run_batches(settings, provider, display=batch_display, on_stopping=on_stopping)
    refuse_while_batches_run(settings.output_path, settings.overwrite)
    return await _run(settings, progress, on_stopping)


def refuse_while_batches_run(output_path: str, overwrite: bool = False) -> None:
    """Online mode must not send requests that batches of the same output still hold;
    --overwrite also forgets the batch state of an output it empties."""
    if output_path == "-":
        return
    from apiproc.batch.journal import read_state, state_path

    path = state_path(output_path)
    if not os.path.exists(path):
        return
    state = read_state(path)
    if state.live() or state.unresolved():
        raise OutputError(
            f"{output_path} has batches still running ({path}): collect them with "
            "--mode batch, or cancel them with `apiproc batch cancel`, before sending online."
        )
    if overwrite:
        os.remove(path)


def _provider(settings: Settings) -> AnthropicProvider:
    return AnthropicProvider(
        api_key=settings.api_key,
        url=settings.request_url,
        version=settings.anthropic_version,
        betas=settings.anthropic_betas,
        transport=settings.transport,
        timeout=settings.timeout,
    )


def prepare_output(settings: Settings) -> Finished | None:
    """Start afresh, or repair and scan the existing output to resume from it."""
    if settings.output_path == "-":
        return None
    if settings.overwrite:
        start_afresh(settings.output_path)
    output = Path(settings.output_path)
    if not output.exists() or output.stat().st_size == 0:
        check_output_identity(
            settings.requests_path, settings.output_path, settings.output_format, force=True
        )
        return None
    check_output_identity(
        settings.requests_path, settings.output_path, settings.output_format, settings.force
    )
    finished = scan_finished(settings.output_path, settings.output_format, settings.retry_errored)
    if finished.repaired_bytes:
        log.warning(
            "repaired %s: removed a torn last line (%d bytes); its request is sent again",
            settings.output_path,
            finished.repaired_bytes,
        )
    if finished.dropped_errors:
        log.warning("removed %d errored results to send them again", finished.dropped_errors)
    return finished


async def _run(
    settings: Settings, progress: Progress | None, on_stopping: Callable[[str], None] | None
) -> RunStats:
    finished = prepare_output(settings)
    provider = _provider(settings)
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


@contextmanager
def _signals(engine: Engine, on_stopping: Callable[[str], None] | None) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def handle(name: str) -> None:
        if engine.stats.interrupted:
            os._exit(EXIT_ON_SIGNAL[name])  # second signal: every written line is whole
        engine.request_stop(name)
        if on_stopping is not None:
            on_stopping(name)

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
