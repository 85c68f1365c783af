"""``python -m caravan``: the command line."""

from caravan.cli import main

main()
