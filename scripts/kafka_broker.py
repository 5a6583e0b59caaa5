#!/usr/bin/env python3
"""A real single-node Apache Kafka 4.x broker for tests and local runs.

No Docker and no mocks: the broker's jars come from Maven Central through ``mvn``
and run on the local Java 17+ as one KRaft node (``process.roles=broker,controller``)
listening on loopback only.

Command line (stdlib only, Python 3.11+)::

    python scripts/kafka_broker.py fetch            # resolve the jars into the cache (once)
    python scripts/kafka_broker.py start            # start in the background, print the bootstrap address
    python scripts/kafka_broker.py status           # exit 0 if the broker answers a Metadata request
    python scripts/kafka_broker.py stop [--clean]   # SIGTERM, wait, SIGKILL fallback; --clean drops the data

A second ``start`` after ``stop`` restarts on the same ports and the same data.

From Python (tests load this file by path)::

    broker = Broker(work_dir)
    broker.start()            # formats the storage on first start; waits until ready
    broker.bootstrap          # "127.0.0.1:PORT"
    broker.restart()          # same ports, same data
    broker.stop()

Environment:
    PRODLOOP_KAFKA_VERSION   Kafka version (default ``KAFKA_VERSION``)
    PRODLOOP_KAFKA_CACHE     jar cache root (default ``~/.cache/prodloop/kafka``); jars go to ``<root>/<version>/libs``
    PRODLOOP_KAFKA_DIR       work dir of the command-line broker (default ``<tmp>/prodloop-kafka-<uid>``)
    PRODLOOP_KAFKA_JAVA_OPTS extra JVM options, appended (so they win), e.g. ``-Xmx2g -XX:TieredStopAtLevel=4``
    JAVA_HOME                the Java used (else ``java`` on PATH)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
# The log4j2 binding for Kafka's slf4j 1.7 API; the version matches the log4j-core that kafka-server brings.
LOG4J_VERSION = "2.25.5"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.11.0"

HOST = "127.0.0.1"
NODE_ID = 1
DEFAULT_HEAP = "512m"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 40

_COMPLETE_MARKER = ".complete"
_STATE_FILE = "state.json"
_BROKER_LOG = "broker.log"

# Broker settings suited to tests: one node, one replica, no waiting.
TEST_BROKER_CONFIG: dict[str, str] = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "auto.create.topics.enable": "false",
    "delete.topic.enable": "true",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # A killed consumer holds its partitions until its session expires: tests of crashes set a
    # short kafka.session_timeout_ms, below the default floor of 6 s.
    "group.min.session.timeout.ms": "1000",
    # After a SIGKILL the restarted broker cannot register until the old session expires (default 9 s).
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
    "num.network.threads": "2",
    "num.io.threads": "4",
    "num.recovery.threads.per.data.dir": "1",
    "log.cleaner.threads": "1",
    "log.retention.check.interval.ms": "300000",
}

_LOG4J2_TEMPLATE = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaHarnessError(RuntimeError):
    """The broker could not be fetched, started, reached or stopped; the message says why."""


# ---------------------------------------------------------------------------------------------------------
# fetch


def kafka_version() -> str:
    return os.environ.get("PRODLOOP_KAFKA_VERSION") or KAFKA_VERSION


def cache_root() -> Path:
    env = os.environ.get("PRODLOOP_KAFKA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prodloop" / "kafka"


def libs_dir(version: str | None = None) -> Path:
    return cache_root() / (version or kafka_version()) / "libs"


def _pom(version: str) -> str:
    deps = [
        ("org.apache.kafka", f"kafka_{SCALA_VERSION}", version),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ]
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by prodloop scripts/kafka_broker.py: the runtime classpath of a Kafka broker -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>prodloop.local</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
</project>
"""


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise KafkaHarnessError(f"`{name}` not found on PATH: {hint}")
    return path


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    return _require_tool(
        "java", "Kafka 4 needs Java 17 or newer (e.g. apt-get install openjdk-17-jre-headless)"
    )


def _check_java(java: str) -> None:
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if proc.returncode != 0 or match is None:
        raise KafkaHarnessError(f"`{java} -version` failed: {proc.stderr.strip()}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < 17:
        raise KafkaHarnessError(f"Kafka 4 brokers need Java 17 or newer; {java} is Java {major}")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_fetched(version: str | None = None) -> bool:
    return (libs_dir(version) / _COMPLETE_MARKER).is_file()


def fetch(version: str | None = None, *, log: bool = True) -> Path:
    """Resolve the broker's runtime jars into the cache once; return the libs directory.

    A second call finds the completion marker and does nothing. Raises KafkaHarnessError with Maven's
    own output if the artifacts cannot be resolved (no network, unknown version...).
    """
    version = version or kafka_version()
    libs = libs_dir(version)
    if (libs / _COMPLETE_MARKER).is_file():
        return libs
    version_dir = libs.parent
    with _file_lock(version_dir / ".lock"):
        if (libs / _COMPLETE_MARKER).is_file():  # another process fetched it meanwhile
            return libs
        mvn = _require_tool("mvn", "install Maven 3.8+ (apt-get install maven) to fetch the Kafka jars")
        _check_java(java_executable())
        coordinate = f"org.apache.kafka:kafka_{SCALA_VERSION}:{version}"
        if log:
            print(
                f"fetching {coordinate} and its runtime dependencies from Maven Central ...", file=sys.stderr
            )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="fetch-", dir=version_dir) as tmp:
            work = Path(tmp)
            (work / "pom.xml").write_text(_pom(version))
            out_dir = work / "libs"
            cmd = [
                mvn,
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(work / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={out_dir}",
            ]
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr).strip().splitlines()
                tail = "\n".join(output[-30:])
                unreachable = any(
                    marker in line
                    for line in output
                    for marker in ("UnknownHost", "Connect to", "Could not transfer", "timed out", "Network")
                )
                reason = (
                    "Maven Central could not be reached"
                    if unreachable
                    else "Maven could not resolve the artifacts (is this version published? set PRODLOOP_KAFKA_VERSION)"
                )
                raise KafkaHarnessError(
                    f"{reason} while fetching {coordinate} (mvn exit {proc.returncode}).\n"
                    f"command: {' '.join(cmd)}\n--- mvn output (tail) ---\n{tail}"
                )
            _verify_libs(out_dir, version)
            (out_dir / _COMPLETE_MARKER).write_text(
                "\n".join(sorted(p.name for p in out_dir.glob("*.jar"))) + "\n"
            )
            if libs.exists():  # a partial leftover from an interrupted run
                shutil.rmtree(libs)
            out_dir.rename(libs)
        if log:
            jars = len(list(libs.glob("*.jar")))
            print(f"fetched {jars} jars into {libs} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return libs


def _verify_libs(libs: Path, version: str) -> None:
    names = {p.name for p in libs.glob("*.jar")}
    needed = [
        f"kafka_{SCALA_VERSION}-{version}.jar",  # kafka.Kafka and kafka.tools.StorageTool
        f"kafka-server-{version}.jar",
        f"kafka-metadata-{version}.jar",
        f"kafka-raft-{version}.jar",
        f"kafka-storage-{version}.jar",
        f"kafka-clients-{version}.jar",
    ]
    missing = [n for n in needed if n not in names]
    if missing:
        raise KafkaHarnessError(f"resolved classpath lacks {missing}; got {sorted(names)}")
    slf4j = [n for n in names if n.startswith("slf4j-api-")]
    if slf4j and not all(n.startswith("slf4j-api-1.") for n in slf4j):
        raise KafkaHarnessError(
            f"Kafka {version} uses {slf4j}; switch the log4j binding in scripts/kafka_broker.py to log4j-slf4j2-impl"
        )


# ---------------------------------------------------------------------------------------------------------
# readiness probe: a real Kafka Metadata request over a socket (stdlib only)


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    controller_id: int
    brokers: tuple[tuple[int, str, int], ...]  # (node_id, host, port)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks.extend(chunk)
    return bytes(chunks)


def probe(bootstrap: str, timeout: float = 2.0) -> ClusterInfo:
    """Send a Metadata v4 request (no topics) and decode the brokers and controller of the answer."""
    host, _, port = bootstrap.rpartition(":")
    client_id = b"prodloop-kafka-probe"
    correlation_id = 4242
    header = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id  # api 3 = Metadata
    body = struct.pack(">i?", 0, False)  # topics: empty array; allow_auto_topic_creation: false
    request = header + body
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        reader = _Reader(_recv_exact(sock, size))
    if reader.take(">i") != correlation_id:
        raise ConnectionError("unexpected correlation id in the Metadata response")
    reader.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take(">i")):
        node_id = reader.take(">i")
        broker_host = reader.string() or ""
        broker_port = reader.take(">i")
        reader.string()  # rack
        brokers.append((node_id, broker_host, broker_port))
    cluster_id = reader.string()
    controller_id = reader.take(">i")
    return ClusterInfo(cluster_id=cluster_id, controller_id=controller_id, brokers=tuple(brokers))


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _random_cluster_id() -> str:
    """A Kafka Uuid in its base64url form (what `kafka-storage random-uuid` prints), without a JVM start."""
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) is not a running broker
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when the thread that started it exits (no orphan JVMs).

    libc is loaded here, in the parent: the child between fork and exec only calls it.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return set_pdeathsig


def _is_our_broker(pid: int, config_path: Path) -> bool:
    """Guard against pid reuse: the process must be a kafka.Kafka JVM started on this config file."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, PermissionError):
        return _pid_alive(pid)  # no /proc: trust the state file
    return b"kafka.Kafka" in cmdline and str(config_path).encode() in cmdline


# ---------------------------------------------------------------------------------------------------------
# the broker


class Broker:
    """One KRaft broker+controller on loopback, with its config, data and log under ``work_dir``.

    ``start`` formats the storage the first time, launches ``kafka.Kafka`` and returns once the broker
    answers a Metadata request listing itself. ``stop`` then ``start`` (or ``restart``) keep the ports
    and the data. The state file ``work_dir/state.json`` lets another process find and stop it.
    """

    def __init__(
        self,
        work_dir: Path | str,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        version: str | None = None,
        heap: str = DEFAULT_HEAP,
        config: Mapping[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        """``die_with_parent``: on Linux the JVM gets SIGTERM when the thread that started it exits
        (for test sessions: no orphan broker if pytest is killed). Call start() from a long-lived thread."""
        self.work_dir = Path(work_dir).resolve()
        self.version = version or kafka_version()
        self.heap = heap
        self.extra_config = dict(config or {})
        self.die_with_parent = die_with_parent
        self.port = port
        self.controller_port = controller_port
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        state = self._read_state()
        if state is not None:
            self.port = self.port or state.get("port")
            self.controller_port = self.controller_port or state.get("controller_port")
            if (
                state.get("pid")
                and _pid_alive(state["pid"])
                and _is_our_broker(state["pid"], self.config_path)
            ):
                self.pid = state["pid"]

    # paths
    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.work_dir / _BROKER_LOG

    @property
    def state_path(self) -> Path:
        return self.work_dir / _STATE_FILE

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise KafkaHarnessError("the broker has no port yet: call start() first")
        return f"{HOST}:{self.port}"

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    def _failure_report(self) -> str:
        """The first ERROR lines of the latest run (the cause, before the shutdown noise), then the log tail."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        run = text.rpartition("=== prodloop: starting")[2]
        errors = [line for line in run.splitlines() if " ERROR " in line or line.startswith("Caused by:")][:6]
        first = "\n".join(errors) if errors else "(no ERROR lines)"
        return f"first errors:\n{first}\n--- log tail ({self.log_path}) ---\n{self.log_tail()}"

    # lifecycle
    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        if self.is_running():
            raise KafkaHarnessError(f"broker already running (pid {self.pid}) at {self.bootstrap}")
        libs = fetch(self.version)
        java = java_executable()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None or self.controller_port is None:
            free = iter(p for p in _free_ports(3) if p != self.port)
            self.port = self.port or next(free)
            self.controller_port = self.controller_port or next(free)
        self._write_config()
        if not (self.data_dir / "meta.properties").is_file():
            self._format(java, libs)
        self._launch(java, libs)
        self._wait_ready(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S, *, kill: bool = False) -> None:
        """SIGTERM (clean shutdown) and wait; SIGKILL if it does not exit in ``timeout`` or if ``kill``."""
        pid = self.pid
        if pid is None or not self.is_running():
            self._reap()
            self.pid = None
            self._write_state()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10.0):
                raise KafkaHarnessError(f"broker pid {pid} survived SIGKILL")
        self._reap()
        self.pid = None
        self._write_state()

    def restart(self, timeout: float = READY_TIMEOUT_S, *, kill: bool = False) -> None:
        """Stop (cleanly, or with SIGKILL if ``kill``) and start again on the same ports with the same data."""
        self.stop(kill=kill)
        self.start(timeout)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # internals
    def _config(self) -> dict[str, str]:
        listener = f"PLAINTEXT://{HOST}:{self.port}"
        config = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "listeners": f"{listener},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": listener,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "log.dirs": str(self.data_dir),
            **TEST_BROKER_CONFIG,
        }
        config.update(self.extra_config)
        return config

    def _write_config(self) -> None:
        lines = ["# generated by prodloop scripts/kafka_broker.py"]
        lines += [f"{key}={value}" for key, value in self._config().items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2_TEMPLATE.format(level="INFO"))
        (self.work_dir / "log4j2-tools.properties").write_text(_LOG4J2_TEMPLATE.format(level="WARN"))

    def _java_cmd(self, java: str, libs: Path, log4j: str, heap: str) -> list[str]:
        return [
            java,
            f"-Xmx{heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # C1 only: starts ~1 s faster; override for throughput runs
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / log4j}",
            *shlex.split(
                os.environ.get("PRODLOOP_KAFKA_JAVA_OPTS", "")
            ),  # last wins, e.g. -XX:TieredStopAtLevel=4
            "-cp",
            f"{libs}/*",
        ]

    def _format(self, java: str, libs: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *self._java_cmd(java, libs, "log4j2-tools.properties", "256m"),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--cluster-id",
            _random_cluster_id(),
            "--config",
            str(self.config_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.work_dir)
        if proc.returncode != 0:
            raise KafkaHarnessError(
                f"formatting the KRaft storage in {self.data_dir} failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr).strip()[-4000:]}"
            )

    def _launch(self, java: str, libs: Path) -> None:
        cmd = [
            *self._java_cmd(java, libs, "log4j2.properties", self.heap),
            "kafka.Kafka",
            str(self.config_path),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== prodloop: starting Kafka {self.version} at {self.bootstrap} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal does not reach the broker; stop() does
                preexec_fn=_parent_death_signal() if self.die_with_parent else None,
            )
        self.pid = self._proc.pid
        self._write_state()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not self.is_running():
                code = self._proc.returncode if self._proc is not None else None
                self._reap()
                self.pid = None
                self._write_state()
                raise KafkaHarnessError(
                    f"the Kafka broker exited during startup (exit code {code}); {self._failure_report()}"
                )
            try:
                info = probe(self.bootstrap, timeout=2.0)
            except (OSError, struct.error) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                listed = any(node == NODE_ID and port == self.port for node, _, port in info.brokers)
                if listed and info.controller_id >= 0:
                    return
                last_error = f"metadata not ready yet: {info}"
            time.sleep(0.1)
        pid = self.pid
        self.stop(kill=True)
        raise KafkaHarnessError(
            f"the Kafka broker (pid {pid}) was not ready at {self.bootstrap} within {timeout:.0f}s "
            f"({last_error}); it was killed. {self._failure_report()}"
        )

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=0.1)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5.0)
            self._proc = None

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return state

    def _write_state(self) -> None:
        if not self.work_dir.exists():
            return
        state = {
            "pid": self.pid,
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap": f"{HOST}:{self.port}" if self.port else None,
            "version": self.version,
            "work_dir": str(self.work_dir),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)


# ---------------------------------------------------------------------------------------------------------
# command line


def default_work_dir() -> Path:
    env = os.environ.get("PRODLOOP_KAFKA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(tempfile.gettempdir()) / f"prodloop-kafka-{os.getuid()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka_broker.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", dest="kafka_version", default=None, help="Kafka version (env PRODLOOP_KAFKA_VERSION)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="resolve the broker jars into the cache (env PRODLOOP_KAFKA_CACHE)")
    for name, text in (
        ("start", "start a broker in the background"),
        ("stop", "stop it"),
        ("status", "is it up?"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--dir", type=Path, default=None, help="work dir (env PRODLOOP_KAFKA_DIR)")
        if name == "start":
            cmd.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
            cmd.add_argument("--timeout", type=float, default=READY_TIMEOUT_S)
        if name == "stop":
            cmd.add_argument("--clean", action="store_true", help="also delete the data, config and log")
    args = parser.parse_args(argv)

    try:
        if args.command == "fetch":
            print(fetch(args.kafka_version))
            return 0
        work_dir = args.dir or default_work_dir()
        if args.command == "start":
            broker = Broker(work_dir, port=args.port, version=args.kafka_version)
            if broker.is_running():
                print(broker.bootstrap)
                print(f"already running (pid {broker.pid}), dir {broker.work_dir}", file=sys.stderr)
                return 0
            started = time.monotonic()
            broker.start(timeout=args.timeout)
            print(broker.bootstrap)
            print(
                f"Kafka {broker.version} ready in {time.monotonic() - started:.1f}s (pid {broker.pid}), "
                f"dir {broker.work_dir}, log {broker.log_path}",
                file=sys.stderr,
            )
            return 0
        broker = Broker(work_dir, version=args.kafka_version)
        if args.command == "stop":
            was_running = broker.is_running()
            broker.stop()
            if args.clean and broker.work_dir.exists():
                shutil.rmtree(broker.work_dir)
            print("stopped" if was_running else "not running", file=sys.stderr)
            return 0
        if args.command == "status":
            if not broker.is_running():
                print(f"not running (dir {broker.work_dir})")
                return 1
            info = probe(broker.bootstrap)
            print(
                f"running: {broker.bootstrap} pid {broker.pid} cluster {info.cluster_id} dir {broker.work_dir}"
            )
            return 0
    except (KafkaHarnessError, OSError) as exc:
        print(f"kafka_broker.py: error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
