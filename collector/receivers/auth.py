"""Bearer-token authentication of the receivers' requests (HTTP ``Authorization``, gRPC metadata)."""

from __future__ import annotations

import hmac


def bearer_matches(credentials: str | bytes | None, token: bytes) -> bool:
    """Is ``credentials`` (an ``Authorization`` value) ``Bearer <token>``?

    The scheme is case-insensitive (RFC 7235), spaces around the token are tolerated; the
    token is compared case-sensitively and in constant time."""
    if isinstance(credentials, str):
        credentials = credentials.encode("utf-8", "surrogateescape")
    parts = (credentials or b"").split(None, 1)
    scheme = parts[0] if parts else b""
    got = parts[1].strip() if len(parts) == 2 else b""
    same = hmac.compare_digest(got, token)  # always compared: no early exit on the scheme
    return same and scheme.lower() == b"bearer"
