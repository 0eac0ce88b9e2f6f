"""Ways to run a Simulator outside a test's own event loop.

    with SimulatorThread(SimulatorConfig(latency=0.01)) as sim:
        subprocess.run(["apiproc", "run", "in.jsonl", "--request-url", sim.messages_url])
    asyncio.run(serve_forever(config, ready=announce))  # announce(sim) once listening

``SimulatorThread`` serves subprocess tests from a background thread; ``serve_forever`` backs
``apiproc simulate`` and the benchmarks' simulator process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from apiproc.simulator.config import SimulatorConfig
from apiproc.simulator.server import Simulator


async def serve_forever(
    config: SimulatorConfig, ready: Callable[[Simulator], None] | None = None
) -> None:
    """Run a simulator until cancelled; ``ready(sim)`` is called once it is listening."""
    async with Simulator(config) as simulator:
        if ready is not None:
            ready(simulator)
        await asyncio.Event().wait()


class SimulatorThread:
    """A Simulator on its own event loop in a background thread, for subprocess tests.

    with SimulatorThread(SimulatorConfig(latency=0.01)) as sim:
        subprocess.run(["apiproc", "run", "in.jsonl", "--request-url", sim.messages_url,
                        "--api-key", "test"], timeout=30)
        assert sim.stats.succeeded == 10
    """

    def __init__(self, config: SimulatorConfig | None = None, *, timeout: float = 10.0) -> None:
        self._config = config if config is not None else SimulatorConfig()
        self._timeout = timeout
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apiproc-simulator", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._simulator: Simulator | None = None
        self._failure: BaseException | None = None

    def __enter__(self) -> Simulator:
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise RuntimeError(f"the simulator did not start within {self._timeout} s")
        if self._failure is not None or self._simulator is None:
            raise RuntimeError("the simulator failed to start") from self._failure
        return self._simulator

    def __exit__(self, *exc_info: object) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(self._timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # handed to __enter__, which re-raises it
            self._failure = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Simulator(self._config) as simulator:
            self._simulator = simulator
            self._ready.set()
            await self._stop.wait()
