"""Batch mode: the provider's batch service does the parallel work at half the price.

    stats = await run_batches(settings, provider, display=show)

`runner.py` holds the loop (submit, poll, collect, send again), `journal.py` the state
file that makes it resumable, `planner.py` the split of the input into batches,
`collect.py` the results, `calls.py` the pacing of the batch endpoints. Nothing here
names an API: providers map their batch service onto `apiproc.providers.batches`.
"""

from __future__ import annotations

from apiproc.batch.journal import state_path
from apiproc.batch.runner import CANCEL, COLLECT, RUN, AmbiguousBatch, BatchRun, run_batches
from apiproc.batch.stats import BatchStats

__all__ = [
    "CANCEL",
    "COLLECT",
    "RUN",
    "AmbiguousBatch",
    "BatchRun",
    "BatchStats",
    "run_batches",
    "state_path",
]
