"""Stands in for orjson when the tests run without the accelerators: it cannot be imported."""

raise ImportError("orjson is blocked: the tests run without the accelerators")
