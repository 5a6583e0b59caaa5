"""A stdlib threading HTTP server that speaks TLS when given a context: the ops server's
(``/metrics``, ``/healthz``, ``/readyz``; few, short requests).  The receivers' HTTP server is
:mod:`collector.receivers.http`."""

from __future__ import annotations

import socket
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TlsThreadingServer(ThreadingHTTPServer):
    """A threading HTTP server on IPv4 or IPv6, speaking TLS only when given a context."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None
    ) -> None:
        self.tls = tls
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:  # the handshake happens in the connection's thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr
