"""modules.yaml: code location -> module (attribution/modules.py).

Matcher-level tests ask :class:`ModuleMatcher` directly; precedence and the unattributed
reasons are checked end to end on spans made by the real OpenTelemetry SDK, decoded from
its OTLP encoding and attributed by :class:`Attributor`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from attribution.attribute import Attributor
from attribution.model import Attribution, Unattributed
from attribution.modules import ROOT_MODULE, ModuleConfig, ModuleConfigError, ModuleMatcher
from attribution.repository import Repository

if TYPE_CHECKING:
    from conftest import Otel

T0 = 1_700_000_040 * 1_000_000_000
MS = 1_000_000


def matcher(data: dict[str, Any], **kw: Any) -> ModuleMatcher:
    return ModuleMatcher(ModuleConfig.from_mapping(data, "modules.yaml", **kw))


def path_module(m: ModuleMatcher, rel: str, service: str = "svc") -> str | None:
    rule = m.match_path(rel, service)
    return rule.name if rule is not None else None


def other_module(
    m: ModuleMatcher,
    *,
    service: str = "svc",
    namespace: str = "",
    function: str = "",
    route: str = "",
    rpc: str = "",
    name: str = "",
) -> str | None:
    rule = m.match_other(service, namespace, function, route, rpc, name)
    return rule.name if rule is not None else None


# ----------------------------------------------------------------------------- path rules


def test_path_rules_first_match_wins_in_file_order() -> None:
    m = matcher(
        {
            "modules": [
                {"name": "retry", "paths": ["services/payments/retry/**"]},
                {"name": "payments", "paths": ["services/payments/**"]},
                {"name": "also-retry", "paths": ["services/payments/retry/*.py"]},
            ]
        }
    )
    assert path_module(m, "services/payments/retry/backoff.py") == "retry"
    assert path_module(m, "services/payments/api.py") == "payments"
    assert path_module(m, "services/checkout/api.py") is None
    # the same rules in the other order: the broad rule now wins everything
    m2 = matcher(
        {
            "modules": [
                {"name": "payments", "paths": ["services/payments/**"]},
                {"name": "retry", "paths": ["services/payments/retry/**"]},
            ]
        }
    )
    assert path_module(m2, "services/payments/retry/backoff.py") == "payments"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # `**/` in the middle matches zero or more directories
        ("services/retry/a.py", "mid"),
        ("services/x/retry/a.py", "mid"),
        ("services/x/y/z/retry/a.py", "mid"),
        ("services/retryx/a.py", None),
        # leading `**/` matches in any directory, including the top
        ("Makefile", "makefiles"),
        ("deep/down/Makefile", "makefiles"),
        # trailing `/**` matches everything inside, at any depth, but not the directory name itself
        ("libs/core/a.py", "libs"),
        ("libs/core/x/y/z.py", "libs"),
        ("libsx/a.py", None),
        # `*` does not cross `/`
        ("top/one.py", "top-py"),
        ("top/sub/one.py", None),
        # a pattern without `/` matches the name at any depth (gitignore)
        ("a/b/c/notes.md", "markdown"),
        ("notes.md", "markdown"),
    ],
)
def test_gitignore_glob_semantics(path: str, expected: str | None) -> None:
    m = matcher(
        {
            "modules": [
                {"name": "mid", "paths": ["services/**/retry/*.py"]},
                {"name": "makefiles", "paths": ["**/Makefile"]},
                {"name": "libs", "paths": ["libs/**"]},
                {"name": "top-py", "paths": ["top/*.py"]},
                {"name": "markdown", "paths": ["*.md"]},
            ]
        }
    )
    assert path_module(m, path) == expected


def test_rule_with_several_paths_matches_any_of_them() -> None:
    m = matcher({"modules": [{"name": "web", "paths": ["frontend/**", "static/*.js"]}]})
    assert path_module(m, "frontend/app/main.ts") == "web"
    assert path_module(m, "static/app.js") == "web"
    assert path_module(m, "static/app.css") is None


def test_services_filter_restricts_a_rule_to_its_services() -> None:
    m = matcher(
        {
            "modules": [
                {"name": "checkout-shared", "paths": ["shared/**"], "services": ["checkout"]},
                {"name": "shared", "paths": ["shared/**"]},
                {"name": "cart-ns", "namespaces": ["shop.cart"], "services": ["checkout", "cart"]},
            ]
        }
    )
    assert path_module(m, "shared/util.py", "checkout") == "checkout-shared"
    assert path_module(m, "shared/util.py", "payments") == "shared"
    assert other_module(m, service="cart", namespace="shop.cart") == "cart-ns"
    assert other_module(m, service="payments", namespace="shop.cart") is None


# ------------------------------------------------------------------- namespaces, routes, names


@pytest.mark.parametrize(
    ("namespace", "function", "expected"),
    [
        ("shop.checkout", "", True),  # the whole value
        ("shop.checkout.cart", "", True),  # prefix, then a '.' separator
        ("shop.checkout:Cart", "", True),
        ("shop.checkout/cart", "", True),
        ("shop.checkout#add", "", True),
        ("shop.checkout$Inner", "", True),
        ("shop.checkout\\Cart", "", True),
        ("shop.checkoutv2", "", False),  # not at a separator boundary
        ("shop.check", "", False),
        ("other.shop.checkout", "", False),  # a prefix, not a substring
        ("", "shop.checkout.add_item", True),  # code.function.name is tried too
        ("", "shop.checkoutish", False),
    ],
)
def test_namespace_prefix_at_separator_boundaries(namespace: str, function: str, expected: bool) -> None:
    m = matcher({"modules": [{"name": "checkout", "namespaces": ["shop.checkout"]}]})
    got = other_module(m, namespace=namespace, function=function)
    assert (got == "checkout") is expected


def test_namespace_prefix_ending_in_a_separator_matches_any_continuation() -> None:
    m = matcher({"modules": [{"name": "pkg", "namespaces": ["com.acme."]}]})
    assert other_module(m, namespace="com.acme.billing") == "pkg"
    assert other_module(m, namespace="com.acmex") is None


@pytest.mark.parametrize(
    ("route", "rpc", "expected"),
    [
        ("/api/cart/items", "", "cart"),
        ("/api/cart/items/42", "", None),  # '*' stops at '/'
        ("/api/cart/", "", "cart"),  # '*' matches the empty string
        ("/api/orders/1/lines/2", "", "orders"),  # '**' crosses '/'
        ("/api/orders/", "", "orders"),
        ("/api/user/7", "", "user"),  # '?' is one character
        ("/api/user/77", "", None),
        ("", "shop.Payments/Charge", "payments-rpc"),  # "rpc.service/rpc.method"
        ("", "shop.Payments/Charge/x", None),
        ("", "shop.Refunds/Charge", None),
        ("/API/CART/items", "", None),  # case-sensitive
    ],
)
def test_route_globs_on_http_route_and_rpc(route: str, rpc: str, expected: str | None) -> None:
    m = matcher(
        {
            "modules": [
                {"name": "cart", "routes": ["/api/cart/*"]},
                {"name": "orders", "routes": ["/api/orders/**"]},
                {"name": "user", "routes": ["/api/user/?"]},
                {"name": "payments-rpc", "routes": ["shop.Payments/*"]},
            ]
        }
    )
    assert other_module(m, route=route, rpc=rpc) == expected


def test_route_glob_is_anchored_and_escapes_regex_characters() -> None:
    m = matcher({"modules": [{"name": "v1", "routes": ["/v1.0/items(+)"]}]})
    assert other_module(m, route="/v1.0/items(+)") == "v1"
    assert other_module(m, route="/v1x0/items(+)") is None  # '.' is literal
    assert other_module(m, route="/prefix/v1.0/items(+)") is None
    assert other_module(m, route="/v1.0/items(+)/more") is None


def test_span_name_regex_is_searched_not_anchored() -> None:
    m = matcher(
        {
            "modules": [
                {"name": "cart", "span_names": ["^cart\\."]},
                {"name": "db", "span_names": ["SELECT|INSERT"]},
            ]
        }
    )
    assert other_module(m, name="cart.add") == "cart"
    assert other_module(m, name="x.cart.add") is None  # '^' anchors
    assert other_module(m, name="pg: INSERT orders") == "db"  # found anywhere
    assert other_module(m, name="cartadd") is None  # '.' escaped


def test_other_rules_first_match_in_file_order_whatever_the_kind() -> None:
    m = matcher(
        {
            "modules": [
                {"name": "by-name", "span_names": ["checkout"]},
                {"name": "by-route", "routes": ["/checkout"]},
                {"name": "by-ns", "namespaces": ["shop"]},
            ]
        }
    )
    # all three match: the first in the file wins
    assert other_module(m, namespace="shop.x", route="/checkout", name="checkout") == "by-name"
    assert other_module(m, namespace="shop.x", route="/checkout", name="other") == "by-route"
    assert other_module(m, namespace="shop.x", route="/other", name="other") == "by-ns"


# -------------------------------------------------------------------------------- fallback


@pytest.mark.parametrize(
    ("depth", "path", "expected"),
    [
        (1, "services/payments/retry/a.py", "services"),
        (2, "services/payments/retry/a.py", "services/payments"),
        (3, "services/payments/retry/a.py", "services/payments/retry"),
        (5, "services/payments/retry/a.py", "services/payments/retry"),
        (2, "main.py", ROOT_MODULE),
        (2, "lib/util.py", "lib"),
    ],
)
def test_directory_fallback_truncates_to_module_depth(depth: int, path: str, expected: str) -> None:
    m = matcher({"module_depth": depth})
    assert m.fallback(path) == expected


# ---------------------------------------------------------------------------- source roots


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/srv/shop/services/a.py", "services/a.py"),
        ("/srv/shop/vendor/lib/b.py", "b.py"),  # the longer root wins, whatever the order given
        ("/srv/shop/vendor/lib", None),  # the root itself is not a file
        ("/srv/shopping/a.py", None),  # a root matches at a '/' boundary only
        ("/usr/lib/python3.11/json/__init__.py", None),  # outside every root
        ("./services/a.py", "services/a.py"),  # './' dropped
        ("services/./x/../a.py", "services/a.py"),
        ("services/a.py", "services/a.py"),  # already relative
        ("../outside.py", None),
        ("services/../../outside.py", None),
        ("file:///srv/shop/services/a.py", "services/a.py"),
        ("services\\pay\\a.py", "services/pay/a.py"),  # backslashes become '/'
        ("  /srv/shop/services/a.py  ", "services/a.py"),
        ("", None),
    ],
)
def test_normalize_strips_source_roots(raw: str, expected: str | None) -> None:
    m = matcher({"source_roots": ["/srv/shop", "/srv/shop/vendor/lib/"]})
    assert m.normalize(raw) == expected


def test_source_roots_are_ordered_longest_first() -> None:
    for roots in (["/a", "/a/b/c", "/a/b"], ["/a/b/c", "/a/b", "/a"], ["/a/b", "/a", "/a/b/c"]):
        cfg = ModuleConfig.from_mapping({"source_roots": roots})
        assert cfg.source_roots == ("/a/b/c", "/a/b", "/a")
        assert ModuleMatcher(cfg).normalize("/a/b/c/d/e.py") == "d/e.py"


def test_extra_source_roots_are_added() -> None:
    m = matcher({"source_roots": ["/srv/shop"]}, extra_source_roots=["/opt/app"])
    assert m.normalize("/opt/app/x/y.py") == "x/y.py"
    assert m.normalize("/srv/shop/x/y.py") == "x/y.py"


def test_absolute_path_without_any_root_is_outside() -> None:
    assert matcher({}).normalize("/srv/shop/a.py") is None


# --------------------------------------------------------------- precedence, end to end (SDK)


PRECEDENCE_CONFIG: dict[str, Any] = {
    "source_roots": ["/srv/shop"],
    "module_depth": 2,
    "modules": [
        {"name": "by-name", "span_names": ["^cart\\."]},
        {"name": "by-route", "routes": ["/api/cart/*"]},
        {"name": "retry", "paths": ["services/payments/retry/**"]},
        {"name": "by-ns", "namespaces": ["shop.checkout"]},
    ],
}


def attribute_one(
    otel: Otel, config: dict[str, Any], name: str, attributes: dict[str, Any], service: str = "checkout"
) -> Attribution | Unattributed:
    attributor = Attributor([Repository(name="shop", modules=ModuleConfig.from_mapping(config))])
    (span,) = otel.core_spans({"service.name": service}, [(name, T0, T0 + MS, attributes)])
    return attributor.attribute(span)


@pytest.mark.parametrize(
    ("name", "attributes", "module", "path"),
    [
        # a path rule beats every other rule, wherever it is in the file
        (
            "cart.add",
            {
                "code.file.path": "/srv/shop/services/payments/retry/backoff.py",
                "http.route": "/api/cart/x",
                "code.namespace": "shop.checkout",
            },
            "retry",
            "services/payments/retry/backoff.py",
        ),
        # no path rule matches: the other rules in file order (name, then route, then namespace)
        (
            "cart.add",
            {"code.file.path": "services/cart/api.py", "http.route": "/api/cart/x"},
            "by-name",
            "services/cart/api.py",
        ),
        (
            "GET",
            {
                "code.file.path": "services/cart/api.py",
                "http.route": "/api/cart/x",
                "code.namespace": "shop.checkout",
            },
            "by-route",
            "services/cart/api.py",
        ),
        ("GET", {"code.namespace": "shop.checkout.cart"}, "by-ns", ""),
        ("GET", {"code.function.name": "shop.checkout.cart.add"}, "by-ns", ""),
        # nothing but a path: the directory fallback
        (
            "GET",
            {"code.file.path": "/srv/shop/services/cart/deep/api.py"},
            "services/cart",
            "services/cart/deep/api.py",
        ),
        # deprecated attribute name still read
        ("GET", {"code.filepath": "services/payments/retry/x.py"}, "retry", "services/payments/retry/x.py"),
    ],
)
def test_precedence_end_to_end(
    otel: Otel, name: str, attributes: dict[str, Any], module: str, path: str
) -> None:
    got = attribute_one(otel, PRECEDENCE_CONFIG, name, attributes)
    assert isinstance(got, Attribution), got
    assert (got.module, got.path) == (module, path)


def test_fallback_rule_description_names_module_depth(otel: Otel) -> None:
    cfg = dict(PRECEDENCE_CONFIG, module_depth=3)
    got = attribute_one(otel, cfg, "GET", {"code.file.path": "a/b/c/d/e.py"})
    assert isinstance(got, Attribution)
    assert got.module == "a/b/c"
    assert "module_depth=3" in got.module_rule


@pytest.mark.parametrize(
    ("name", "attributes", "reason"),
    [
        # a file outside every source root, and no other rule matches
        ("GET", {"code.file.path": "/usr/lib/python3.11/json/decoder.py"}, "external"),
        ("GET", {"code.file.path": "../elsewhere/x.py"}, "external"),
        # code attributes or a route, but no rule for them
        ("GET", {"code.namespace": "shop.inventory"}, "no_rule"),
        ("GET", {"http.route": "/api/orders"}, "no_rule"),
        ("GET", {"rpc.service": "shop.Inventory", "rpc.method": "Get"}, "no_rule"),
        # nothing to go on
        ("GET", {"http.method": "GET"}, "no_location"),
        ("GET", {}, "no_location"),
    ],
)
def test_unattributed_reasons(otel: Otel, name: str, attributes: dict[str, Any], reason: str) -> None:
    got = attribute_one(otel, PRECEDENCE_CONFIG, name, attributes)
    assert isinstance(got, Unattributed), got
    assert got.reason == reason
    assert got.detail  # says why


def test_external_file_still_matched_by_a_non_path_rule(otel: Otel) -> None:
    got = attribute_one(
        otel, PRECEDENCE_CONFIG, "GET", {"code.file.path": "/usr/lib/x.py", "http.route": "/api/cart/1"}
    )
    assert isinstance(got, Attribution)
    assert (got.module, got.path) == ("by-route", "")


def test_service_filter_end_to_end(otel: Otel) -> None:
    cfg = {"modules": [{"name": "co", "paths": ["shared/**"], "services": ["checkout"]}], "module_depth": 1}
    a = attribute_one(otel, cfg, "GET", {"code.file.path": "shared/x/y.py"}, service="checkout")
    b = attribute_one(otel, cfg, "GET", {"code.file.path": "shared/x/y.py"}, service="payments")
    assert isinstance(a, Attribution) and isinstance(b, Attribution)
    assert (a.module, b.module) == ("co", "shared")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"modulez": []}, ["modules.yaml", "unknown key 'modulez'"]),
        ({"modules": [{"name": "a", "path": ["x/**"]}]}, ["modules[0]", "unknown key 'path'"]),
        ({"modules": [{"paths": ["x/**"]}]}, ["modules[0].name", "required"]),
        ({"modules": [{"name": "  ", "paths": ["x/**"]}]}, ["modules[0].name"]),
        (
            {"modules": [{"name": "a", "paths": ["x/**"]}, {"name": "b"}]},
            ["modules[1]", "(b)", "needs at least one"],
        ),
        (
            {"modules": [{"name": "a", "span_names": ["ok", "(unclosed"]}]},
            ["modules[0].span_names[1]", "(unclosed", "regex"],
        ),
        ({"modules": [{"name": "a", "paths": ["ok/**", "bad/[x"]}]}, ["modules[0].paths[1]", "bad/[x"]),
        ({"modules": [{"name": "a", "paths": [""]}]}, ["modules[0].paths", "non-empty"]),
        ({"modules": [{"name": "a", "routes": [3]}]}, ["modules[0].routes"]),
        ({"modules": [{"name": "a", "paths": ["x/**"], "owners": {"a": 1}}]}, ["modules[0].owners"]),
        ({"modules": ["just a string"]}, ["modules[0]", "mapping"]),
        ({"modules": {"name": "a"}}, ["modules", "list"]),
        ({"module_depth": 0}, ["module_depth"]),
        ({"module_depth": True}, ["module_depth"]),
        ({"module_depth": "2"}, ["module_depth"]),
        ({"source_roots": ["relative/root"]}, ["source_roots", "relative/root", "absolute"]),
    ],
)
def test_config_errors_name_the_key(data: Any, fragments: list[str]) -> None:
    with pytest.raises(ModuleConfigError) as info:
        ModuleConfig.from_mapping(data, "modules.yaml")
    for fragment in fragments:
        assert fragment in str(info.value)


def test_config_errors_carry_the_line_number_when_known() -> None:
    with pytest.raises(ModuleConfigError, match=r"repo/modules\.yaml:17: modules\[1\]\.span_names\[0\]"):
        ModuleConfig.from_mapping(
            {"modules": [{"name": "a", "paths": ["a/**"]}, {"name": "b", "span_names": ["("]}]},
            "repo/modules.yaml",
            lines={0: 12, 1: 17},
        )


def test_non_mapping_config_is_rejected() -> None:
    with pytest.raises(ModuleConfigError, match="must be a mapping"):
        ModuleConfig.from_mapping(["modules"], "modules.yaml")  # type: ignore[arg-type]


def test_empty_config_is_valid_and_falls_back() -> None:
    cfg = ModuleConfig.from_mapping(None)
    assert cfg.rules == ()
    assert cfg.module_depth == 2
    assert ModuleMatcher(cfg).fallback("a/b/c/d.py") == "a/b"


def test_rule_owners_are_sorted_and_deduplicated() -> None:
    cfg = ModuleConfig.from_mapping(
        {"modules": [{"name": "a", "namespaces": ["x"], "owners": ["@z", "@a", "@z"]}]}
    )
    assert cfg.rules[0].owners == ("@a", "@z")


# ------------------------------------------------------------------------------- problems


def test_problems_reports_a_shadowed_path_rule() -> None:
    m = matcher(
        {
            "modules": [
                {"name": "payments", "paths": ["services/payments/**"]},
                {"name": "retry", "paths": ["services/payments/retry/**"]},
                {"name": "checkout", "paths": ["services/checkout/**"]},
            ]
        },
        lines={0: 3, 1: 5, 2: 7},
    )
    errors = [p for p in m.problems() if p.severity == "error"]
    assert len(errors) == 1
    (problem,) = errors
    assert problem.line == 5
    assert "modules[1]" in problem.message and "'retry'" in problem.message
    assert "modules[0]" in problem.message and "'payments'" in problem.message
    assert str(problem).startswith("modules.yaml:5: error:")
    # and indeed it never wins
    assert path_module(m, "services/payments/retry/a.py") == "payments"


def test_problems_catch_all_and_identical_patterns_shadow() -> None:
    m = matcher(
        {
            "modules": [
                {"name": "first", "paths": ["lib/*.py"]},
                {"name": "dup", "paths": ["lib/*.py"]},
                {"name": "everything", "paths": ["**"]},
                {"name": "late", "paths": ["tools/**"]},
            ]
        }
    )
    shadowed = {p.message.split("'")[1] for p in m.problems() if p.severity == "error"}
    assert shadowed == {"dup", "late"}


def test_problems_respect_service_scopes() -> None:
    # the earlier rule only covers checkout: a later rule for everyone is not shadowed
    m = matcher(
        {
            "modules": [
                {"name": "co", "paths": ["shared/**"], "services": ["checkout"]},
                {"name": "shared", "paths": ["shared/**"]},
                {"name": "co-too", "paths": ["shared/x/**"], "services": ["checkout"]},
            ]
        }
    )
    shadowed = {p.message.split("'")[1] for p in m.problems() if p.severity == "error"}
    assert shadowed == {"co-too"}


def test_problems_do_not_flag_disjoint_or_non_path_rules() -> None:
    m = matcher(
        {
            "modules": [
                {"name": "a", "paths": ["services/a/**"]},
                {"name": "b", "paths": ["services/b/**"]},
                {"name": "ns", "namespaces": ["shop"]},
                {"name": "both", "paths": ["services/a/x/**"], "namespaces": ["shop.x"]},
            ]
        }
    )
    assert [p for p in m.problems() if p.severity == "error"] == []


def test_problems_warn_about_a_module_defined_twice() -> None:
    m = matcher(
        {"modules": [{"name": "pay", "paths": ["pay/**"]}, {"name": "pay", "namespaces": ["shop.pay"]}]},
        lines={0: 2, 1: 4},
    )
    (warning,) = m.problems()
    assert warning.severity == "warning"
    assert warning.line == 4
    assert "'pay'" in warning.message and "modules[0]" in warning.message
