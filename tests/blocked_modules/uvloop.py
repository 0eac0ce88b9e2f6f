"""Stands in for uvloop when the tests run without the accelerators: it cannot be imported."""

raise ImportError("uvloop is blocked: the tests run without the accelerators")
