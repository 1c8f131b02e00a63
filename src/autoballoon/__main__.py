"""``python -m autoballoon`` is the ``autoballoon`` command."""

from autoballoon.cli import main

main()
