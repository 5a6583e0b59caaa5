"""A self-signed certificate for TLS tests (made with the openssl CLI)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` for localhost and 127.0.0.1, valid for a day."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
