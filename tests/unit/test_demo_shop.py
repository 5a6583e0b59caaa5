"""The demo shop: real SDK output, decoded with opentelemetry-proto, against its own truth."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from ruamel.yaml import YAML

from collector.demo.shop import (
    ENVIRONMENT,
    REPOSITORY,
    SAMPLE_RATE_ATTRIBUTE,
    SERVICES,
    SOURCE_ROOT,
    Traffic,
    TruthRow,
    demo_dir,
    generate,
)

UNATTRIBUTED = "(unattributed)"
STATUS_ERROR = 2


@dataclass
class Decoded:
    service: str
    version: str
    environment: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    start: int
    end: int
    error: bool
    attrs: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]


def _value(v: Any) -> Any:
    field = v.WhichOneof("value")
    return getattr(v, field) if field else None


def decode(requests: list[bytes]) -> Iterator[tuple[int, Decoded]]:
    for index, payload in enumerate(requests):
        req = ExportTraceServiceRequest.FromString(payload)
        for rs in req.resource_spans:
            res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    yield (
                        index,
                        Decoded(
                            service=res["service.name"],
                            version=res["service.version"],
                            environment=res["deployment.environment.name"],
                            trace_id=s.trace_id,
                            span_id=s.span_id,
                            parent_span_id=s.parent_span_id,
                            name=s.name,
                            kind=s.kind,
                            start=s.start_time_unix_nano,
                            end=s.end_time_unix_nano,
                            error=s.status.code == STATUS_ERROR,
                            attrs={kv.key: _value(kv.value) for kv in s.attributes},
                            events=[
                                (e.name, {kv.key: _value(kv.value) for kv in e.attributes}) for e in s.events
                            ],
                        ),
                    )


@pytest.fixture(scope="module")
def timed_traffic() -> tuple[Traffic, float, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []
    t0 = time.perf_counter()
    traffic = generate(progress=lambda done, total: calls.append((done, total)))
    return traffic, time.perf_counter() - t0, calls


@pytest.fixture(scope="module")
def traffic(timed_traffic: tuple[Traffic, float, list[tuple[int, int]]]) -> Traffic:
    return timed_traffic[0]


@pytest.fixture(scope="module")
def spans(traffic: Traffic) -> list[tuple[int, Decoded]]:
    return list(decode(traffic.requests))


def _merge(rows: list[TruthRow]) -> tuple[int, int, list[int]]:
    durations = sorted(d for r in rows for d in r.durations_ns)
    return sum(r.spans for r in rows), sum(r.errors for r in rows), durations


def _p95(durations: list[int]) -> int:
    return durations[int(0.95 * (len(durations) - 1))]


def _commit_rows(traffic: Traffic, service: str, module: str, sha: str) -> list[TruthRow]:
    return [
        row for (svc, _, mod, _, c), row in traffic.truth.items() if (svc, mod, c) == (service, module, sha)
    ]


def test_defaults_generate_quickly_and_report_progress(
    timed_traffic: tuple[Traffic, float, list[tuple[int, int]]],
) -> None:
    traffic, seconds, calls = timed_traffic
    assert seconds < 10.0
    assert 40_000 <= traffic.total_spans <= 80_000
    assert traffic.end_unix_nano - traffic.start_unix_nano == 10 * 60 * 10**9
    assert calls[-1][0] == calls[-1][1] > 0
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_truth_counts_every_decoded_span(traffic: Traffic, spans: list[tuple[int, Decoded]]) -> None:
    assert len(spans) == traffic.total_spans
    per_service = Counter(s.service for _, s in spans)
    truth_per_service: Counter[str] = Counter()
    for (service, environment, _, owners, _), row in traffic.truth.items():
        assert environment == ENVIRONMENT
        assert list(owners) == sorted(owners)
        assert row.spans == len(row.durations_ns) > 0
        assert list(row.durations_ns) == sorted(row.durations_ns)
        truth_per_service[service] += row.spans
    assert per_service == truth_per_service
    assert set(per_service) == set(SERVICES)
    assert sum(r.errors for r in traffic.truth.values()) == sum(s.error for _, s in spans)
    assert sum(sum(r.durations_ns) for r in traffic.truth.values()) == sum(s.end - s.start for _, s in spans)


def test_requests_are_batches_in_time_order(traffic: Traffic, spans: list[tuple[int, Decoded]]) -> None:
    per_request: dict[int, list[int]] = defaultdict(list)
    for index, s in spans:
        assert traffic.start_unix_nano <= s.start <= s.end <= traffic.end_unix_nano
        per_request[index].append(s.end)
    assert sorted(per_request) == list(range(len(traffic.requests)))
    sizes = [len(v) for _, v in sorted(per_request.items())]
    assert max(sizes) == 200 and all(size == 200 for size in sizes[:-1])
    for i in range(1, len(traffic.requests)):
        assert max(per_request[i - 1]) <= min(per_request[i])
    # more than one resource per request: the stream mixes services, as a collector forwards it
    assert any(len(ExportTraceServiceRequest.FromString(r).resource_spans) > 1 for r in traffic.requests[:5])


def test_traces_are_well_formed(spans: list[tuple[int, Decoded]]) -> None:
    by_id = {(s.trace_id, s.span_id): s for _, s in spans}
    assert len(by_id) == len(spans)
    roots = 0
    for _, s in spans:
        if not s.parent_span_id:
            roots += 1
            continue
        parent = by_id[(s.trace_id, s.parent_span_id)]  # sampling drops whole subtrees only
        assert parent.start <= s.start <= s.end <= parent.end
    assert 0 < roots < len(spans) / 5
    cross_service = sum(
        1 for _, s in spans if s.parent_span_id and by_id[(s.trace_id, s.parent_span_id)].service != s.service
    )
    assert cross_service > 1000


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = generate(seed=3, minutes=2)
    b = generate(seed=3, minutes=2)
    c = generate(seed=4, minutes=2)
    assert a.requests == b.requests and a.deploys == b.deploys and a.truth == b.truth
    assert a.requests != c.requests
    assert a.deploys != c.deploys
    # deploy times scale with the run
    assert [d["deployed_at"] for d in a.deploys][-2:] == ["2026-01-01T00:00:48Z", "2026-01-01T00:01:24Z"]


def test_deploy_events_follow_the_contract(traffic: Traffic, spans: list[tuple[int, Decoded]]) -> None:
    sha = re.compile(r"^[0-9a-f]{40}$")
    times = []
    live: dict[str, str] = {}
    for event in traffic.deploys:
        assert {"deploy_id", "service", "environment", "commit_sha", "deployed_at"} <= event.keys()
        assert event["environment"] == ENVIRONMENT and event["repository"] == REPOSITORY
        assert sha.match(event["commit_sha"]) and sha.match(event["previous_sha"])
        assert event["deployed_at"].endswith("Z")
        at = datetime.fromisoformat(event["deployed_at"])
        assert at.tzinfo is not None
        t = int(at.timestamp()) * 10**9
        assert traffic.start_unix_nano <= t < traffic.end_unix_nano
        times.append(t)
        if event["service"] in live:
            assert event["previous_sha"] == live[event["service"]]
        live[event["service"]] = event["commit_sha"]
    assert times == sorted(times)
    assert len({e["deploy_id"] for e in traffic.deploys}) == len(traffic.deploys) == len(SERVICES) + 2
    initial = traffic.deploys[: len(SERVICES)]
    assert {e["service"] for e in initial} == set(SERVICES)
    assert all(e["deployed_at"] == "2026-01-01T00:00:00Z" for e in initial)
    # every span runs a commit some deploy made live; versions are semvers, never SHAs
    shas = {e["commit_sha"] for e in traffic.deploys}
    assert {key[4] for key in traffic.truth} <= shas
    semver = re.compile(r"^\d+\.\d+\.\d+$")
    assert all(semver.match(s.version) for _, s in spans)
    assert {s.version for _, s in spans if s.service == "payments"} == {"2.7.1", "2.8.0"}


def test_regressed_module_is_slower_and_fails_more_after_its_deploy(traffic: Traffic) -> None:
    service, module, deploy_id = traffic.regressed
    assert (service, module) == ("payments", "payments/retry")
    deploy = next(e for e in traffic.deploys if e["deploy_id"] == deploy_id)
    before_sha, after_sha = deploy["previous_sha"], deploy["commit_sha"]

    n0, e0, d0 = _merge(_commit_rows(traffic, service, module, before_sha))
    n1, e1, d1 = _merge(_commit_rows(traffic, service, module, after_sha))
    assert n0 > 300 and n1 > 300
    assert e0 / n0 < 0.03 and e1 / n1 > 0.05
    assert 2.0 <= _p95(d1) / _p95(d0) <= 3.5

    # a module the deploy did not touch keeps its latency
    _, _, f0 = _merge(_commit_rows(traffic, service, "payments/fraud", before_sha))
    _, _, f1 = _merge(_commit_rows(traffic, service, "payments/fraud", after_sha))
    assert 0.75 <= _p95(f1) / _p95(f0) <= 1.33

    # the checkout deploy is benign
    benign = traffic.deploys[-1]
    assert benign["service"] == "checkout" and benign["deploy_id"] != deploy_id
    _, _, c0 = _merge(_commit_rows(traffic, "checkout", "checkout/pricing", benign["previous_sha"]))
    _, _, c1 = _merge(_commit_rows(traffic, "checkout", "checkout/pricing", benign["commit_sha"]))
    assert 0.75 <= _p95(c1) / _p95(c0) <= 1.33


def test_one_service_is_sampled(traffic: Traffic, spans: list[tuple[int, Decoded]]) -> None:
    rates = Counter(s.attrs.get(SAMPLE_RATE_ATTRIBUTE) for _, s in spans if s.service == "inventory")
    assert set(rates) == {1, 4} and rates[4] > rates[1]
    assert all(SAMPLE_RATE_ATTRIBUTE not in s.attrs for _, s in spans if s.service != "inventory")
    decoded_adjusted = sum(s.attrs[SAMPLE_RATE_ATTRIBUTE] for _, s in spans if s.service == "inventory")
    truth_rows = [r for key, r in traffic.truth.items() if key[0] == "inventory"]
    assert decoded_adjusted == sum(r.spans_adjusted for r in truth_rows)
    assert sum(r.spans_adjusted for r in truth_rows) > 3 * sum(r.spans for r in truth_rows)
    others = [r for key, r in traffic.truth.items() if key[0] != "inventory"]
    assert all(r.spans_adjusted == r.spans for r in others)


def test_spans_carry_locations_as_instrumentation_does(spans: list[tuple[int, Decoded]]) -> None:
    files: set[str] = {
        str(s.attrs.get("code.file.path") or s.attrs.get("code.filepath"))
        for _, s in spans
        if "code.file.path" in s.attrs or "code.filepath" in s.attrs
    }
    ours = {f for f in files if f.startswith(SOURCE_ROOT + "/")}
    assert len(ours) >= 60
    assert all(f.startswith("/usr/lib/python3/site-packages/") for f in files - ours)
    assert len(files - ours) >= 3

    def has_location(s: Decoded) -> bool:
        return any(k.startswith("code.") for k in s.attrs)

    servers = [s for _, s in spans if s.kind == 2]  # SPAN_KIND_SERVER
    assert servers and not any(has_location(s) for s in servers)
    assert all("http.route" in s.attrs or "rpc.service" in s.attrs for s in servers)
    namespace_only = [
        s
        for _, s in spans
        if "code.namespace" in s.attrs and not ({"code.file.path", "code.filepath"} & s.attrs.keys())
    ]
    assert namespace_only and {s.service for s in namespace_only} == {"payments"}
    assert any(
        s.attrs.get("code.function.name", "").startswith("shop.payments.ledger.")
        and not s.attrs.keys()
        - {
            "code.function.name",
            "code.line.number",
        }
        for _, s in spans
    )
    assert any(s.name == "stock-events process" and not has_location(s) for _, s in spans)
    assert any(s.attrs.get("db.system") == "redis" and not has_location(s) for _, s in spans)
    assert any("code.filepath" in s.attrs and "code.lineno" in s.attrs for _, s in spans)  # deprecated names
    lines = [s.attrs["code.line.number"] for _, s in spans if "code.line.number" in s.attrs]
    assert lines and all(isinstance(v, int) and v > 0 for v in lines)


def test_truth_uses_the_modules_and_owners_of_the_bundled_config(traffic: Traffic) -> None:
    folder = demo_dir()
    config = YAML(typ="safe").load((folder / "modules.yaml").read_text())
    assert config["source_roots"] == [SOURCE_ROOT] and config["module_depth"] == 2
    names = {rule["name"] for rule in config["modules"]}
    assert 12 <= len(names) <= 20
    modules = {key[2] for key in traffic.truth}
    # every rule is exercised; the only other modules are the depth-2 fallback and unattributed
    assert modules == names | {"libs/featureflags", UNATTRIBUTED}
    assert all(key[3] == () for key in traffic.truth if key[2] == UNATTRIBUTED)

    codeowners = (folder / "CODEOWNERS").read_text()
    declared = {
        word for line in codeowners.splitlines() if not line.startswith("#") for word in line.split()[1:]
    }
    declared |= {o for rule in config["modules"] for o in rule.get("owners", [])}
    owners = {o for key in traffic.truth for o in key[3]}
    assert owners <= declared
    assert {"@acme/payments", "@carol"} <= owners  # the last-match-wins file override
    assert ("payments", ENVIRONMENT, "payments/retry") in {
        key[:3] for key in traffic.truth if "@carol" in key[3]
    }
    assert any(key[2] == "inventory/legacy" and key[3] == () for key in traffic.truth)  # unowned directory


_FRAME = re.compile(r'^  File "([^"]+)", line (\d+), in (\S+)$', re.MULTILINE)
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n"


def _exceptions(spans: list[tuple[int, Decoded]]) -> list[tuple[Decoded, dict[str, Any]]]:
    return [(s, attrs) for _, s in spans for name, attrs in s.events if name == "exception"]


def test_failing_spans_record_real_exceptions(traffic: Traffic, spans: list[tuple[int, Decoded]]) -> None:
    recorded = _exceptions(spans)
    assert len(recorded) == sum(r.exception_events for r in traffic.truth.values()) > 200
    assert sum(r.exceptions for r in traffic.truth.values()) == len(recorded)
    assert all(s.error for s, _ in recorded)
    types = Counter(a["exception.type"] for _, a in recorded)
    assert {
        "shop.payments.api.errors.PaymentError",
        "shop.payments.retry.errors.IdempotencyStoreTimeout",
        "psycopg.errors.DeadlockDetected",
        "requests.exceptions.HTTPError",
        "grpc._channel._InactiveRpcError",
    } <= set(types)
    library = 0
    for s, a in recorded:
        text = a["exception.stacktrace"]
        assert text.startswith("Traceback (most recent call last):\n")
        assert text.endswith(f"\n{a['exception.type']}: {a['exception.message']}\n")
        frames = _FRAME.findall(text)
        assert frames
        for file, _, _ in frames:  # the shop, its libraries, or the real json package
            assert file.startswith((SOURCE_ROOT + "/", "/usr/lib/python3/site-packages/")) or file.endswith(
                ("/json/__init__.py", "/json/decoder.py")
            ), file
        library += any(not f.startswith(SOURCE_ROOT + "/") for f, _, _ in frames)
        # the recording function's frame is the outermost of the exception raised last
        outer = _FRAME.findall(text.split(_CAUSE)[-1])[0]
        where = s.attrs.get("code.file.path") or s.attrs.get("code.filepath")
        line = int(s.attrs.get("code.line.number") or s.attrs.get("code.lineno") or 0)
        if where:
            assert outer[0] == where and 0 < int(outer[1]) - line < 10, (outer, where, line)
    assert library > len(recorded) / 4


def test_callers_wrap_the_exception_their_callee_threw(spans: list[tuple[int, Decoded]]) -> None:
    api_files = f"{SOURCE_ROOT}/services/payments/api/"
    api = [
        (s, a) for s, a in _exceptions(spans) if str(s.attrs.get("code.file.path", "")).startswith(api_files)
    ]
    assert len(api) > 20
    throwers: Counter[str] = Counter()
    for _, a in api:
        assert a["exception.type"] == "shop.payments.api.errors.PaymentError"
        text = a["exception.stacktrace"]
        assert _CAUSE in text  # raise ... from the callee's error
        root = text.split(_CAUSE)[0]  # Python prints the root cause first
        own = [f for f, _, _ in _FRAME.findall(root) if f.startswith(SOURCE_ROOT + "/")]
        throwers[own[-1].removeprefix(SOURCE_ROOT + "/").rsplit("/", 1)[0]] += 1
    # payments/api never throws first: its callees do
    assert "services/payments/api" not in throwers
    assert throwers["services/payments/retry"] > 0 and set(throwers) <= {
        "services/payments/retry",
        "services/payments/gateway",
        "libs/db",
    }
