"""The engine in-process: what happens when our own code fails mid-request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from conftest import request_line, write_jsonl

from apiproc.engine import Engine, feed_file
from apiproc.providers import AnthropicProvider
from apiproc.results import ResultWriter
from apiproc.settings import Settings
from apiproc.simulator import Simulator


class BrokenProvider(AnthropicProvider):
    def body(self, params: dict) -> bytes:
        if "explode" in json.dumps(params):
            raise RuntimeError("cannot serialise")
        return super().body(params)


def test_an_internal_error_records_the_job_as_errored_and_the_run_goes_on(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            request_line(1),
            request_line(2, system="explode"),
            request_line(3),
        ],
    )
    output = tmp_path / "out.jsonl"

    async def scenario() -> None:
        async with Simulator() as simulator:
            settings = Settings(
                str(source), str(output), "sk-test", request_url=simulator.messages_url
            )
            provider = BrokenProvider("sk-test", simulator.messages_url)
            with ResultWriter(str(output)) as writer:
                engine = Engine(settings, provider, writer)
                await asyncio.wait_for(engine.run(lambda e: feed_file(e, str(source))), 30)

    asyncio.run(scenario())
    records = {r["custom_id"]: r for r in map(json.loads, output.read_text().splitlines())}
    assert records["line-2"]["result"]["error"]["error"]["type"] == "internal_error"
    assert records["line-1"]["result"]["type"] == records["line-3"]["result"]["type"] == "succeeded"
