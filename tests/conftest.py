"""Shared helpers: a simulator on 127.0.0.1 and the CLI run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import without_accelerators  # noqa: F401  (before apiproc: it may block the accelerators)

from apiproc.simulator import Simulator, SimulatorConfig, SimulatorThread

ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT = 120


def request_line(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"Say something about the number {n}."}],
        **extra,
    }


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, module: bool = True
) -> subprocess.CompletedProcess[str]:
    """`python -m apiproc ARGS` (or the classic shim) with a bounded run time."""
    command = [sys.executable, "-m", "apiproc", *args] if module else [sys.executable, *args]
    environment = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    environment.update(env or {})
    return subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=ROOT,
        env=environment,
        check=False,
    )


def run_against(
    simulator: Simulator, source: Path, output: Path | str, *extra: str, key: str
) -> subprocess.CompletedProcess[str]:
    """`apiproc run SOURCE -o OUTPUT` pointed at `simulator` with `key`."""
    url = simulator.messages_url
    return run_cli(
        "run", str(source), "-o", str(output), "--request-url", url, "--api-key", key, *extra
    )


@pytest.fixture
def simulator(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    """A simulator in a background thread; configure with @pytest.mark.simulator(...)."""
    marker = request.node.get_closest_marker("simulator")
    config = SimulatorConfig(**(marker.kwargs if marker else {}))
    with SimulatorThread(config) as running:
        yield running


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "simulator(**config): SimulatorConfig for the fixture")
