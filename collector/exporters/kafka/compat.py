"""kafka-python 3.0.12, imported once and patched: the one place prodloop imports ``kafka``.

Importing this module silences the library's own deprecation warnings (it loads its protocol
schemas with ``importlib.resources.read_text``, deprecated since Python 3.11) and mends three
of its defects: a leaked socket per refused connection, 4 KiB socket reads, and two copies of
every fetched byte.  The rest of the adapter takes its kafka-python names from here, so the
patches are in place before any client exists.
"""

from __future__ import annotations

import logging
import ssl
import warnings
from collections.abc import Callable
from typing import Any

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "read_text is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", "open_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import MemberToRemove
    from kafka.cluster import collect_hosts
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.errors import FencedInstanceIdError, KafkaError, NoError
    from kafka.structs import OffsetAndMetadata

__all__ = [
    "ConsumerRebalanceListener",
    "FencedInstanceIdError",
    "KafkaAdminClient",
    "KafkaConsumer",
    "KafkaError",
    "KafkaProducer",
    "MemberToRemove",
    "NoError",
    "OffsetAndMetadata",
    "TopicPartition",
    "collect_hosts",
]

log = logging.getLogger("prodloop.kafka")

try:  # pragma: no cover - depends on the installed kafka-python layout
    from kafka.net.inet import KafkaNetSocket

    def _close_socket_on_failed_connect() -> None:
        """kafka-python 3.0.12 leaks the socket of a refused connection; close it."""
        original = KafkaNetSocket.sock_connect
        if getattr(original, "_prodloop_closes_on_failure", False):
            return

        async def sock_connect(self: Any, net: Any, sock: Any, sockaddr: Any, timeout_at: Any = None) -> Any:
            try:
                return await original(self, net, sock, sockaddr, timeout_at=timeout_at)
            except BaseException:
                sock.close()
                raise

        sock_connect._prodloop_closes_on_failure = True  # type: ignore[attr-defined]
        KafkaNetSocket.sock_connect = sock_connect

    _close_socket_on_failed_connect()
except ImportError:  # pragma: no cover
    pass

try:  # pragma: no cover - depends on the installed kafka-python layout
    from kafka.errors import KafkaConnectionError as _KafkaConnectionError
    from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport

    _RECV_CHUNK = 1 << 20

    def _read_in_large_chunks() -> None:
        """kafka-python 3.0.12 reads sockets 4 KiB at a time: a 16 MiB fetch response takes
        4,000 recv calls and as many Python iterations on its IO thread, which holds the GIL
        the pipeline needs.  Read what the socket holds, up to 1 MiB per call."""
        if getattr(KafkaTCPTransport._sock_recv, "_prodloop_large_chunks", False):
            return
        retry = (BlockingIOError, InterruptedError)
        retry_ssl = (*retry, ssl.SSLWantReadError, ssl.SSLWantWriteError)

        def make(wouldblock: tuple[type[BaseException], ...]) -> Callable[[Any], Any]:
            def _sock_recv(self: Any) -> Any:
                recvd = []
                err = None
                while True:
                    try:
                        data = self._sock.recv(_RECV_CHUNK)
                    except wouldblock:
                        break
                    except BaseException as e:
                        log.exception("%s: error receiving network data, closing the socket", self)
                        err = _KafkaConnectionError(e)
                        break
                    if not data:
                        log.error("%s: socket disconnected", self)
                        err = _KafkaConnectionError("socket disconnected")
                        break
                    recvd.append(data)
                return (recvd[0] if len(recvd) == 1 else b"".join(recvd)), err

            _sock_recv._prodloop_large_chunks = True  # type: ignore[attr-defined]
            return _sock_recv

        KafkaTCPTransport._sock_recv = make(retry)
        KafkaSSLTransport._sock_recv = make(retry_ssl)

    _read_in_large_chunks()
except ImportError:  # pragma: no cover
    pass

try:  # pragma: no cover - depends on the installed kafka-python layout
    from kafka.protocol.frame import KafkaBytes

    def _read_with_one_copy() -> None:
        """kafka-python 3.0.12 hands each response (up to fetch_max_bytes) to its decoder as
        ``bytes(bytearray[a:b])``: two copies of every fetched byte.  One suffices."""
        if getattr(KafkaBytes.read, "_prodloop_one_copy", False):
            return

        def read(self: Any, nbytes: int | None = None) -> bytes:
            start = self._idx
            end = len(self) if nbytes is None else min(len(self), start + nbytes)
            self._idx = end
            with memoryview(self) as view:
                return bytes(view[start:end])

        read._prodloop_one_copy = True  # type: ignore[attr-defined]
        KafkaBytes.read = read

    _read_with_one_copy()
except ImportError:  # pragma: no cover
    pass
