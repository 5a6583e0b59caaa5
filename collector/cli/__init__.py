"""The ``prodloop`` command line: commands, shared options, renderers."""
