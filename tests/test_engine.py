"""The engine in-process: what happens when our own code fails mid-request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from conftest import request_line, write_jsonl

from apiproc.engine import Engine, _Slots, feed_file
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


def test_in_flight_slots_go_to_waiters_in_order_and_survive_a_cancelled_waiter() -> None:
    async def scenario() -> list[str]:
        slots = _Slots(1)
        assert slots.take() and not slots.take()
        order: list[str] = []

        async def waiter(name: str) -> None:
            await slots.wait()
            order.append(name)

        first = asyncio.create_task(waiter("first"))
        cancelled = asyncio.create_task(waiter("cancelled"))
        last = asyncio.create_task(waiter("last"))
        await asyncio.sleep(0)
        cancelled.cancel()
        slots.give()  # to "first"
        await asyncio.wait_for(first, 1)
        slots.give()  # past the cancelled one, to "last"
        await asyncio.wait_for(last, 1)
        assert cancelled.cancelled()
        slots.give()
        assert slots.take() and not slots.take()  # one slot, and only one, is free again
        return order

    assert asyncio.run(scenario()) == ["first", "last"]
