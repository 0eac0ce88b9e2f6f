"""The optional accelerators change speed, never results."""

from __future__ import annotations

import asyncio
import builtins
import json
from typing import Any

import pytest

from apiproc import jsonio, loop

RECORD: dict[str, Any] = {
    "custom_id": "line-1",
    "result": {"type": "succeeded", "message": {"content": [{"text": 'héllo ✓ "q"\n'}]}},
    "metadata": {"n": 1, "f": 1.5, "none": None, "list": [1, 2, True]},
}


def test_the_pure_python_codec_writes_what_orjson_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = jsonio.dumps_line(RECORD)
    monkeypatch.setattr(jsonio, "orjson", None)
    pure = jsonio.dumps_line(RECORD)
    assert pure == fast
    assert json.loads(pure) == RECORD
    assert jsonio.loads(pure) == RECORD


def test_without_uvloop_the_standard_loop_runs_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)

    async def which_loop() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert loop.run(which_loop()).startswith("asyncio")


def test_an_error_of_the_run_carries_no_uvloop_import_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)

    async def fails() -> None:
        raise RuntimeError("a bug of ours")

    with pytest.raises(RuntimeError) as raised:
        loop.run(fails())
    assert raised.value.__context__ is None
