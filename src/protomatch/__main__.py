"""``python -m protomatch``: the command-line interface."""

from protomatch.cli import main

main()
