"""Attribution of spans: repository, module, owners, commit and deploy (attribution/attribute.py).

Spans are made with the real OpenTelemetry SDK and decoded from its OTLP encoding.  The
expected commit, deploy and owners are stated by each test from the inputs it chose, never
computed by the code under test.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest

from attribution.attribute import Attributor, GroupKey
from attribution.codeowners import CodeOwners
from attribution.deploys import DeployTimeline
from attribution.model import Attribution, DeployEvent, Span, Unattributed
from attribution.modules import ModuleConfig
from attribution.repository import Repository, normalize_repo_url

if TYPE_CHECKING:
    from conftest import Otel

T0 = 1_700_000_040 * 1_000_000_000
MS = 1_000_000
SECOND = 1_000_000_000

SHA_A = "a" * 40
SHA_B = "b1" * 20
SHA_C = "0123456789abcdef0123456789abcdef01234567"

CODEOWNERS = CodeOwners.parse(
    "\n".join(
        [
            "# shop owners",  # line 1
            "*                      @acme/platform",  # line 2
            "services/payments/     @acme/payments @alice",  # line 3
            "services/payments/vendored/",  # line 4: explicitly unowned
            "docs/**                @acme/docs @acme/platform @acme/docs",  # line 5
        ]
    ),
    "CODEOWNERS",
)

MODULES = ModuleConfig.from_mapping(
    {
        "source_roots": ["/srv/shop"],
        "modules": [
            {"name": "payments/retry", "paths": ["services/payments/retry/**"]},
            {"name": "checkout/api", "routes": ["/api/cart/*"], "owners": ["@acme/checkout", "@acme/api"]},
            {"name": "search", "namespaces": ["shop.search"], "owners": ["@acme/search"]},
        ],
    }
)


def shop(**kw: Any) -> Repository:
    args: dict[str, Any] = {"name": "shop", "codeowners": CODEOWNERS, "modules": MODULES}
    args.update(kw)
    return Repository(**args)


def one(
    otel: Otel, resource: dict[str, Any], attributes: dict[str, Any], start: int = T0, name: str = "op"
) -> Span:
    (span,) = otel.core_spans(resource, [(name, start, start + MS, attributes)])
    return span


def deploy(
    deploy_id: str, sha: str, at: int, service: str = "checkout", env: str = "prod", status: str = "succeeded"
) -> DeployEvent:
    return DeployEvent(
        deploy_id=deploy_id,
        service=service,
        environment=env,
        commit_sha=sha,
        deployed_at_unix_nano=at,
        status=status,
    )


# --------------------------------------------------------------------------- repositories


def test_normalize_repo_url_equates_the_usual_spellings() -> None:
    canonical = "https://github.com/acme/billing"
    for url in (
        "https://github.com/acme/billing",
        "https://github.com/acme/billing.git",
        "https://github.com/acme/billing/",
        "https://GitHub.com/Acme/Billing",
        "git@github.com:acme/billing.git",
        "  https://github.com/acme/billing  ",
    ):
        assert normalize_repo_url(url) == canonical, url


def test_repository_by_service_by_url_and_default(otel: Otel) -> None:
    shop_repo = shop(url="https://github.com/acme/shop", services=frozenset({"checkout", "payments"}))
    billing = Repository(
        name="billing", url="https://github.com/acme/billing", services=frozenset({"invoicing"})
    )
    mono = Repository(name="mono")  # lists no services: the default
    a = Attributor([shop_repo, billing, mono])
    path = {"code.file.path": "services/x/y.py"}

    def repo_of(resource: dict[str, Any]) -> str:
        got = a.attribute(one(otel, resource, path))
        assert isinstance(got, Attribution), got
        return got.repository

    assert repo_of({"service.name": "checkout"}) == "https://github.com/acme/shop"
    assert repo_of({"service.name": "invoicing"}) == "https://github.com/acme/billing"
    # not listed anywhere: the vcs.repository.url.full resource attribute, in any usual spelling
    assert repo_of(
        {"service.name": "ledger", "vcs.repository.url.full": "git@github.com:Acme/billing.git"}
    ) == ("https://github.com/acme/billing")
    # the service beats the URL
    assert repo_of(
        {"service.name": "checkout", "vcs.repository.url.full": "https://github.com/acme/billing"}
    ) == ("https://github.com/acme/shop")
    # neither: the default repository (named by its name when it has no URL)
    assert repo_of({"service.name": "ledger"}) == "mono"
    assert (
        repo_of({"service.name": "ledger", "vcs.repository.url.full": "https://github.com/acme/other"})
        == "mono"
    )


def test_no_default_repository_means_unattributed(otel: Otel) -> None:
    a = Attributor(
        [
            shop(services=frozenset({"checkout"})),
            Repository(name="billing", services=frozenset({"invoicing"})),
        ]
    )
    got = a.attribute(one(otel, {"service.name": "ledger"}, {"code.file.path": "services/x.py"}))
    assert isinstance(got, Unattributed)
    assert got.reason == "no_repository"
    assert "ledger" in got.detail
    gid = a.group_of(one(otel, {"service.name": "ledger"}, {"code.file.path": "services/x.py"}))
    assert not a.is_attributed(gid)
    assert a.group(gid).unattributed_reason == "no_repository"


def test_a_single_scoped_repository_is_the_default(otel: Otel) -> None:
    a = Attributor([shop(services=frozenset({"checkout"}))])
    got = a.attribute(one(otel, {"service.name": "ledger"}, {"code.file.path": "services/x/y.py"}))
    assert isinstance(got, Attribution)
    assert got.repository == "shop"


def test_no_repositories_given_means_one_default(otel: Otel) -> None:
    a = Attributor([])
    got = a.attribute(one(otel, {"service.name": "x"}, {"code.file.path": "a/b/c.py"}))
    assert isinstance(got, Attribution)
    assert (got.repository, got.module, got.owners) == ("default", "a/b", ())


def test_each_repository_uses_its_own_module_rules(otel: Otel) -> None:
    other = Repository(
        name="billing",
        services=frozenset({"invoicing"}),
        modules=ModuleConfig.from_mapping({"modules": [{"name": "inv", "paths": ["services/**"]}]}),
    )
    a = Attributor([shop(services=frozenset({"checkout"})), other])
    p = {"code.file.path": "services/payments/retry/r.py"}
    got_shop = a.attribute(one(otel, {"service.name": "checkout"}, p))
    got_billing = a.attribute(one(otel, {"service.name": "invoicing"}, p))
    assert isinstance(got_shop, Attribution) and isinstance(got_billing, Attribution)
    assert (got_shop.module, got_billing.module) == ("payments/retry", "inv")


# ------------------------------------------------------------------------------- owners


@pytest.mark.parametrize(
    ("attributes", "module", "owners", "line"),
    [
        (
            {"code.file.path": "/srv/shop/services/payments/api.py"},
            "services/payments",
            ("@acme/payments", "@alice"),
            3,
        ),
        (
            {"code.file.path": "services/payments/retry/r.py"},
            "payments/retry",
            ("@acme/payments", "@alice"),
            3,
        ),
        ({"code.file.path": "services/checkout/api.py"}, "services/checkout", ("@acme/platform",), 2),
        # sorted and deduplicated
        ({"code.file.path": "docs/guide/x.md"}, "docs/guide", ("@acme/docs", "@acme/platform"), 5),
        # an explicitly unowned path stays unowned
        ({"code.file.path": "services/payments/vendored/lib.py"}, "services/payments", (), 4),
        # a non-path rule with a file: CODEOWNERS of the file decides
        (
            {"code.file.path": "services/cart/h.py", "http.route": "/api/cart/1"},
            "checkout/api",
            ("@acme/platform",),
            2,
        ),
        # a non-path rule without a file: the rule's owners (sorted)
        ({"http.route": "/api/cart/1"}, "checkout/api", ("@acme/api", "@acme/checkout"), 0),
        ({"code.namespace": "shop.search.index"}, "search", ("@acme/search",), 0),
        # a file outside the roots, matched by a non-path rule: the rule's owners
        (
            {"code.file.path": "/usr/lib/x.py", "code.namespace": "shop.search"},
            "search",
            ("@acme/search",),
            0,
        ),
    ],
)
def test_owners(
    otel: Otel, attributes: dict[str, Any], module: str, owners: tuple[str, ...], line: int
) -> None:
    a = Attributor([shop()])
    got = a.attribute(one(otel, {"service.name": "checkout"}, attributes))
    assert isinstance(got, Attribution), got
    assert (got.module, got.owners, got.codeowners_line) == (module, owners, line)
    gid = a.group_of(one(otel, {"service.name": "checkout"}, attributes))
    assert (a.group(gid).module, a.group(gid).owners) == (module, owners)


def test_attribution_instances_are_shared_between_spans_of_one_location(otel: Otel) -> None:
    a = Attributor([shop()])
    spans = otel.core_spans(
        {"service.name": "checkout"},
        [(f"op{i}", T0 + i, T0 + i + MS, {"code.file.path": "services/payments/api.py"}) for i in range(3)],
    )
    results = [a.attribute(s) for s in spans]
    assert results[0] is results[1] is results[2]


# ------------------------------------------------------------------------------- commits


def commit_and_deploy(a: Attributor, span: Span) -> tuple[str, str]:
    """Both paths: the slow one (commit_of) and the hot one (group ids) must agree."""
    slow = a.commit_of(span)
    key = a.group(a.group_of(span))
    assert (key.commit_sha, key.deploy_id) == slow
    return slow


@pytest.fixture
def timeline() -> DeployTimeline:
    return DeployTimeline(
        [
            deploy("d1", SHA_A, T0),
            deploy("d2", SHA_B, T0 + 60 * SECOND),
            deploy("d-fail", SHA_C, T0 + 90 * SECOND, status="failed"),
        ]
    )


@pytest.mark.parametrize(
    ("resource", "start", "expected"),
    [
        # vcs.ref.head.revision beats service.version and the timeline
        ({"vcs.ref.head.revision": SHA_C, "service.version": "c0ffee1"}, T0 + SECOND, (SHA_C, "")),
        # ... and takes the timeline's deploy id when the timeline agrees
        ({"vcs.ref.head.revision": SHA_A}, T0 + SECOND, (SHA_A, "d1")),
        ({"vcs.ref.head.revision": SHA_A.upper()}, T0 + SECOND, (SHA_A, "d1")),
        # a hex service.version of 7..40 characters is a commit (lowercased)
        ({"service.version": "C0FFEE1"}, T0 + SECOND, ("c0ffee1", "")),
        ({"service.version": SHA_B}, T0 + 61 * SECOND, (SHA_B, "d2")),
        ({"service.version": SHA_B}, T0 + SECOND, (SHA_B, "")),  # d2 not live yet
        # not a SHA: semver, too short, too long, not hex -> the timeline
        ({"service.version": "1.2.3"}, T0 + SECOND, (SHA_A, "d1")),
        ({"service.version": "abcdef"}, T0 + SECOND, (SHA_A, "d1")),
        ({"service.version": "a" * 41}, T0 + SECOND, (SHA_A, "d1")),
        ({"service.version": "v1234567"}, T0 + SECOND, (SHA_A, "d1")),
        ({"vcs.ref.head.revision": "main", "service.version": "2.0.0"}, T0 + 61 * SECOND, (SHA_B, "d2")),
        # the timeline: latest live deploy at or before the span's start
        ({}, T0, (SHA_A, "d1")),
        ({}, T0 + 60 * SECOND - 1, (SHA_A, "d1")),
        ({}, T0 + 60 * SECOND, (SHA_B, "d2")),
        ({}, T0 + 95 * SECOND, (SHA_B, "d2")),  # the failed deploy never went live
        # before any deploy: unknown, never a guess
        ({}, T0 - 1, ("", "")),
        ({"service.version": "1.2.3"}, T0 - 1, ("", "")),
    ],
)
def test_commit_precedence(
    otel: Otel, timeline: DeployTimeline, resource: dict[str, Any], start: int, expected: tuple[str, str]
) -> None:
    a = Attributor([shop()], timeline)
    res = {"service.name": "checkout", "deployment.environment.name": "prod", **resource}
    span = one(otel, res, {"code.file.path": "services/payments/api.py"}, start=start)
    assert commit_and_deploy(a, span) == expected


def test_commit_timeline_is_per_service_and_environment(otel: Otel, timeline: DeployTimeline) -> None:
    a = Attributor([shop()], timeline)
    p = {"code.file.path": "services/payments/api.py"}
    start = T0 + 61 * SECOND
    assert commit_and_deploy(
        a, one(otel, {"service.name": "checkout", "deployment.environment.name": "prod"}, p, start)
    ) == (SHA_B, "d2")
    assert commit_and_deploy(
        a, one(otel, {"service.name": "checkout", "deployment.environment.name": "staging"}, p, start)
    ) == ("", "")
    assert commit_and_deploy(
        a, one(otel, {"service.name": "payments", "deployment.environment.name": "prod"}, p, start)
    ) == ("", "")
    # the deprecated deployment.environment attribute is read too
    assert commit_and_deploy(
        a, one(otel, {"service.name": "checkout", "deployment.environment": "prod"}, p, start)
    ) == (SHA_B, "d2")


def test_timeline_changes_are_seen_by_later_lookups(otel: Otel) -> None:
    tl = DeployTimeline()
    a = Attributor([shop()], tl)
    res = {"service.name": "checkout", "deployment.environment.name": "prod"}
    span = one(otel, res, {"code.file.path": "services/payments/api.py"}, start=T0 + 10 * SECOND)
    assert commit_and_deploy(a, span) == ("", "")
    tl.add(deploy("d1", SHA_A, T0))
    assert commit_and_deploy(a, span) == (SHA_A, "d1")
    tl.add(deploy("d2", SHA_B, T0 + 5 * SECOND))
    assert commit_and_deploy(a, span) == (SHA_B, "d2")
    # a corrected event for d2 (it was deployed later than first reported)
    tl.add(deploy("d2", SHA_B, T0 + 20 * SECOND))
    assert commit_and_deploy(a, span) == (SHA_A, "d1")


def test_hot_and_slow_paths_agree_on_random_spans(otel: Otel) -> None:
    """group_ids (cached intervals) against attribute()/commit_of() and the timeline itself."""
    rng = random.Random(7)
    services = {"checkout": "c0ffee1234", "payments": "", "search": ""}
    events = []
    for i in range(12):
        svc = rng.choice(sorted(services))
        sha = services[svc] if services[svc] and rng.random() < 0.5 else f"{rng.getrandbits(160):040x}"
        events.append(
            deploy(
                f"d{i}",
                sha,
                T0 + rng.randrange(0, 600) * SECOND,
                service=svc,
                status=rng.choice(["succeeded", "succeeded", "failed"]),
            )
        )
    tl = DeployTimeline(events)
    a = Attributor([shop()], tl)
    spans: list[Span] = []
    for svc, version in services.items():
        res = {"service.name": svc, "deployment.environment.name": "prod"}
        if version:
            res["service.version"] = version
        batch = otel.batch(res)
        for _ in range(150):
            attrs: dict[str, Any] = {
                "code.file.path": f"services/{svc}/{rng.choice(['api', 'db', 'retry'])}/x.py"
            }
            if rng.random() < 0.3:
                attrs["http.route"] = rng.choice(["/api/cart/1", "/api/other"])
            start = T0 + rng.randrange(-60, 700) * SECOND
            batch.add("op", start, start + MS, attributes=attrs)
        spans.extend(otel.decode(batch.spans))
    rng.shuffle(spans)
    gids = a.group_ids(spans)
    for span, gid in zip(spans, gids, strict=True):
        key = a.group(gid)
        att = a.attribute(span)
        assert isinstance(att, Attribution)
        live = tl.deploy_at(span.resource.service, span.resource.environment, span.start_unix_nano)
        static = span.resource.service_version
        if static:
            expected = (static, live.deploy_id if live is not None and live.commit_sha == static else "")
        else:
            expected = (live.commit_sha, live.deploy_id) if live is not None else ("", "")
        assert key == GroupKey(
            span.resource.service, "prod", "shop", att.module, att.owners, expected[0], expected[1], ""
        ), span
        assert a.commit_of(span) == expected


# -------------------------------------------------------------------------------- groups


def test_group_ids_are_stable_and_dense(otel: Otel) -> None:
    a = Attributor([shop()])
    res = {"service.name": "checkout", "deployment.environment.name": "prod", "service.version": SHA_A}
    spans = otel.core_spans(
        res,
        [
            ("a", T0, T0 + MS, {"code.file.path": "services/payments/api.py"}),
            ("b", T0 + 1, T0 + MS, {"code.file.path": "services/checkout/api.py"}),
            ("c", T0 + 2, T0 + MS, {"code.file.path": "services/payments/other.py"}),
            ("d", T0 + 3, T0 + MS, {"http.route": "/api/cart/9"}),
        ],
    )
    gids = a.group_ids(spans)
    assert gids[0] == gids[2]  # same module, owners, commit
    assert len(set(gids)) == 3
    assert sorted(set(gids)) == [0, 1, 2]
    assert a.group_ids(list(reversed(spans))) == list(reversed(gids))
    assert [a.group_of(s) for s in spans] == gids
    assert a.group(gids[0]) == GroupKey(
        "checkout", "prod", "shop", "services/payments", ("@acme/payments", "@alice"), SHA_A, "", ""
    )
    assert a.group(gids[3]).module == "checkout/api"
    assert all(a.is_attributed(g) for g in gids)


def test_unattributed_groups_carry_the_reason(otel: Otel) -> None:
    a = Attributor([shop()])
    res = {"service.name": "checkout"}
    spans = otel.core_spans(
        res,
        [
            ("a", T0, T0 + MS, {"code.file.path": "/opt/elsewhere/x.py"}),
            ("b", T0, T0 + MS, {"code.namespace": "shop.unknown"}),
            ("c", T0, T0 + MS, {}),
        ],
    )
    keys = [a.group(g) for g in a.group_ids(spans)]
    assert [k.unattributed_reason for k in keys] == ["external", "no_rule", "no_location"]
    assert {k.module for k in keys} == {"(unattributed)"}
    assert {k.repository for k in keys} == {"shop"}


def test_overflow_group_is_per_service_and_environment() -> None:
    a = Attributor([shop()])
    k1 = GroupKey("checkout", "prod", "shop", "m", ("@x",), SHA_A, "d1", "")
    k2 = GroupKey("checkout", "prod", "shop", "other", (), "", "", "")
    k3 = GroupKey("checkout", "staging", "shop", "m", (), "", "", "")
    g1, g2, g3 = a.overflow_group(k1), a.overflow_group(k2), a.overflow_group(k3)
    assert g1 == g2 != g3
    assert a.group(g1) == GroupKey("checkout", "prod", "", "(overflow)", (), "", "", "overflow")
    assert not a.is_attributed(g1)


def test_spans_of_different_services_at_different_paths_keep_their_service(otel: Otel) -> None:
    """The part that works: different paths (so different attributions) never mix."""
    a = Attributor([])
    s1 = one(otel, {"service.name": "checkout"}, {"code.file.path": "svc/checkout/a.py"})
    s2 = one(otel, {"service.name": "payments"}, {"code.file.path": "svc/payments/a.py"})
    k1, k2 = (a.group(g) for g in a.group_ids([s1, s2]))
    assert (k1.service, k2.service) == ("checkout", "payments")


def test_same_path_in_two_services_gets_two_groups(otel: Otel) -> None:
    a = Attributor([])
    s1 = one(
        otel,
        {"service.name": "checkout", "deployment.environment.name": "prod"},
        {"code.file.path": "lib/db/pool.py"},
    )
    s2 = one(
        otel,
        {"service.name": "payments", "deployment.environment.name": "prod"},
        {"code.file.path": "lib/db/pool.py"},
    )
    k1, k2 = (a.group(g) for g in a.group_ids([s1, s2]))
    assert (k1.service, k2.service) == ("checkout", "payments")


def test_same_path_in_two_environments_gets_two_groups(otel: Otel) -> None:
    a = Attributor([])
    s1 = one(
        otel,
        {"service.name": "checkout", "deployment.environment.name": "prod"},
        {"code.file.path": "lib/db/pool.py"},
    )
    s2 = one(
        otel,
        {"service.name": "checkout", "deployment.environment.name": "staging"},
        {"code.file.path": "lib/db/pool.py"},
    )
    assert a.group(a.group_of(s2)).environment == "staging"  # on a fresh attributor: right
    a2 = Attributor([])
    k1, k2 = (a2.group(g) for g in a2.group_ids([s1, s2]))
    assert (k1.environment, k2.environment) == ("prod", "staging")


def test_unattributed_spans_of_two_services_get_their_own_groups(otel: Otel) -> None:
    a = Attributor([])
    s1 = one(otel, {"service.name": "checkout"}, {})
    s2 = one(otel, {"service.name": "payments"}, {})
    k1, k2 = (a.group(g) for g in a.group_ids([s1, s2]))
    assert (k1.service, k2.service) == ("checkout", "payments")


# ------------------------------------------------------------------------------- explain


def test_explain_a_path() -> None:
    a = Attributor([shop(url="https://github.com/acme/shop")])
    e = a.explain("/srv/shop/services/payments/retry/backoff.py", "checkout")
    assert e.normalized_path == "services/payments/retry/backoff.py"
    assert e.repository == "https://github.com/acme/shop"
    assert e.module == "payments/retry"
    assert "services/payments/retry/**" in e.module_rule
    assert e.owners == ("@acme/payments", "@alice")
    assert e.codeowners_line == 3
    assert e.codeowners_text == "services/payments/     @acme/payments @alice"
    assert e.reason == ""


def test_explain_fallback_and_external() -> None:
    a = Attributor([shop()])
    e = a.explain("services/inventory/deep/x.py")
    assert (e.module, e.owners, e.codeowners_line) == ("services/inventory", ("@acme/platform",), 2)
    assert "module_depth=2" in e.module_rule
    ext = a.explain("/usr/lib/python3.11/json/decoder.py")
    assert ext.normalized_path is None
    assert ext.reason == "external"
    assert ext.module == "(unattributed)"


def test_explain_uses_the_services_repository() -> None:
    other = Repository(
        name="billing",
        services=frozenset({"invoicing"}),
        modules=ModuleConfig.from_mapping({"modules": [{"name": "inv", "paths": ["services/**"]}]}),
    )
    a = Attributor([shop(), other])
    assert a.explain("services/payments/retry/x.py", "invoicing").module == "inv"
    assert a.explain("services/payments/retry/x.py", "checkout").module == "payments/retry"


def test_explain_agrees_with_attribute_for_paths(otel: Otel) -> None:
    a = Attributor([shop()])
    for path in (
        "/srv/shop/services/payments/api.py",
        "services/payments/retry/r.py",
        "services/payments/vendored/v.py",
        "docs/a/b.md",
        "main.py",
    ):
        att = a.attribute(one(otel, {"service.name": "checkout"}, {"code.file.path": path}))
        e = a.explain(path, "checkout")
        assert isinstance(att, Attribution)
        assert (e.module, e.owners, e.codeowners_line, e.normalized_path) == (
            att.module,
            att.owners,
            att.codeowners_line,
            att.path,
        )


def test_explain_agrees_with_attribute_for_path_rule_owners(otel: Otel) -> None:
    mods = ModuleConfig.from_mapping(
        {"modules": [{"name": "pay", "paths": ["pay/**"], "owners": ["@acme/pay"]}]}
    )
    a = Attributor([Repository(name="r", modules=mods)])
    att = a.attribute(one(otel, {"service.name": "checkout"}, {"code.file.path": "pay/x.py"}))
    assert isinstance(att, Attribution)
    assert a.explain("pay/x.py", "checkout").owners == att.owners


def test_explain_of_a_service_without_repository_says_so(otel: Otel) -> None:
    a = Attributor(
        [shop(services=frozenset({"checkout"})), Repository(name="b", services=frozenset({"inv"}))]
    )
    att = a.attribute(one(otel, {"service.name": "ledger"}, {"code.file.path": "services/x/y.py"}))
    assert isinstance(att, Unattributed) and att.reason == "no_repository"
    e = a.explain("services/x/y.py", "ledger")
    assert e.module == "(unattributed)"


# ----------------------------------------------------------------------- wanted attributes


def test_wanted_attributes_follow_the_rules() -> None:
    only_paths = Attributor(
        [
            Repository(
                name="r", modules=ModuleConfig.from_mapping({"modules": [{"name": "a", "paths": ["a/**"]}]})
            )
        ]
    )
    assert set(only_paths.wanted_attributes) == {"code.file.path", "code.filepath"}
    with_routes = Attributor([shop()])
    assert {"http.route", "rpc.service", "rpc.method", "code.namespace", "code.function.name"} <= set(
        with_routes.wanted_attributes
    )
