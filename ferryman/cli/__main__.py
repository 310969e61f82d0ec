"""``python -m ferryman.cli`` runs the ``ferryman`` command."""

from ferryman.cli.main import main

main()
