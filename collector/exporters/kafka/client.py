"""The Kafka adapter (kafka-python 3.x): consumers, the dead-letter producer, security options.

Everything Kafka-specific lives here; the pipeline sees :class:`Record` values and the
small methods of :class:`TraceConsumer`, :class:`EventReader` and :class:`DeadLetters`.
Third-party errors are wrapped once, as :class:`collector.errors.BrokerError`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collector.errors import BrokerError, ConfigError

# kafka-python 3.0.12 loads its protocol schemas with importlib.resources.read_text, which is
# deprecated since Python 3.11; the warnings are the library's, not ours.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "read_text is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", "open_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import MemberToRemove
    from kafka.cluster import collect_hosts
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.errors import FencedInstanceIdError, KafkaError, NoError
    from kafka.structs import OffsetAndMetadata

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
    import ssl as _ssl

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
        retry_ssl = (*retry, _ssl.SSLWantReadError, _ssl.SSLWantWriteError)

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

log = logging.getLogger("prodloop.kafka")

# Blocking calls of the traces consumer (committed offsets, commits, list offsets) give up after
# this, rather than kafka-python's request timeout (305 s for consumers): while one blocks, the
# loop does not poll, and a rebalance waits for this member's join.  A timeout is a BrokerError,
# which the pipeline waits out and retries.
_CALL_TIMEOUT_MS = 15_000


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class KafkaOptions:
    """Connection and security options, passed through to kafka-python, and the traces
    consumer's group membership (``group_instance_id``, ``session_timeout_ms``)."""

    bootstrap_servers: tuple[str, ...]
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    client_id: str = "prodloop"
    group_instance_id: str = ""  # empty: a dynamic member
    leave_group_on_stop: bool = True
    session_timeout_ms: int = 10_000

    @staticmethod
    def from_settings(kafka: Any, client_id: str = "prodloop") -> KafkaOptions:
        """From ``Settings.kafka`` (collector/app/settings.py)."""
        k = kafka
        return KafkaOptions(
            bootstrap_servers=tuple(k.bootstrap_servers),
            security_protocol=k.security_protocol,
            sasl_mechanism=k.sasl_mechanism,
            sasl_username=k.sasl_username,
            sasl_password=k.sasl_password.get_secret_value() if k.sasl_password else "",
            ssl_cafile=str(k.ssl_cafile) if k.ssl_cafile else None,
            ssl_certfile=str(k.ssl_certfile) if k.ssl_certfile else None,
            ssl_keyfile=str(k.ssl_keyfile) if k.ssl_keyfile else None,
            ssl_check_hostname=k.ssl_check_hostname,
            client_id=client_id,
            group_instance_id=k.group_instance_id,
            leave_group_on_stop=k.leave_group_on_stop,
            session_timeout_ms=k.session_timeout_ms,
        )

    def client_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "reconnect_backoff_max_ms": 2000,
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            cfg["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_cafile:
                cfg["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                cfg["ssl_certfile"] = self.ssl_certfile
            if self.ssl_keyfile:
                cfg["ssl_keyfile"] = self.ssl_keyfile
        return cfg


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


def _record(r: Any) -> Record:
    return Record(
        r.topic,
        r.partition,
        r.offset,
        r.timestamp,
        r.key,
        r.value if r.value is not None else b"",
        tuple((k, v if v is not None else b"") for k, v in (r.headers or ())),
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, on_assigned: Callable[[list[int]], None], on_revoked: Callable[[list[int]], None]
    ) -> None:
        self._assigned = on_assigned
        self._revoked = on_revoked

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        self._revoked(sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        self._assigned(sorted(tp.partition for tp in assigned))


class TraceConsumer:
    """The traces topic, consumed in a consumer group with manual commits.

    With ``options.group_instance_id`` it is a static member (KIP-345): the broker keeps its
    partitions for it across a restart, for up to the session timeout.  kafka-python never
    sends a static member's LeaveGroup, so :meth:`close` removes it from the group itself when
    ``options.leave_group_on_stop`` (docs/deploy.md weighs the two).
    """

    def __init__(
        self,
        options: KafkaOptions,
        topic: str,
        group_id: str,
        *,
        on_assigned: Callable[[list[int]], None],
        on_revoked: Callable[[list[int]], None],
        max_partition_fetch_bytes: int = 2 * 1024 * 1024,
        session_timeout_ms: int | None = None,
        max_poll_interval_ms: int = 300_000,
    ) -> None:
        self.topic = topic
        self._options = options
        self._group_id = group_id
        self._fenced = False
        if session_timeout_ms is None:
            session_timeout_ms = options.session_timeout_ms
        try:
            self._c = KafkaConsumer(
                group_id=group_id,
                group_instance_id=options.group_instance_id or None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=max_partition_fetch_bytes,
                # kafka-python assembles each response in three copies, and fetched partitions
                # wait for the loop: 4 MiB responses keep that small (bench/kafka_e2e.py: consumer
                # peak RSS -60 MB against 16 MiB, same throughput); a larger record still comes
                # whole (KIP-74)
                fetch_max_bytes=4 * 1024 * 1024,
                session_timeout_ms=session_timeout_ms,
                # heartbeats carry the news of a rebalance: at most 3 s apart, as Kafka's default
                heartbeat_interval_ms=max(500, min(3000, session_timeout_ms // 4)),
                max_poll_interval_ms=max_poll_interval_ms,
                # check_crcs (the default) is cheap with the crc32c package, a dependency
                # notice partitions added to the topic within 30 s, not kafka-python's 5 min
                metadata_max_age_ms=30_000,
                **options.client_config(),
            )
            # Know the topic's partitions before joining the group: a leader that joins without
            # them assigns nothing and the group idles until the next metadata refresh.
            self._c.partitions_for_topic(topic)
            self._c.subscribe([topic], listener=_Listener(on_assigned, on_revoked))
        except KafkaError as exc:
            raise BrokerError(f"cannot consume {topic!r} from {options.bootstrap_servers}: {exc}") from exc

    def _fenced_error(self, exc: Exception) -> ConfigError:
        self._fenced = True  # close() must not remove the member that took the id over
        return ConfigError(
            f"kafka.group_instance_id {self._options.group_instance_id!r} (PRODLOOP_KAFKA__GROUP_INSTANCE_ID) "
            f"is used by another consumer of group {self._group_id!r}: each replica needs its own id "
            f"(the chart uses the pod name): {exc}"
        )

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        try:
            batches = self._c.poll(timeout_ms=timeout_ms, max_records=max_records)
        except FencedInstanceIdError as exc:
            raise self._fenced_error(exc) from exc
        except KafkaError as exc:
            raise BrokerError(f"poll failed on {self.topic!r}: {exc}") from exc
        out: list[Record] = []
        for recs in batches.values():
            out.extend(_record(r) for r in recs)
        return out

    def committed(self, partition: int) -> int | None:
        try:
            off = self._c.committed(TopicPartition(self.topic, partition), timeout_ms=_CALL_TIMEOUT_MS)
        except KafkaError as exc:
            raise BrokerError(
                f"cannot read the committed offset of {self.topic}[{partition}]: {exc}"
            ) from exc
        return int(off) if off is not None else None

    def beginning(self, partition: int) -> int:
        tp = TopicPartition(self.topic, partition)
        try:
            return int(self._c.beginning_offsets([tp], timeout_ms=_CALL_TIMEOUT_MS)[tp])
        except KafkaError as exc:
            raise BrokerError(f"cannot read the beginning of {self.topic}[{partition}]: {exc}") from exc

    def end(self, partitions: Iterable[int]) -> dict[int, int]:
        tps = [TopicPartition(self.topic, p) for p in partitions]
        if not tps:
            return {}
        try:
            return {
                tp.partition: int(o)
                for tp, o in self._c.end_offsets(tps, timeout_ms=_CALL_TIMEOUT_MS).items()
            }
        except KafkaError as exc:
            raise BrokerError(f"cannot read the end offsets of {self.topic!r}: {exc}") from exc

    def seek(self, partition: int, offset: int) -> None:
        self._c.seek(TopicPartition(self.topic, partition), offset)

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit ``partition -> next offset to read``.  Raises BrokerError on failure."""
        if not offsets:
            return
        try:
            self._c.commit(
                {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()},
                timeout_ms=_CALL_TIMEOUT_MS,
            )
        except FencedInstanceIdError as exc:
            raise self._fenced_error(exc) from exc
        except KafkaError as exc:
            raise BrokerError(f"commit failed on {self.topic!r}: {exc}") from exc

    def pause(self, partitions: Iterable[int]) -> None:
        self._c.pause(*[TopicPartition(self.topic, p) for p in partitions])

    def resume(self, partitions: Iterable[int]) -> None:
        self._c.resume(*[TopicPartition(self.topic, p) for p in partitions])

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._c.assignment())

    def ends(self) -> dict[int, int]:
        """The end offset of each assigned partition: the high watermark the last fetch response
        carried (no round trip: ListOffsets costs the loop ~100 ms).  Paused partitions are not
        fetched, so their end is asked of the broker."""
        parts = self.assignment()
        paused = {tp.partition for tp in self._c.paused() if tp.topic == self.topic}
        ends: dict[int, int] = {}
        ask = []
        for p in parts:
            hw = None if p in paused else self._c.highwater(TopicPartition(self.topic, p))
            if hw is None:
                ask.append(p)
            else:
                ends[p] = int(hw)
        ends.update(self.end(ask))
        return ends

    def close(self) -> None:
        try:
            self._c.close(autocommit=False)
        except Exception as exc:
            log.warning("closing the traces consumer failed: %s", exc)
        o = self._options
        if o.group_instance_id and o.leave_group_on_stop and not self._fenced:
            self._leave_group()

    def _leave_group(self) -> None:
        """Remove this static member from the group, so the others take its partitions now."""
        instance = self._options.group_instance_id
        try:
            admin = KafkaAdminClient(
                **self._options.client_config(), request_timeout_ms=5_000, bootstrap_timeout_ms=5_000
            )
            try:
                result = admin.remove_group_members(
                    self._group_id, [MemberToRemove(group_instance_id=instance, reason="prodloop stopping")]
                )
            finally:
                admin.close()
        except Exception as exc:  # best effort: the broker drops the member after the session timeout
            log.warning(
                "could not leave group %s as %s (%s); its partitions wait up to kafka.session_timeout_ms (%d ms)",
                self._group_id,
                instance,
                exc,
                self._options.session_timeout_ms,
            )
            return
        errors = {k: e for k, e in result.items() if e is not NoError}
        if errors:
            log.info("leaving group %s as %s: %s", self._group_id, instance, errors)
        else:
            log.info("left group %s as static member %s", self._group_id, instance)


class EventReader:
    """A small topic every replica reads whole (deploys, incidents): manual assignment, no group.

    After a broker outage kafka-python's ListOffsets can stay stuck on a dead connection;
    a failed call therefore reopens the client at the positions already reached.
    """

    def __init__(self, options: KafkaOptions, topic: str) -> None:
        self.topic = topic
        self._options = options
        self._positions: dict[int, int] = {}
        self._open()

    def _open(self) -> None:
        options, topic = self._options, self.topic
        try:
            self._c = KafkaConsumer(
                enable_auto_commit=False,
                group_id=None,
                auto_offset_reset="earliest",
                request_timeout_ms=10_000,
                **options.client_config(),
            )
            parts = self._c.partitions_for_topic(topic)
            if not parts:
                raise BrokerError(f"topic {topic!r} does not exist on {options.bootstrap_servers}")
            self._tps = [TopicPartition(topic, p) for p in sorted(parts)]
            self._c.assign(self._tps)
            for tp in self._tps:
                if tp.partition in self._positions:
                    self._c.seek(tp, self._positions[tp.partition])
        except KafkaError as exc:
            raise BrokerError(f"cannot read {topic!r} from {options.bootstrap_servers}: {exc}") from exc

    def _reopen(self) -> None:
        with contextlib.suppress(Exception):
            self._c.close(autocommit=False)
        self._open()

    def seek(self, positions: Mapping[int, int]) -> None:
        for tp in self._tps:
            if tp.partition in positions:
                self._c.seek(tp, positions[tp.partition])
                self._positions[tp.partition] = positions[tp.partition]

    def poll(self, timeout_ms: int = 0) -> list[Record]:
        try:
            batches = self._c.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            self._reopen()
            raise BrokerError(f"poll failed on {self.topic!r}: {exc}") from exc
        out: list[Record] = []
        for recs in batches.values():
            out.extend(_record(r) for r in recs)
        out.sort(key=lambda r: (r.partition, r.offset))
        for r in out:
            self._positions[r.partition] = r.offset + 1
        return out

    def positions(self) -> dict[int, int]:
        try:
            return {tp.partition: int(self._c.position(tp)) for tp in self._tps}
        except KafkaError as exc:
            self._reopen()
            raise BrokerError(f"cannot read the positions on {self.topic!r}: {exc}") from exc

    def at_end(self) -> bool:
        """Has this reader consumed everything the topic holds right now?"""
        try:
            ends = self._c.end_offsets(self._tps)
            return all(int(self._c.position(tp)) >= int(ends[tp]) for tp in self._tps)
        except KafkaError as exc:
            self._reopen()
            raise BrokerError(f"cannot read the end offsets of {self.topic!r}: {exc}") from exc

    def close(self) -> None:
        try:
            self._c.close(autocommit=False)
        except Exception as exc:
            log.warning("closing the %s reader failed: %s", self.topic, exc)


class DeadLetters:
    """Produces bad records to the dead-letter topic, with their origin and error in headers."""

    def __init__(self, options: KafkaOptions, topic: str) -> None:
        self.topic = topic
        try:
            self._p = KafkaProducer(acks="all", linger_ms=5, **options.client_config())
        except KafkaError as exc:
            raise BrokerError(f"cannot produce to {topic!r}: {exc}") from exc

    def send(self, record: Record, reason: str, error: str) -> None:
        headers = [
            ("prodloop.source.topic", record.topic.encode()),
            ("prodloop.source.partition", str(record.partition).encode()),
            ("prodloop.source.offset", str(record.offset).encode()),
            ("prodloop.error.reason", reason.encode()),
            ("prodloop.error.message", error.encode()[:4000]),
            *[(k, v) for k, v in record.headers if not k.startswith("prodloop.")],
        ]
        try:
            self._p.send(self.topic, value=record.value, key=record.key, headers=headers)
        except KafkaError as exc:
            raise BrokerError(f"cannot dead-letter to {self.topic!r}: {exc}") from exc

    def flush(self, timeout_s: float = 30) -> None:
        try:
            self._p.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise BrokerError(f"dead-letter flush to {self.topic!r} failed: {exc}") from exc

    def close(self) -> None:
        try:
            self._p.close(timeout=5)
        except Exception as exc:
            log.warning("closing the dead-letter producer failed: %s", exc)
