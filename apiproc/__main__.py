"""`python -m apiproc` is the `apiproc` command."""

from __future__ import annotations

import gc


def main() -> None:
    """Load the command line with the cyclic collector paused, then run it."""
    # The modules' objects live as long as the process: scanning them for garbage is wasted,
    # while loading them and in every later collection (the run freezes its own start-up too).
    collecting = gc.isenabled()
    gc.disable()
    try:
        from apiproc.cli import main as command
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    command()


if __name__ == "__main__":
    main()
