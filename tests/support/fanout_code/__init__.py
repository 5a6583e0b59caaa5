"""Code the fan-out generator (tests/support/fanout.py) runs, so recorded exceptions carry real
frames of real files: ``store`` raises, ``worker`` wraps it, ``api`` fans out to workers."""
