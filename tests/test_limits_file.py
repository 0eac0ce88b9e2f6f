"""Reading `--limits-file`: TOML (or JSON), one table of per-minute limits per class."""

from __future__ import annotations

from pathlib import Path

import pytest

from apiproc.errors import SettingsError
from apiproc.limiter import Limits
from apiproc.limits_file import _toml_subset, read_limits_file

EXAMPLE = """\
# per model class
[haiku-4-5]
requests_per_minute = 4_000
output_tokens_per_minute = 800_000

["claude-sonnet-4-6"]   # a model id of the class
max-requests-per-minute = 1000
"""


def test_toml_gives_limits_by_class_in_either_spelling(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(EXAMPLE)
    assert read_limits_file(str(path)) == {
        "haiku-4-5": Limits(requests_per_minute=4_000, output_tokens_per_minute=800_000),
        "claude-sonnet-4-6": Limits(requests_per_minute=1_000),
    }


def test_the_reader_for_python_3_10_reads_the_same_tables_as_tomllib() -> None:
    tomllib = pytest.importorskip("tomllib")
    assert _toml_subset(EXAMPLE) == tomllib.loads(EXAMPLE)


def test_json_is_read_when_the_name_ends_in_json(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    path.write_text('{"sonnet-4": {"input_tokens_per_minute": 2000000}}')
    assert read_limits_file(str(path)) == {"sonnet-4": Limits(input_tokens_per_minute=2e6)}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[haiku-4-5]\nrequests_per_hour = 10\n", "unknown key"),
        ("[haiku-4-5]\nrequests_per_minute = 0\n", "positive"),
        ("requests_per_minute = 10\n", "table"),
        ("[haiku-4-5\n", "not valid"),
    ],
)
def test_a_wrong_file_says_what_to_fix(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=says):
        read_limits_file(str(path))


def test_a_missing_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="Cannot read"):
        read_limits_file(str(tmp_path / "none.toml"))
