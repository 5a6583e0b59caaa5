"""http(s):// store DSNs reach the configured host and port, database and user.

A small threading HTTP listener on 127.0.0.1 or ::1 stands in for ClickHouse: it answers
``SELECT version(), timezone()`` and accepts everything else with an empty 200, which is
enough for clickhouse-connect to open a client.  It records every request, and the tests
assert what arrived there: the Host header, Basic auth (what clickhouse-connect sends for a
user and password), the ``database`` query parameter and the database ``CREATE DATABASE``
binds.  The DSNs make user, host and database names share prefixes, the shape that string
replacement on the DSN broke.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from collector.errors import ConfigError, StoreError
from collector.exporters.clickhouse import client as ch
from collector.exporters.clickhouse.store import ClickHouseStore

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclass(frozen=True)
class Request:
    host: str | None
    authorization: str | None
    user_agent: str | None
    path: str
    params: dict[str, str]
    body: str

    @property
    def sql(self) -> str:
        return self.params.get("query", "") + self.body


class Listener:
    """A fake ClickHouse HTTP endpoint that records requests; ``fail`` answers errors."""

    def __init__(self, host: str) -> None:
        self.requests: list[Request] = []
        self.fail = False
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                url = urlsplit(self.path)
                req = Request(
                    host=self.headers.get("Host"),
                    authorization=self.headers.get("Authorization"),
                    user_agent=self.headers.get("User-Agent"),
                    path=url.path,
                    params={k: v[-1] for k, v in parse_qs(url.query).items()},
                    body=body,
                )
                listener.requests.append(req)
                if listener.fail:
                    status, out = (
                        500,
                        b"Code: 516. DB::Exception: Authentication failed. (AUTHENTICATION_FAILED)",
                    )
                elif "version()" in req.sql:
                    status, out = 200, b"24.8.1.1\tUTC\n"
                else:
                    status, out = 200, b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self.server = Server((host, 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def v4() -> Iterator[Listener]:
    listener = Listener("127.0.0.1")
    yield listener
    listener.close()


@pytest.fixture
def v6() -> Iterator[Listener]:
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    listener = Listener("::1")
    yield listener
    listener.close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Case:
    dsn: str  # {port} is the listener's
    host_header: str  # {port} likewise
    user: str
    password: str
    database: str
    argument_database: str = "prodloop"
    password_argument: str | None = None
    ipv6: bool = False


CASES = {
    # the DSN of docker-compose.yml and docs/deploy.md: user == database == "prodloop"
    "user-is-database": Case(
        "http://prodloop:pw@127.0.0.1:{port}/prodloop", "127.0.0.1:{port}", "prodloop", "pw", "prodloop"
    ),
    "user-host-database-localhost": Case(
        "http://localhost:pw@localhost:{port}/localhost", "localhost:{port}", "localhost", "pw", "localhost"
    ),
    "user-database-prefix-of-host": Case(
        "http://127:pw@127.0.0.1:{port}/127", "127.0.0.1:{port}", "127", "pw", "127"
    ),
    "host-begins-with-database-no-user": Case(
        "http://localhost:{port}/local", "localhost:{port}", "", "", "local"
    ),
    "percent-encoded-password": Case(
        "http://prodloop:p%40ss%2Fw%3Ard@127.0.0.1:{port}/prodloop",
        "127.0.0.1:{port}",
        "prodloop",
        "p@ss/w:rd",
        "prodloop",
    ),
    "percent-encoded-user": Case(
        "http://us%40er%3A1:pw@127.0.0.1:{port}/us", "127.0.0.1:{port}", "us@er:1", "pw", "us"
    ),
    "password-argument": Case(
        "http://prodloop@127.0.0.1:{port}/prodloop",
        "127.0.0.1:{port}",
        "prodloop",
        "s3cr:t",
        "prodloop",
        password_argument="s3cr:t",
    ),
    "no-database-in-dsn": Case(
        "http://reader:pw@127.0.0.1:{port}", "127.0.0.1:{port}", "reader", "pw", "reader_db", "reader_db"
    ),
    "trailing-slash": Case(
        "http://prodloop:pw@127.0.0.1:{port}/", "127.0.0.1:{port}", "prodloop", "pw", "given", "given"
    ),
    "query-parameters": Case(
        "http://prodloop:pw@127.0.0.1:{port}/prodloop?secure=false&compression=false&connect_timeout=3",
        "127.0.0.1:{port}",
        "prodloop",
        "pw",
        "prodloop",
    ),
    "ipv6-user-is-database": Case(
        "http://prodloop:pw@[::1]:{port}/prodloop", "[::1]:{port}", "prodloop", "pw", "prodloop", ipv6=True
    ),
    "ipv6-no-user": Case("http://[::1]:{port}/db1", "[::1]:{port}", "", "", "db1", ipv6=True),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_every_request_reaches_the_configured_host_with_database_and_credentials(
    case: Case, request: pytest.FixtureRequest
) -> None:
    listener: Listener = request.getfixturevalue("v6" if case.ipv6 else "v4")
    dsn = case.dsn.format(port=listener.port)
    try:
        store = ClickHouseStore(
            dsn, case.argument_database, connect_timeout=2, password=case.password_argument
        )
    except StoreError as exc:
        pytest.fail(f"the open failed: {exc}; the listener got {len(listener.requests)} requests")
    try:
        assert store.database == case.database
    finally:
        store.close()

    got = listener.requests
    assert got, "no request reached the listener"
    assert {r.host for r in got} == {case.host_header.format(port=listener.port)}
    # no user: clickhouse-connect sends no credentials (the server's default user)
    auth = _basic(case.user, case.password) if case.user else None
    assert {r.authorization for r in got} == {auth}
    assert {r.path for r in got} == {"/"}
    creates = [r for r in got if "CREATE DATABASE" in r.sql]
    assert [r.params.get("param_db") for r in creates] == [case.database]
    # the bootstrap client names no database (it may not exist yet); the store's client does,
    # except in its version probe (clickhouse-connect sends that one without a database)
    after = [r for r in got[got.index(creates[0]) + 1 :] if "version()" not in r.sql]
    assert after
    assert {r.params.get("database") for r in after} == {case.database}
    assert all("database" not in r.params for r in got[: got.index(creates[0]) + 1])


def test_query_parameters_reach_the_server(v4: Listener) -> None:
    dsn = f"http://prodloop:pw@127.0.0.1:{v4.port}/prodloop?client_name=probe-7&ch_max_threads=3"
    store = ClickHouseStore(dsn, connect_timeout=2)
    try:
        store.query("SELECT 1")
    finally:
        store.close()
    assert v4.requests
    assert all((r.user_agent or "").startswith("probe-7 ") for r in v4.requests)
    last = v4.requests[-1]
    assert "SELECT 1" in last.sql
    assert last.params.get("max_threads") == "3"
    assert last.params.get("database") == "prodloop"


def test_a_server_error_is_a_store_error_after_reaching_the_configured_host(v4: Listener) -> None:
    v4.fail = True
    dsn = f"http://prodloop:p%40ss@127.0.0.1:{v4.port}/prodloop"
    with pytest.raises(StoreError, match="opening the store failed"):
        ClickHouseStore(dsn, connect_timeout=2)
    assert v4.requests
    assert {r.host for r in v4.requests} == {f"127.0.0.1:{v4.port}"}
    assert {r.authorization for r in v4.requests} == {_basic("prodloop", "p@ss")}


def test_store_errors_name_the_store_without_its_password(v4: Listener) -> None:
    v4.fail = True
    dsn = f"http://prodloop:s3cret-pw@127.0.0.1:{v4.port}/prodloop"
    with pytest.raises(StoreError) as failed:
        ClickHouseStore(dsn, connect_timeout=2)
    message = str(failed.value)
    assert f"http://prodloop:***@127.0.0.1:{v4.port}/prodloop" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("http://u:pw@h:8123/db", "http://u:***@h:8123/db"),
        ("https://u@h/db", "https://u@h/db"),
        ("http://u:pw@h/db?secure=1", "http://u:***@h/db?secure=1"),
        ("http://u:p%40ss@[::1]:8123/db", "http://u:***@[::1]:8123/db"),
        ("chdb:///var/lib/prodloop", "chdb:///var/lib/prodloop"),
    ],
)
def test_redact_dsn(dsn: str, shown: str) -> None:
    assert ch.redact_dsn(dsn) == shown


# -- the argument-building function ---------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "http://prodloop:prodloop@prodloop:8123/prodloop",
            {
                "host": "prodloop",
                "port": 8123,
                "interface": "http",
                "username": "prodloop",
                "password": "prodloop",
                "database": "prodloop",
            },
        ),
        (
            "http://prodloop:pw@prodloop-db/prodloop",
            {
                "host": "prodloop-db",
                "port": 8123,
                "interface": "http",
                "username": "prodloop",
                "password": "pw",
                "database": "prodloop",
            },
        ),
        (
            "https://prodloop@clickhouse.data.svc/prodloop",
            {
                "host": "clickhouse.data.svc",
                "port": 8443,
                "interface": "https",
                "username": "prodloop",
                "database": "prodloop",
            },
        ),
        ("https://h:9440", {"host": "h", "port": 9440, "interface": "https"}),
        ("http://h?secure=true", {"host": "h", "port": 8443, "interface": "https"}),
        ("http://h:8443?secure=0", {"host": "h", "port": 8443, "interface": "http"}),
        (
            "http://[2001:db8::1]:9000/d",
            {"host": "2001:db8::1", "port": 9000, "interface": "http", "database": "d"},
        ),
        ("http://H.Example:1/%64b", {"host": "h.example", "port": 1, "interface": "http", "database": "db"}),
        (
            "http://u:p%40ss%2Fw%3Ard@h/d",
            {
                "host": "h",
                "port": 8123,
                "interface": "http",
                "username": "u",
                "password": "p@ss/w:rd",
                "database": "d",
            },
        ),
        (
            "http://h/d?user=alice",
            {"host": "h", "port": 8123, "interface": "http", "username": "alice", "database": "d"},
        ),
        (
            "https://h/d?verify=false&ca_cert=%2Fetc%2Fca.pem&compression=zstd&connect_timeout=3&ch_max_threads=2",
            {
                "host": "h",
                "port": 8443,
                "interface": "https",
                "database": "d",
                "verify": "false",
                "ca_cert": "/etc/ca.pem",
                "compress": "zstd",
                "connect_timeout": "3",
                "settings": {"max_threads": "2"},
            },
        ),
    ],
)
def test_http_client_args(dsn: str, expected: dict[str, Any]) -> None:
    assert ch.http_client_args(dsn) == expected


def test_the_password_argument_is_used_instead_of_the_dsns() -> None:
    assert ch.http_client_args("http://u@h/d", password="arg")["password"] == "arg"
    assert ch.http_client_args("http://u:dsn@h/d", password="arg")["password"] == "arg"
    assert ch.http_client_args("http://u:dsn@h/d", password=None)["password"] == "dsn"


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("http://u:pw@h:99999/d", "the port must be a number within 1-65535"),
        ("http://u:pw@h:0/d", "the port must be a number within 1-65535"),
        ("http://u:pw@h:port/d", "the port must be a number within 1-65535"),
        ("http://u:pw@:8123/d", "no host"),
        ("http://u:pw@h/a/b", "the path must be one database name"),
        ("http://u:pw@h/d?verfy=false", "unknown query parameter 'verfy'"),
        ("http://u:pw@h/d?password=x", "'password' cannot be set in the query"),
        ("http://u:pw@h/d?host=other", "'host' cannot be set in the query"),
        ("http://u:pw@h/d?verify=0&verify=1", "query parameter 'verify' is given twice"),
        ("http://u:pw@h/d?user=v", "the user is given twice"),
        ("https://u:pw@h/d?secure=false", "https:// with secure=false"),
        ("http://u:pw@h/d?secure=maybe", "secure must be true or false"),
        ("http://u:pa/ss@h/d", "percent-encode"),
        ("http://u:pa#ss@h/d", "percent-encode"),
        ("ftp://u:pw@h/d", "scheme must be http:// or https://"),
    ],
)
def test_bad_dsns_are_config_errors_that_hide_the_credentials(dsn: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        ch.http_client_args(dsn)
    text = str(info.value)
    for secret in ("pw", ":pa", "ss@", "u:"):
        assert secret not in text


def test_the_store_raises_the_config_error_before_connecting(v4: Listener) -> None:
    with pytest.raises(ConfigError, match="unknown query parameter 'bogus'"):
        ClickHouseStore(f"http://u:pw@127.0.0.1:{v4.port}/d?bogus=1")
    assert v4.requests == []


def test_without_create_a_missing_database_is_an_error_and_nothing_is_created(v4: Listener) -> None:
    dsn = f"http://prodloop:s3cret@127.0.0.1:{v4.port}/prodloop"  # the listener knows no database
    with pytest.raises(StoreError) as err:
        ClickHouseStore(dsn, connect_timeout=2, create=False)
    assert str(err.value) == (
        f"no database 'prodloop' in the store at http://prodloop:***@127.0.0.1:{v4.port}/prodloop "
        "(nothing was created)"
    )
    assert any("EXISTS DATABASE" in r.sql for r in v4.requests)
    assert not any("CREATE" in r.sql for r in v4.requests)
