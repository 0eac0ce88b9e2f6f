"""Run a coroutine on the fastest event loop available.

    result = run(main())

uvloop (installed with apiproc where it ships wheels: CPython on 64-bit x86 and ARM,
not Windows) cuts the event loop's own cost per request; without it the standard
asyncio loop is used, with the same behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    # The run starts outside the `except ImportError` below, so that no error of the run
    # carries "No module named uvloop" as its context.
    uvloop = _uvloop()
    if uvloop is None:
        return asyncio.run(main)
    return uvloop.run(main)


def _uvloop() -> ModuleType | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop
