"""``python -m mdctr``: the command line (what ``torchrun -m mdctr train ...`` starts)."""

from mdctr.cli import main

main()
