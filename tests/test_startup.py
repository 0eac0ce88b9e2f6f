"""Start-up loads only what an online run uses: every module imported costs every run."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Modules of other commands and modes, which the CLI loads only when they are chosen.
NOT_AT_START = (
    "apiproc.batch.commands",
    "apiproc.batch.journal",
    "apiproc.batch.runner",
    "apiproc.preflight",
    "apiproc.providers.batches",
    "apiproc.simulator",
    "rich",
    "tiktoken",
)


def loaded_after(code: str) -> set[str]:
    """The modules loaded by a fresh interpreter after running `code`."""
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def unwanted(loaded: set[str]) -> list[str]:
    return sorted(
        name for name in loaded if any(name == m or name.startswith(m + ".") for m in NOT_AT_START)
    )


def test_the_command_line_loads_no_other_mode() -> None:
    assert unwanted(loaded_after("import apiproc.cli")) == []


def test_an_online_run_checks_for_batches_without_loading_batch_mode(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    code = (
        "from apiproc.runner import refuse_while_batches_run\n"
        f"refuse_while_batches_run({str(output)!r}, overwrite=True)"
    )
    assert unwanted(loaded_after(code)) == []


@pytest.mark.parametrize("name", ["Settings", "Limits", "Result", "ResultWriter", "RateLimiter"])
def test_the_package_still_offers_its_public_pieces(name: str) -> None:
    import apiproc

    assert getattr(apiproc, name).__name__ == name


def test_the_entry_point_leaves_the_collector_as_it_found_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from apiproc.__main__ import main

    monkeypatch.setattr(sys, "argv", ["apiproc", "--version"])
    try:
        with pytest.raises(SystemExit):
            main()
        assert gc.isenabled()
        gc.disable()
        with pytest.raises(SystemExit):
            main()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
    assert "apiproc, version" in capsys.readouterr().out
