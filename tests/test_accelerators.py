"""The accelerators (uvloop, orjson) change speed, never results."""

from __future__ import annotations

import asyncio
import builtins
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from conftest import request_line, run_cli, write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement
from without_accelerators import pythonpath

from apiproc import jsonio, loop
from apiproc.simulator import Simulator

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


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-05, 0.0001, 1e16, 1e15, 2.5e-8, 123456789012345678.0])
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_canonical_json_is_the_standard_librarys_bytes_with_orjson_too(value: Any) -> None:
    pytest.importorskip("orjson")
    try:
        expected: Any = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except UnicodeEncodeError as error:  # a lone surrogate: refused alike
        expected = type(error)
    try:
        written: Any = jsonio.dumps_canonical(value)
    except UnicodeEncodeError as error:
        written = type(error)
    assert written == expected


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


def test_the_default_install_brings_the_accelerators_on_common_platforms() -> None:
    wanted = {"orjson", "uvloop"} if sys.platform != "win32" else {"orjson"}
    common = platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64")
    if platform.python_implementation() != "CPython" or not common:
        pytest.skip("no wheels promised here: the standard library does the work")
    default = set()
    for line in metadata.requires("apiproc") or ():
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            default.add(requirement.name)
    assert wanted <= default


def test_a_run_without_the_accelerators_writes_what_a_run_with_them_writes(
    simulator: Simulator, tmp_path: Path
) -> None:
    rows = [
        request_line(1, metadata={"note": 'héllo ✓ "q"', "n": 1.5}),
        '{"model": "claude-haiku-4-5", "max_tokens": 8}',
        "not json at all",
        request_line(4, custom_id="naïve-✓"),
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    outputs = {}
    for name, env in (("with", {}), ("without", {"PYTHONPATH": pythonpath(None)})):
        output = tmp_path / f"{name}.jsonl"
        url = simulator.messages_url
        done = run_cli(
            "run", str(source), "-o", str(output), "--request-url", url, "--api-key", "sk-a",
            env=env,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr  # two bad lines
        outputs[name] = sorted(_comparable(line) for line in output.read_bytes().splitlines())
    assert outputs["with"] == outputs["without"]


def test_the_stand_ins_keep_the_accelerators_out_of_a_started_apiproc() -> None:
    probe = "import apiproc.jsonio as j, apiproc.loop as l; print(j.orjson, l._uvloop())"
    done = run_cli("-c", probe, module=False, env={"PYTHONPATH": pythonpath(None)})
    assert done.stdout.split() == ["None", "None"], done.stderr


def _comparable(line: bytes) -> bytes:
    """The line with what differs from answer to answer (ids) taken out."""
    record = json.loads(line)
    record.pop("request_id", None)
    message = record["result"].get("message")
    if message is not None:
        message.pop("id", None)
        message["content"] = len(message["content"])
    return json.dumps(record, sort_keys=True).encode()


def test_a_line_that_is_not_json_is_explained_as_without_orjson(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refusals = []
    for codec in (jsonio.orjson, None):
        monkeypatch.setattr(jsonio, "orjson", codec)
        with pytest.raises(ValueError) as refused:
            jsonio.loads(b'{"model": "claude-haiku-4-5", max_tokens: 8}')
        refusals.append(str(refused.value))
    assert refusals[0] == refusals[1]
