"""Run a coroutine on the fastest event loop available.

    result = run(main())

uvloop (an optional accelerator: `pip install apiproc[fast]`) cuts the event loop's
own cost per request; without it the standard asyncio loop is used, with the same
behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
