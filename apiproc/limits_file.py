"""`--limits-file`: the user's rate limits per model class, in TOML or JSON.

    limits = read_limits_file("limits.toml")     # {"haiku-4-5": Limits(...), ...}

One table per class, named by the class (`haiku-4-5`, `sonnet-4`, ...) or by a model id
of the class (`claude-sonnet-4-6`); keys are the per-minute limits:

    [haiku-4-5]
    requests_per_minute = 4000
    output_tokens_per_minute = 800_000

    [sonnet-4]
    requests_per_minute = 1000

A file whose name ends in `.json` is read as JSON of the same shape
(`{"haiku-4-5": {"requests_per_minute": 4000}}`). Keys may also be spelled like the
flags (`max-requests-per-minute`). Python 3.10 has no TOML reader, so there the small
subset above (tables of `key = number`, comments) is read by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from apiproc.errors import SettingsError
from apiproc.limiter import Limits

KEYS = (
    "requests_per_minute",
    "input_tokens_per_minute",
    "output_tokens_per_minute",
    "tokens_per_minute",
)
_TABLE = re.compile(r'^\[\s*(?:"(?P<quoted>[^"]+)"|(?P<bare>[A-Za-z0-9_.-]+))\s*\]$')
_PAIR = re.compile(r"^(?P<key>[A-Za-z0-9_-]+)\s*=\s*(?P<value>[0-9_.eE+]+)$")


def read_limits_file(path: str) -> dict[str, Limits]:
    """The limits in `path`, by class (or model) name; SettingsError saying what to fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SettingsError(f"Cannot read the limits file {path}: {error.strerror}.") from None
    try:
        tables = json.loads(text) if path.endswith(".json") else _toml(text)
    except ValueError as error:
        raise SettingsError(f"The limits file {path} is not valid: {error}.") from None
    if not isinstance(tables, dict):
        raise SettingsError(f"The limits file {path} must hold one table per model class.")
    return {str(name): _limits(path, str(name), table) for name, table in tables.items()}


def _limits(path: str, name: str, table: Any) -> Limits:
    if not isinstance(table, dict):
        raise SettingsError(f"In {path}, [{name}] must be a table of per-minute limits.")
    values: dict[str, float] = {}
    for key, value in table.items():
        field = key.replace("-", "_").removeprefix("max_")
        if field not in KEYS:
            raise SettingsError(
                f"In {path}, [{name}] has an unknown key {key!r}; use {', '.join(KEYS)}."
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise SettingsError(f"In {path}, [{name}] {key} must be a positive number.")
        values[field] = float(value)
    return Limits(**values)


def _toml(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return _toml_subset(text)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(str(error)) from None


def _toml_subset(text: str) -> dict[str, Any]:
    """Tables of `key = number` with comments: all a limits file needs."""
    tables: dict[str, dict[str, float]] = {}
    current: dict[str, float] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if table := _TABLE.match(line):
            current = tables.setdefault(table["quoted"] or table["bare"], {})
        elif (pair := _PAIR.match(line)) and current is not None:
            current[pair["key"]] = float(pair["value"].replace("_", ""))
        else:
            raise ValueError(f"line {number} is not a [table] or a key = number")
    return tables
