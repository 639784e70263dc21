"""`python -m memlayer` is the `memlayer` command."""

from memlayer.cli import main

main()
