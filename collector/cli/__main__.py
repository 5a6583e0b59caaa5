"""``python -m collector.cli``: the ``prodloop`` command, as the subprocess tests and the image run it."""

from collector.cli.commands import main

main()
