"""`python -m apiproc` is the `apiproc` command."""

from apiproc.cli import main

main()
