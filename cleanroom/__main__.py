"""`python -m cleanroom` runs the CLI."""

from cleanroom.cli import main

main()
