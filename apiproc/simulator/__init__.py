"""A local fake of the Anthropic Messages API, on a real HTTP server bound to 127.0.0.1.

    async with Simulator(SimulatorConfig(requests_per_minute=60)) as sim:
        async with aiohttp.ClientSession() as session:
            await session.post(sim.messages_url, json=body, headers=headers)

Used by ``--simulate``, the examples, the tests and the benchmarks. It follows the
documented API (shared/reference/anthropic-api.md, sections A-C), not what would be
convenient for a client:

* ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` (free, outside the Messages
  limits), with the documented headers, validation and error shape (``server``,
  ``validation``). ``"stream": true`` answers with the documented server-sent events, pings
  in silences, and output tokens charged as they are generated (``streaming``).
* Both API versions, each with its own body rules (``anthropic-version`` 2023-06-01, as
  2023-01-01, and 2026-10-21, which refuses sampling parameters, assistant documents and
  user citations); the key as ``x-api-key`` or ``Authorization: Bearer`` (``x-api-key``
  wins); the 2026 models, and 404 for a model past its end of life on the simulated date
  (``SimulatorConfig.today``), so the official SDK 2.x talks to it as to the API.
* Rate limits are continuously refilled token buckets (requests, input tokens, output
  tokens), one set per model class, as the docs say limits apply per model (``limits``,
  ``models``). Input tokens are ``input_tokens + cache_creation_input_tokens``; cache reads
  count only for the models the docs mark with a dagger (Claude Haiku 3.5 in 2026; Claude
  Haiku 3 in 2025, which the 2026 tables no longer list). Output tokens are either
  charged as generated (2026 docs) or reserved from ``max_tokens`` (2025 docs).
* Prompt caching writes a prefix once the writing response begins, so concurrent identical
  prefixes all pay the write, as the docs warn (``cache``).
* Faults (429, 529, 500, an HTML 502, dropped and stalled connections) are injected from a
  seeded random generator (``faults``). A streamed answer may instead stall, or end in an
  ``overloaded_error`` event, partway through.
* Message Batches (create, retrieve, list, cancel, delete, results) with their own rate
  limits, a processing time, and shares of errored and expired results (``batches``,
  ``batch_routes``); every batch created is recorded with its ids.

The simulator's tokenizer is deliberately not cl100k, so a client's estimate has to learn
from the real usage (``tokens``): text is split by the regex ``\\w+|[^\\w\\s]`` and each
piece counts ``ceil(len(piece) / 3)`` tokens. A request adds 3 tokens per message and 5 per
request; images and documents are 1,500 tokens each; tools, tool_use and other non-text
blocks count as their canonical JSON.

Benchmarks in another process read ``GET /_sim/stats`` and reset with ``POST /_sim/reset``;
``GET /_sim/batches`` lists every batch created with its ids.
Only the names below are public; the modules are the package's own business.
"""

from __future__ import annotations

from apiproc.simulator.batches import BatchRecord
from apiproc.simulator.config import SeenRequest, SimulatorConfig, SimulatorStats
from apiproc.simulator.runners import SimulatorThread, serve_forever
from apiproc.simulator.server import Simulator
from apiproc.simulator.tokens import count_tokens

__all__ = [
    "BatchRecord",
    "SeenRequest",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "SimulatorThread",
    "count_tokens",
    "serve_forever",
]
