"""``python -m smartlogs.cli``: the ``smartlogs`` command."""

from smartlogs.cli import main

main()
