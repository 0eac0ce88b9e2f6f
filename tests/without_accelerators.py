"""`APIPROC_TEST_WITHOUT_ACCELERATORS=1 pytest` runs the suite on the pure-Python fallbacks.

uvloop and orjson then cannot be imported, neither in the test process nor in any
apiproc it starts (their stand-ins in blocked_modules/ come first on PYTHONPATH), so
the standard asyncio loop and the standard json module do all the work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ACCELERATORS = ("orjson", "uvloop")
STAND_INS = Path(__file__).resolve().parent / "blocked_modules"


def requested() -> bool:
    return os.environ.get("APIPROC_TEST_WITHOUT_ACCELERATORS", "") not in ("", "0")


def pythonpath(existing: str | None) -> str:
    """PYTHONPATH with the stand-ins first."""
    return os.pathsep.join(part for part in (str(STAND_INS), existing) if part)


if requested():
    for name in ACCELERATORS:
        sys.modules[name] = None  # type: ignore[assignment]  # import now raises ImportError
    os.environ["PYTHONPATH"] = pythonpath(os.environ.get("PYTHONPATH"))
