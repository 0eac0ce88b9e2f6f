"""The simulator's limits per model class: each rate pool its own, as the API's are."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp

from apiproc.simulator import Simulator, SimulatorConfig

HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
STARTUP_TIMEOUT = 30.0


def body(model: str) -> dict:
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


async def requests_limit(session: aiohttp.ClientSession, url: str, model: str) -> tuple[int, str]:
    async with session.post(url, json=body(model), headers=HEADERS) as response:
        return response.status, response.headers["anthropic-ratelimit-requests-limit"]


def test_a_class_limit_applies_to_its_pool_only_and_its_counters_are_its_own() -> None:
    config = SimulatorConfig(
        requests_per_minute=2, class_limits={"haiku-4-5": {"requests_per_minute": 8}}
    )

    async def scenario() -> list[tuple[int, str]]:
        async with Simulator(config) as sim, aiohttp.ClientSession() as session:
            answers = [await requests_limit(session, sim.messages_url, "claude-haiku-4-5")]
            answers += [await requests_limit(session, sim.messages_url, "claude-sonnet-4-6")]
            for _ in range(3):
                answers.append(await requests_limit(session, sim.messages_url, "claude-sonnet-4-6"))
            stats = sim.stats.as_dict()["by_class"]
        assert stats["haiku-4-5"]["succeeded"] == 1
        assert stats["sonnet-4"]["succeeded"] == 2 and stats["sonnet-4"]["rate_limited"] == 2
        return answers

    answers = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert answers[0] == (200, "8")
    assert answers[1] == (200, "2")
    assert [status for status, _ in answers[2:]] == [200, 429, 429]


def test_simulate_takes_class_limits_from_a_limits_file(tmp_path: Path) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text('["claude-haiku-4-5"]\nrequests_per_minute = 16000\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "apiproc", "simulate", "--port", "0", "--limits-file", str(limits)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # blocks until the simulator says where it listens
        url = re.search(r"http://127\.0\.0\.1:\d+/v1/messages", line)
        assert url, line
        request = urllib.request.Request(
            url.group(0),
            data=json.dumps(body("claude-haiku-4-5")).encode(),
            headers={**HEADERS, "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=STARTUP_TIMEOUT) as response:
            assert response.headers["anthropic-ratelimit-requests-limit"] == "16000"
    finally:
        process.terminate()
        process.wait(timeout=STARTUP_TIMEOUT)
