"""``python -m launcher``: the ``jobmesh`` command."""

from launcher.cli import main

main()
