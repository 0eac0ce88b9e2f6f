"""apiproc's own work per request, without HTTP: the engine against a session that answers at once.

    python bench/engine.py                   # CPU microseconds per request, medians of 5
    python bench/engine.py --instructions    # user-space instructions per request (valgrind)

The whole pipeline runs as in `apiproc run` (reading, estimating, admission, the limiter,
classifying, recording, pricing, learning), on uvloop when it is installed, but each POST
is answered at once, in-process, with a fixed Messages API answer and its rate-limit
headers. What is left is the client's own cost, which bench/overhead.py can only see
beside aiohttp's. The instruction count is (count at 4,000 requests - count at 2,000) /
2,000 under valgrind's cachegrind: the machine's load does not move it, so it is the
figure to compare between two versions of a change.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import (
    CACHEGRIND,
    COUNTED_REQUESTS,
    client_environment,
    counted_instructions,
    median,
    per_request_and_fixed,
    small_requests,
    write_workload,
)

TIMED_REQUESTS = 20_000
UNLIMITED = {"requests_per_minute": 1e9, "input_tokens_per_minute": 1e12}
ANSWER = json.dumps(
    {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "the day is new and the sim ran ok " * 4}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 19,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 53,
            "service_tier": "standard",
        },
    }
).encode()


def answer_headers() -> CIMultiDictProxy[str]:
    headers = CIMultiDict({"request-id": "req_01", "content-type": "application/json"})
    for name, limit in (("requests", 1e9), ("input-tokens", 1e12), ("output-tokens", 1e12)):
        headers[f"anthropic-ratelimit-{name}-limit"] = f"{limit:.0f}"
        headers[f"anthropic-ratelimit-{name}-remaining"] = f"{limit - 1:.0f}"
        headers[f"anthropic-ratelimit-{name}-reset"] = "2026-12-08T00:00:00Z"
    headers["content-length"] = str(len(ANSWER))
    return CIMultiDictProxy(headers)


class InstantResponse:
    status = 200

    def __init__(self, headers: CIMultiDictProxy[str]) -> None:
        self.headers = headers

    async def read(self) -> bytes:
        return ANSWER


class InstantPost:
    """What `session.post()` gives: an async context manager, here one that yields once
    to the loop (as a real answer would) and answers."""

    def __init__(self, response: InstantResponse) -> None:
        self._response = response

    async def __aenter__(self) -> InstantResponse:
        await asyncio.sleep(0)
        return self._response

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class InstantSession:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._response = InstantResponse(answer_headers())

    def post(self, url: str, **kwargs: Any) -> InstantPost:
        return InstantPost(self._response)

    async def __aenter__(self) -> InstantSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def run_once(workload: Path, requests: int) -> float:
    """One run of the engine over `workload`: CPU seconds."""
    aiohttp.ClientSession = InstantSession  # type: ignore[misc]
    aiohttp.TCPConnector = lambda *args, **kwargs: None  # type: ignore[assignment,misc]
    from apiproc import loop
    from apiproc.engine import Engine, feed_file
    from apiproc.limiter import Limits
    from apiproc.results import ResultWriter
    from apiproc.runner import provider_of
    from apiproc.settings import Settings

    with tempfile.TemporaryDirectory(prefix="apiproc-engine-") as folder:
        settings = Settings(
            requests_path=str(workload),
            output_path=str(Path(folder) / "out.jsonl"),
            api_key="sk-bench",
            request_url="http://127.0.0.1:9/v1/messages",
            limits=Limits(**UNLIMITED),
            ramp=False,
            max_concurrency=64,
        )
        with ResultWriter(settings.output_path) as writer:
            engine = Engine(settings, provider_of(settings), writer)
            started = time.process_time()
            stats = loop.run(engine.run(lambda e: feed_file(e, str(workload))))
            spent = time.process_time() - started
    if stats.succeeded != requests:
        raise RuntimeError(f"{stats.succeeded} of {requests} succeeded")
    return spent


def workload(folder: Path, requests: int) -> Path:
    return write_workload(folder / f"{requests}.jsonl", small_requests(requests))


def once(
    path: Path, requests: int, wrapper: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """One run in a process of its own (under `wrapper`), with bytecode cached as a user's is."""
    command = [*wrapper, sys.executable, __file__, "--once", str(path), str(requests)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=900, check=False, env=client_environment()
    )


def instructions(folder: Path) -> float:
    """User-space instructions per request: counted runs at two lengths, differenced."""
    counted = {}
    for requests in COUNTED_REQUESTS:
        done = once(workload(folder, requests), requests, CACHEGRIND)
        if done.returncode != 0:
            raise RuntimeError(f"the counted run failed: {done.stderr[-2000:]}")
        counted[requests] = counted_instructions(done.stderr)
    return per_request_and_fixed(counted)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count under valgrind")
    parser.add_argument("--once", nargs=2, metavar=("WORKLOAD", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)  # as a run sets it
    if args.once:
        run_once(Path(args.once[0]), int(args.once[1]))
        return
    with tempfile.TemporaryDirectory(prefix="apiproc-engine-") as folder:
        if args.instructions:
            first = COUNTED_REQUESTS[0]
            once(workload(Path(folder), first), first)  # compiles a fresh checkout's modules
            print(f"engine alone: {instructions(Path(folder)) / 1e3:.1f} k instructions/request")
            return
        path = workload(Path(folder), TIMED_REQUESTS)
        runs = [run_once(path, TIMED_REQUESTS) * 1e6 / TIMED_REQUESTS for _ in range(args.repeat)]
        figures = ", ".join(f"{run:.1f}" for run in runs)
        print(f"engine alone: {median(runs):.1f} us CPU/request, median of {len(runs)} ({figures})")


if __name__ == "__main__":
    main()
