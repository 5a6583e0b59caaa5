"""Is a Kafka broker there?  The wait at start-up (:func:`wait_for_brokers`) and readiness (:class:`BrokerProbe`)."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Sequence

from collector.errors import BrokerError, ConfigError
from collector.exporters.kafka.compat import collect_hosts
from collector.exporters.kafka.options import KafkaOptions

log = logging.getLogger("prodloop.kafka")


def wait_for_brokers(
    servers: Sequence[str],
    stop: threading.Event,
    timeout_s: float,
    *,
    connect_timeout_s: float = 2.0,
    max_delay_s: float = 5.0,
) -> bool:
    """Wait until one bootstrap server accepts a TCP connection.

    kafka-python's clients block in their constructors (about 60 s) while no broker answers,
    deaf to SIGTERM, and then fail with an error about whichever client came first.  This
    waits in the open instead: a warning every 10 s names each server and why it failed,
    ``stop`` ends the wait (returns False), and after ``timeout_s`` it fails naming them all.
    """
    try:
        hosts = [(h, p) for h, p, _ in collect_hosts(list(servers), randomize=False)]
    except ValueError as exc:
        raise ConfigError(f"kafka.bootstrap_servers: bad host:port in {list(servers)}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    delay, warned_at = 0.2, float("-inf")
    while True:
        problems = []
        for host, port in hosts:
            try:
                socket.create_connection((host, port), timeout=connect_timeout_s).close()
                return True
            except OSError as exc:
                problems.append(f"{host}:{port}: {exc.strerror or exc}")
        now = time.monotonic()
        if now >= deadline:
            raise BrokerError(
                f"no Kafka broker reachable within {timeout_s:g} s (kafka.startup_timeout_seconds): "
                + "; ".join(problems)
            )
        if now - warned_at >= 10:
            log.warning("waiting for Kafka (%s)", "; ".join(problems))
            warned_at = now
        if stop.wait(min(delay, deadline - now)):
            return False
        delay = min(delay * 2, max_delay_s)


_API_VERSIONS_V0 = struct.pack(">hhih", 18, 0, 0x5052, len(b"prodloop-probe")) + b"prodloop-probe"


class BrokerProbe:
    """Does a bootstrap server answer Kafka requests?  For readiness (``/readyz``).

    Every ``interval_s``, on its own thread, each bootstrap server in turn is sent an
    ApiVersions request (answered before SASL authentication; over TLS for SSL and SASL_SSL),
    at most ``timeout_s`` each, until one answers.  :meth:`problem` is the last outcome: None,
    or each server and why it failed.  A change is logged once.
    """

    def __init__(self, options: KafkaOptions, *, interval_s: float = 2.0, timeout_s: float = 2.0) -> None:
        try:
            self._hosts = [
                (h, p) for h, p, _ in collect_hosts(list(options.bootstrap_servers), randomize=False)
            ]
        except ValueError as exc:
            raise ConfigError(
                f"kafka.bootstrap_servers: bad host:port in {list(options.bootstrap_servers)}: {exc}"
            ) from exc
        self._options = options
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._problem: str | None = "not probed yet"
        self._ctx: ssl.SSLContext | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kafka-probe", daemon=True)

    def start(self) -> BrokerProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.timeout_s * max(1, len(self._hosts)))

    def problem(self) -> str | None:
        return self._problem

    def _loop(self) -> None:
        first = True
        while True:
            problem = self.probe()
            if problem is not None and (first or self._problem is None):
                log.warning("Kafka broker unreachable: %s", problem)
            elif problem is None and not first and self._problem is not None:
                log.info("Kafka broker answering again")
            self._problem, first = problem, False
            if self._stop.wait(self.interval_s):
                return

    def probe(self) -> str | None:
        """One round: None if a server answered, else each server and why it did not."""
        problems = []
        for host, port in self._hosts:
            try:
                self._ask(host, port)
                return None
            except (OSError, ValueError) as exc:  # ssl.SSLError and TimeoutError are OSErrors
                problems.append(f"{host}:{port}: {getattr(exc, 'strerror', None) or exc}")
        return "; ".join(problems)

    def _tls(self) -> ssl.SSLContext:
        if self._ctx is None:
            o = self._options
            ctx = ssl.create_default_context(cafile=o.ssl_cafile)
            ctx.check_hostname = o.ssl_check_hostname
            if o.ssl_certfile:
                ctx.load_cert_chain(o.ssl_certfile, o.ssl_keyfile)
            self._ctx = ctx
        return self._ctx

    def _ask(self, host: str, port: int) -> None:
        deadline = time.monotonic() + self.timeout_s

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {self.timeout_s:g} s")
            return remaining

        sock = socket.create_connection((host, port), timeout=left())
        try:
            if self._options.security_protocol in ("SSL", "SASL_SSL"):
                sock = self._tls().wrap_socket(sock, server_hostname=host)  # takes over the socket
            sock.settimeout(left())
            sock.sendall(struct.pack(">i", len(_API_VERSIONS_V0)) + _API_VERSIONS_V0)
            head = b""
            while len(head) < 8:  # the size and the correlation id of the response
                sock.settimeout(left())
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    raise ConnectionError("closed the connection without answering")
                head += chunk
            size, correlation = struct.unpack(">ii", head)
            if correlation != 0x5052 or size < 4:
                raise ValueError("answered something that is not a Kafka ApiVersions response")
        finally:
            sock.close()
