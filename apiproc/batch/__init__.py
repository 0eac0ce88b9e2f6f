"""Batch mode: the provider's batch service does the parallel work at half the price.

    stats = await run_batches(settings, provider, display=show)

`runner.py` holds the loop (submit, poll, collect, send again), `journal.py` the state
file that makes it resumable, `planner.py` the split of the input into batches,
`collect.py` the results, `calls.py` the pacing of the batch endpoints. Nothing here
names an API: providers map their batch service onto `apiproc.providers.batches`.
"""

from __future__ import annotations

from apiproc.lazy import lazy_exports

# What the package offers, by the module that holds it: imported on first use, so that
# an online run asking only whether batches are pending does not load batch mode.
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
_HOMES = {
    "CANCEL": "runner",
    "COLLECT": "runner",
    "RUN": "runner",
    "AmbiguousBatch": "runner",
    "BatchRun": "runner",
    "BatchStats": "stats",
    "run_batches": "runner",
}


def state_path(output_path: str) -> str:
    """The batch state file of an output (kept here: an online run checks for it)."""
    return f"{output_path}.apiproc-batches.jsonl"


__getattr__ = lazy_exports(__name__, _HOMES)
