"""The engine in-process: what happens when our own code fails mid-request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from conftest import request_line, write_jsonl

from apiproc.engine import Engine, _Slots, feed_file
from apiproc.providers import AnthropicProvider
from apiproc.providers.base import HttpRequest
from apiproc.results import ResultWriter
from apiproc.settings import Settings
from apiproc.simulator import Simulator


class BrokenProvider(AnthropicProvider):
    def request(self, params: dict) -> HttpRequest:
        if "explode" in json.dumps(params):
            raise RuntimeError("cannot serialise")
        return super().request(params)


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
    async def scenario() -> list[tuple[str, bool]]:
        slots: _Slots[str] = _Slots(1)
        assert slots.take() and not slots.take()
        order: list[tuple[str, bool]] = []

        async def waiter(name: str) -> None:
            order.append((name, await slots.wait(name)))

        first = asyncio.create_task(waiter("first"))
        cancelled = asyncio.create_task(waiter("cancelled"))
        middle = asyncio.create_task(waiter("middle"))
        last = asyncio.create_task(waiter("last"))
        await asyncio.sleep(0)
        cancelled.cancel()
        slots.give()  # to "first", to start its own work
        await asyncio.wait_for(first, 1)
        assert slots.pass_on() == "middle"  # past the cancelled one, done with this slot
        await asyncio.wait_for(middle, 1)
        slots.give()  # to "last"
        await asyncio.wait_for(last, 1)
        assert cancelled.cancelled()
        assert slots.pass_on() is None  # nobody waits
        slots.give()
        assert slots.take() and not slots.take()  # one slot, and only one, is free again
        return order

    assert asyncio.run(scenario()) == [("first", False), ("middle", True), ("last", False)]


def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_goes_to_the_next() -> None:
    async def scenario() -> list[tuple[str, bool]]:
        slots: _Slots[str] = _Slots(1)
        assert slots.take()
        order: list[tuple[str, bool]] = []

        async def waiter(name: str) -> None:
            order.append((name, await slots.wait(name)))

        unlucky = asyncio.create_task(waiter("unlucky"))
        taken = asyncio.create_task(waiter("taken"))
        after = asyncio.create_task(waiter("after"))
        await asyncio.sleep(0)
        slots.give()  # to "unlucky", which is cancelled before it runs: the slot goes on
        unlucky.cancel()
        await asyncio.wait_for(taken, 1)
        assert slots.pass_on() == "after"
        taken_cancelled = asyncio.create_task(waiter("cancelled after its work was taken"))
        await asyncio.sleep(0)
        assert slots.pass_on() == "cancelled after its work was taken"
        taken_cancelled.cancel()
        await asyncio.gather(unlucky, taken_cancelled, after, return_exceptions=True)
        slots.give()  # the one slot, held all along by whoever had "taken"'s work
        assert slots.take() and not slots.take()
        return order

    assert asyncio.run(scenario()) == [("taken", False), ("after", True)]
