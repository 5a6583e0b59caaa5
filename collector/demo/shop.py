"""The bundled demo shop: simulated traffic from a small multi-service shop, instrumented
with the real OpenTelemetry SDK, and the ground truth of what it emitted.

The shop lives in one repository (``https://github.com/acme/shop``, deployed under the
source root ``/srv/shop``) and runs four services in environment ``prod``::

    frontend   Flask web app: home, product, search, cart and checkout pages
    checkout   FastAPI: carts, pricing, orders; calls inventory (HTTP) and payments (gRPC)
    payments   gRPC: Authorize and Capture; fraud scoring, card gateways, retries, ledger
    inventory  FastAPI: stock, reservations, catalog; a Kafka consumer; two cron jobs.
               Its spans are sampled: each carries ``SampleRate`` (4 = 1 in 4 kept; error
               subtrees are always kept with ``SampleRate`` 1)

``modules.yaml`` and ``CODEOWNERS`` next to this file describe the repository; see
:func:`demo_dir`.  How spans carry their location, as real instrumentation does:

* code spans carry ``code.file.path`` (absolute, under ``/srv/shop``),
  ``code.function.name`` and ``code.line.number``; inventory's older instrumentation sets the
  deprecated ``code.filepath``, ``code.function``, ``code.namespace`` and ``code.lineno``;
* auto-instrumented HTTP and gRPC server spans and the Kafka consumer spans carry no
  ``code.*`` attribute: the ``routes`` and ``span_names`` rules of ``modules.yaml`` place them;
* the payments ledger only sets ``code.namespace`` (or a qualified ``code.function.name``):
  the ``namespaces`` rule places it;
* client spans of ``requests``, ``urllib3``, ``grpc`` and ``kafka`` point into
  ``/usr/lib/python3/site-packages``: unattributed (external);
* Redis spans and health checks have no location and match no rule: unattributed;
* ``libs/featureflags/`` matches no path rule: its module is the ``module_depth`` fallback,
  ``libs/featureflags``.

Failing spans record real exceptions (``span.record_exception``), raised by stand-ins of the
shop's files compiled at their ``/srv/shop`` paths (:mod:`collector.demo.failures`): a callee
throws (``payments/retry``, a gateway adapter, ``libs/db`` inside psycopg, a client inside
requests or grpc, or through the real ``json``), and a caller that fails because of it wraps
the error (``raise PaymentError(...) from exc``).  So ``payments/api`` fails more after the
payments deploy, but every one of its errors has an errored child: its own error rate stays 0.

Deploys (events per ``schemas/events/deploy.schema.json``): every service's initial commit
is deployed at the start; ``payments`` is deployed at 40 % of the run and that commit
regresses ``payments/retry`` (every span of the module 2.5x slower, errors 1 % -> 8 %);
``checkout`` is deployed at 70 % of the run, benignly.  ``service.version`` is a semver, so
the commit of a span is only known from the deploy timeline.

Ground truth is by construction: the generator decides the module, owners and commit of a
span when it chooses the code path, never by running an attributor.  The commit of a span is
the one live at its start; traces in which some span of a service starts before one of its
deploys and ends at or after it are not emitted, so start and end agree.  Time is simulated:
every timestamp is passed to the SDK explicitly, and the same seed gives the same bytes (on
one interpreter: stack-trace frames inside the real ``json`` package carry its paths).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, set_span_in_context

from attribution.model import UNATTRIBUTED_MODULE, AttrValue
from collector.demo.failures import SITE_PACKAGES, Link, Site, raise_chain

__all__ = [
    "DEFAULT_START_UNIX_NANO",
    "ENVIRONMENT",
    "REPOSITORY",
    "SAMPLE_RATE_ATTRIBUTE",
    "SERVICES",
    "SOURCE_ROOT",
    "Traffic",
    "TruthRow",
    "code_files",
    "demo_dir",
    "generate",
]

SOURCE_ROOT: Final = "/srv/shop"
REPOSITORY: Final = "https://github.com/acme/shop"
ENVIRONMENT: Final = "prod"
SAMPLE_RATE_ATTRIBUTE: Final = "SampleRate"
DEFAULT_START_UNIX_NANO: Final = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z
SERVICES: Final[tuple[str, ...]] = ("checkout", "frontend", "inventory", "payments")
BATCH_SPANS: Final = 200

_MS: Final = 1_000_000
_S: Final = 1_000_000_000
_INVENTORY_KEEP_ONE_IN: Final = 4
_FRONTEND_RATE_PER_S: Final = 6.0
_STOCK_EVENTS_PER_S: Final = 1.5
_REGRESSION_SLOWDOWN: Final = 2.5
_RETRY_ERROR_BEFORE: Final = 0.01
_RETRY_ERROR_AFTER: Final = 0.08
_RETRY_MESSAGES: Final = {
    "IdempotencyStoreTimeout": "idempotency store timed out after 250 ms",
    "CircuitStateUnavailable": "circuit state unreadable",
    "RetryPolicyError": "no retry policy for 'adyen-eu'",
    "BackoffInterrupted": "backoff interrupted by shutdown",
}

TruthKey = tuple[str, str, str, tuple[str, ...], str]


@dataclass(frozen=True)
class TruthRow:
    """What the shop emitted for one (service, environment, module, owners, commit).

    ``spans`` counts emitted spans, ``spans_adjusted`` sums their ``SampleRate`` (1 when
    absent), ``durations_ns`` holds every emitted span's duration, ascending.  ``own_errors``
    counts errored spans with no errored child, ``exception_events`` the exceptions recorded
    on the row's spans, ``exceptions`` the recorded exceptions whose root cause this row's
    code threw (the innermost frame under ``/srv/shop`` of the first exception printed), and
    ``exception_types`` those exceptions' ``exception.type``, with their counts, sorted.
    """

    spans: int
    spans_adjusted: float
    errors: int
    durations_ns: tuple[int, ...]
    own_errors: int = 0
    exception_events: int = 0
    exceptions: int = 0
    exception_types: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Traffic:
    """Generated traffic, its deploy events and its ground truth."""

    requests: list[bytes]  # serialized ExportTraceServiceRequest, in time order
    deploys: list[dict[str, Any]]  # deploy events (schemas/events/deploy.schema.json), in time order
    truth: dict[TruthKey, TruthRow]  # (service, environment, module, owners_sorted, commit_sha) -> row
    start_unix_nano: int
    end_unix_nano: int
    regressed: tuple[str, str, str]  # (service, module, deploy_id) of the regressing deploy

    @property
    def total_spans(self) -> int:
        return sum(row.spans for row in self.truth.values())


def code_files() -> list[str]:
    """The shop's files its spans point at (``code.file.path`` or ``code.filepath`` under
    :data:`SOURCE_ROOT`), sorted: the files of the demo's git history."""
    out = set()
    for value in globals().values():
        if isinstance(value, _Loc):
            path = value.attrs.get("code.file.path") or value.attrs.get("code.filepath")
            if isinstance(path, str) and path.startswith(f"{SOURCE_ROOT}/"):
                out.add(path)
    return sorted(out)


def demo_dir() -> pathlib.Path:
    """The directory holding the shop's ``modules.yaml`` and ``CODEOWNERS`` (package data)."""
    return pathlib.Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------
# Code locations.  Each knows, by construction, its module and owners: path locations get
# the owners CODEOWNERS gives their file, rule locations the ``owners:`` of their rule.

_PLATFORM: Final = ("@acme/platform",)
_DB: Final = ("@acme/platform", "@bob")
_WEB: Final = ("@acme/web",)
_SEARCH: Final = ("@acme/search", "@alice")
_INTEGRATIONS: Final = ("@acme/integrations",)  # CODEOWNERS "**/clients/", after the services
_CHECKOUT: Final = ("@acme/checkout",)
_PRICING: Final = ("@acme/checkout", "@acme/finance")
_PAYMENTS: Final = ("@acme/payments",)
_BACKOFF: Final = ("@acme/payments", "@carol")  # the file override at the end of CODEOWNERS
_RISK: Final = ("@acme/risk",)
_LEDGER: Final = ("@acme/finance", "@acme/payments")  # owners: of the ledger namespace rule
_INVENTORY: Final = ("@acme/inventory",)
_UNOWNED: Final[tuple[str, ...]] = ()  # "/services/inventory/legacy/" has no owners


class _Loc:
    """Where a span comes from: its location attributes, module, owners and span name."""

    __slots__ = ("attrs", "module", "name", "owners", "site")

    def __init__(
        self,
        module: str,
        owners: tuple[str, ...],
        attrs: dict[str, AttrValue],
        name: str,
        site: Site | None = None,
    ) -> None:
        self.module = module
        self.owners = tuple(sorted(owners))
        self.attrs = attrs
        self.name = name
        self.site = site  # the shop function a failure's stack trace shows for it


def _code(
    module: str, owners: tuple[str, ...], path: str, function: str, line: int, *, old_style: bool = False
) -> _Loc:
    file = f"{SOURCE_ROOT}/{path}"
    short = function.rsplit(".", 1)[-1]
    attrs: dict[str, AttrValue]
    if old_style:  # semantic conventions before 1.30
        namespace = function.rsplit(".", 1)[0]
        attrs = {
            "code.filepath": file,
            "code.function": short,
            "code.namespace": namespace,
            "code.lineno": line,
        }
    else:
        attrs = {"code.file.path": file, "code.function.name": function, "code.line.number": line}
    return _Loc(module, owners, attrs, short, Site(file, function, line, short))


def _external(path: str, function: str, line: int) -> _Loc:
    attrs: dict[str, AttrValue] = {
        "code.file.path": f"{SITE_PACKAGES}/{path}",
        "code.function.name": function,
        "code.line.number": line,
    }
    return _Loc(UNATTRIBUTED_MODULE, (), attrs, function.rsplit(".", 1)[-1])


def _rule(
    module: str,
    owners: tuple[str, ...],
    attrs: dict[str, AttrValue] | None = None,
    name: str = "",
    site: Site | None = None,
) -> _Loc:
    return _Loc(module, owners, attrs or {}, name, site)


_NOWHERE: Final = _Loc(UNATTRIBUTED_MODULE, (), {}, "")

# frontend ---------------------------------------------------------------------------
_FW = "services/frontend/web"
FE_AUTH = _code("frontend/web", _WEB, f"{_FW}/middleware.py", "shop.frontend.web.middleware.authenticate", 41)
FE_RENDER = _code(
    "frontend/web", _WEB, f"{_FW}/templates.py", "shop.frontend.web.templates.render_template", 88
)
FE_HOME = _code("frontend/web", _WEB, f"{_FW}/views/home.py", "shop.frontend.web.views.home.render_home", 23)
FE_PRODUCT = _code(
    "frontend/web", _WEB, f"{_FW}/views/product.py", "shop.frontend.web.views.product.render_product", 37
)
FE_SEARCH = _code(
    "frontend/web", _WEB, f"{_FW}/views/search.py", "shop.frontend.web.views.search.render_search", 29
)
FE_CART = _code("frontend/web", _WEB, f"{_FW}/views/cart.py", "shop.frontend.web.views.cart.show_cart", 31)
FE_ADD = _code("frontend/web", _WEB, f"{_FW}/views/cart.py", "shop.frontend.web.views.cart.add_to_cart", 58)
FE_CHECKOUT = _code(
    "frontend/web", _WEB, f"{_FW}/views/checkout.py", "shop.frontend.web.views.checkout.submit_checkout", 45
)
_FWC = f"{_FW}/clients"
FE_CLI_FEATURED = _code(
    "frontend/web",
    _INTEGRATIONS,
    f"{_FWC}/inventory.py",
    "shop.frontend.web.clients.inventory.featured_products",
    19,
)
FE_CLI_STOCK = _code(
    "frontend/web",
    _INTEGRATIONS,
    f"{_FWC}/inventory.py",
    "shop.frontend.web.clients.inventory.stock_level",
    34,
)
FE_CLI_SEARCH = _code(
    "frontend/web",
    _INTEGRATIONS,
    f"{_FWC}/inventory.py",
    "shop.frontend.web.clients.inventory.search_catalog",
    52,
)
FE_CLI_CART = _code(
    "frontend/web", _INTEGRATIONS, f"{_FWC}/checkout.py", "shop.frontend.web.clients.checkout.get_cart", 22
)
FE_CLI_ADD = _code(
    "frontend/web", _INTEGRATIONS, f"{_FWC}/checkout.py", "shop.frontend.web.clients.checkout.add_item", 40
)
FE_CLI_ORDER = _code(
    "frontend/web", _INTEGRATIONS, f"{_FWC}/checkout.py", "shop.frontend.web.clients.checkout.place_order", 61
)
_FS = "services/frontend/search"
SE_PARSE = _code("frontend/search", _SEARCH, f"{_FS}/query.py", "shop.frontend.search.query.parse_query", 17)
SE_SYNONYMS = _code(
    "frontend/search", _SEARCH, f"{_FS}/synonyms.py", "shop.frontend.search.synonyms.expand", 12
)
SE_HITS = _code(
    "frontend/search", _SEARCH, f"{_FS}/index_client.py", "shop.frontend.search.index_client.fetch_hits", 26
)
SE_RANK = _code(
    "frontend/search", _SEARCH, f"{_FS}/ranking.py", "shop.frontend.search.ranking.rank_results", 44
)
SE_SUGGEST = _code(
    "frontend/search", _SEARCH, f"{_FS}/suggest.py", "shop.frontend.search.suggest.suggest_terms", 19
)
_FSS = "services/frontend/session"
SS_LOAD = _code("frontend/session", _WEB, f"{_FSS}/store.py", "shop.frontend.session.store.load_session", 30)
SS_COOKIE = _code(
    "frontend/session", _WEB, f"{_FSS}/cookies.py", "shop.frontend.session.cookies.decode_cookie", 14
)
SS_CSRF = _code("frontend/session", _WEB, f"{_FSS}/csrf.py", "shop.frontend.session.csrf.verify_token", 21)
# libs/featureflags/ matches no path rule: module_depth (2) fallback.
FF_ENABLED = _code(
    "libs/featureflags",
    _PLATFORM,
    "libs/featureflags/client.py",
    "shoplib.featureflags.client.is_enabled",
    48,
)
FF_CACHE = _code(
    "libs/featureflags", _PLATFORM, "libs/featureflags/cache.py", "shoplib.featureflags.cache.get", 22
)

# checkout ---------------------------------------------------------------------------
_CA = "services/checkout/api"
CK_ADD = _code("checkout/api", _CHECKOUT, f"{_CA}/handlers.py", "shop.checkout.api.handlers.add_item", 52)
CK_GET = _code("checkout/api", _CHECKOUT, f"{_CA}/handlers.py", "shop.checkout.api.handlers.get_cart", 31)
CK_CHECKOUT = _code(
    "checkout/api", _CHECKOUT, f"{_CA}/handlers.py", "shop.checkout.api.handlers.checkout", 77
)
CK_VALID_ITEM = _code(
    "checkout/api", _CHECKOUT, f"{_CA}/schemas.py", "shop.checkout.api.schemas.validate_item", 18
)
CK_VALID_ORDER = _code(
    "checkout/api", _CHECKOUT, f"{_CA}/schemas.py", "shop.checkout.api.schemas.validate_checkout", 40
)
CK_MAP_ERROR = _code("checkout/api", _CHECKOUT, f"{_CA}/errors.py", "shop.checkout.api.errors.map_error", 12)
_CC = "services/checkout/clients"
CK_CLI_AUTH = _code(
    "checkout/api", _INTEGRATIONS, f"{_CC}/payments.py", "shop.checkout.clients.payments.authorize", 27
)
CK_CLI_CAPTURE = _code(
    "checkout/api", _INTEGRATIONS, f"{_CC}/payments.py", "shop.checkout.clients.payments.capture", 49
)
CK_CLI_RESERVE = _code(
    "checkout/api", _INTEGRATIONS, f"{_CC}/inventory.py", "shop.checkout.clients.inventory.reserve", 23
)
_CT = "services/checkout/cart"
CT_ADD = _code("checkout/cart", _CHECKOUT, f"{_CT}/service.py", "shop.checkout.cart.service.add_item", 34)
CT_LOAD = _code("checkout/cart", _CHECKOUT, f"{_CT}/service.py", "shop.checkout.cart.service.load_cart", 19)
CT_RECALC = _code(
    "checkout/cart", _CHECKOUT, f"{_CT}/model.py", "shop.checkout.cart.model.Cart.recalculate", 61
)
CT_FETCH = _code(
    "checkout/cart", _CHECKOUT, f"{_CT}/repository.py", "shop.checkout.cart.repository.fetch_cart", 22
)
CT_SAVE = _code(
    "checkout/cart", _CHECKOUT, f"{_CT}/repository.py", "shop.checkout.cart.repository.save_cart", 45
)
_CP = "services/checkout/pricing"
PR_ENGINE = _code(
    "checkout/pricing",
    _PRICING,
    f"{_CP}/rules/engine.py",
    "shop.checkout.pricing.rules.engine.price_cart",
    33,
)
PR_LOADER = _code(
    "checkout/pricing",
    _PRICING,
    f"{_CP}/rules/loader.py",
    "shop.checkout.pricing.rules.loader.load_rules",
    15,
)
PR_DISCOUNTS = _code(
    "checkout/pricing", _PRICING, f"{_CP}/discounts.py", "shop.checkout.pricing.discounts.apply_discounts", 27
)
PR_TAX = _code("checkout/pricing", _PRICING, f"{_CP}/tax.py", "shop.checkout.pricing.tax.compute_tax", 19)
PR_CURRENCY = _code(
    "checkout/pricing", _PRICING, f"{_CP}/currency.py", "shop.checkout.pricing.currency.convert", 11
)
_CO = "services/checkout/orders"
OR_CREATE = _code(
    "checkout/orders", _CHECKOUT, f"{_CO}/create.py", "shop.checkout.orders.create.create_order", 38
)
OR_INSERT = _code(
    "checkout/orders", _CHECKOUT, f"{_CO}/repository.py", "shop.checkout.orders.repository.insert_order", 21
)
OR_PUBLISH = _code(
    "checkout/orders", _CHECKOUT, f"{_CO}/events.py", "shop.checkout.orders.events.publish_order_created", 17
)

# payments ---------------------------------------------------------------------------
_PA = "services/payments/api"
PA_AUTHORIZE = _code(
    "payments/api",
    _PAYMENTS,
    f"{_PA}/servicer.py",
    "shop.payments.api.servicer.PaymentServicer.Authorize",
    64,
)
PA_CAPTURE = _code(
    "payments/api", _PAYMENTS, f"{_PA}/capture.py", "shop.payments.api.capture.capture_payment", 29
)
PA_VALIDATE = _code(
    "payments/api", _PAYMENTS, f"{_PA}/validation.py", "shop.payments.api.validation.validate_request", 16
)
PA_INTERCEPT = _code(
    "payments/api",
    _PAYMENTS,
    f"{_PA}/interceptors.py",
    "shop.payments.api.interceptors.authenticate_call",
    33,
)
_PG = "services/payments/gateway"
GW_CHARGE = _code(
    "payments/gateway", _PAYMENTS, f"{_PG}/client.py", "shop.payments.gateway.client.charge", 42
)
GW_CAPTURE = _code(
    "payments/gateway", _PAYMENTS, f"{_PG}/client.py", "shop.payments.gateway.client.capture", 71
)
GW_STRIPE_CHARGE = _code(
    "payments/gateway",
    _PAYMENTS,
    f"{_PG}/stripe_adapter.py",
    "shop.payments.gateway.stripe_adapter.create_charge",
    58,
)
GW_STRIPE_CAPTURE = _code(
    "payments/gateway",
    _PAYMENTS,
    f"{_PG}/stripe_adapter.py",
    "shop.payments.gateway.stripe_adapter.capture_charge",
    96,
)
GW_ADYEN_CHARGE = _code(
    "payments/gateway",
    _PAYMENTS,
    f"{_PG}/adyen_adapter.py",
    "shop.payments.gateway.adyen_adapter.authorise",
    47,
)
GW_ADYEN_CAPTURE = _code(
    "payments/gateway",
    _PAYMENTS,
    f"{_PG}/adyen_adapter.py",
    "shop.payments.gateway.adyen_adapter.capture",
    88,
)
GW_TOKEN = _code(
    "payments/gateway", _PAYMENTS, f"{_PG}/tokens.py", "shop.payments.gateway.tokens.resolve_token", 25
)
_PR = "services/payments/retry"
RT_IDEMPOTENCY = _code(
    "payments/retry", _PAYMENTS, f"{_PR}/idempotency.py", "shop.payments.retry.idempotency.ensure_key", 31
)
RT_CIRCUIT = _code(
    "payments/retry", _PAYMENTS, f"{_PR}/circuit.py", "shop.payments.retry.circuit.CircuitBreaker.check", 22
)
RT_SHOULD = _code(
    "payments/retry", _PAYMENTS, f"{_PR}/policy.py", "shop.payments.retry.policy.should_retry", 40
)
RT_BACKOFF = _code("payments/retry", _BACKOFF, f"{_PR}/backoff.py", "shop.payments.retry.backoff.wait", 18)
_PF = "services/payments/fraud"
FR_SCORE = _code("payments/fraud", _RISK, f"{_PF}/score.py", "shop.payments.fraud.score.score_payment", 26)
FR_FEATURES = _code(
    "payments/fraud", _RISK, f"{_PF}/features.py", "shop.payments.fraud.features.build_features", 39
)
FR_PREDICT = _code(
    "payments/fraud", _RISK, f"{_PF}/model_client.py", "shop.payments.fraud.model_client.predict", 21
)
FR_RULES = _code("payments/fraud", _RISK, f"{_PF}/rules.py", "shop.payments.fraud.rules.evaluate", 55)
# The ledger's tracing decorator records only a namespace, or only a qualified function name.
LG_POST = _rule(
    "payments/ledger",
    _LEDGER,
    {"code.namespace": "shop.payments.ledger.journal.Journal", "code.function.name": "post_entry"},
    "Journal.post_entry",
    Site(
        f"{SOURCE_ROOT}/services/payments/ledger/journal.py",
        "shop.payments.ledger.journal.Journal.post_entry",
        52,
        "Journal.post_entry",
    ),
)
LG_BALANCE = _rule(
    "payments/ledger",
    _LEDGER,
    {"code.function.name": "shop.payments.ledger.balance.check_balance"},
    "check_balance",
    Site(
        f"{SOURCE_ROOT}/services/payments/ledger/balance.py",
        "shop.payments.ledger.balance.check_balance",
        25,
        "check_balance",
    ),
)

# inventory (older instrumentation: deprecated code.* attributes) -----------------------
_IA = "services/inventory/api"
IN_FEATURED = _code(
    "inventory/api", _INVENTORY, f"{_IA}/routes.py", "shop.inventory.api.routes.featured", 30, old_style=True
)
IN_STOCK = _code(
    "inventory/api", _INVENTORY, f"{_IA}/routes.py", "shop.inventory.api.routes.get_stock", 47, old_style=True
)
IN_SEARCH = _code(
    "inventory/api", _INVENTORY, f"{_IA}/routes.py", "shop.inventory.api.routes.search", 66, old_style=True
)
IN_RESERVE = _code(
    "inventory/api",
    _INVENTORY,
    f"{_IA}/routes.py",
    "shop.inventory.api.routes.create_reservation",
    84,
    old_style=True,
)
IN_SERIALIZE = _code(
    "inventory/api",
    _INVENTORY,
    f"{_IA}/serializers.py",
    "shop.inventory.api.serializers.serialize_products",
    12,
    old_style=True,
)
_IS = "services/inventory/stock"
ST_LEVEL = _code(
    "inventory/stock",
    _INVENTORY,
    f"{_IS}/levels.py",
    "shop.inventory.stock.levels.get_level",
    25,
    old_style=True,
)
ST_CACHE_READ = _code(
    "inventory/stock",
    _INVENTORY,
    f"{_IS}/cache.py",
    "shop.inventory.stock.cache.read_cached",
    18,
    old_style=True,
)
ST_CACHE_DROP = _code(
    "inventory/stock",
    _INVENTORY,
    f"{_IS}/cache.py",
    "shop.inventory.stock.cache.invalidate",
    37,
    old_style=True,
)
ST_ADJUST = _code(
    "inventory/stock",
    _INVENTORY,
    f"{_IS}/adjust.py",
    "shop.inventory.stock.adjust.apply_adjustment",
    44,
    old_style=True,
)
ST_HANDLE = _code(
    "inventory/stock",
    _INVENTORY,
    f"{_IS}/consumer.py",
    "shop.inventory.stock.consumer.handle_event",
    29,
    old_style=True,
)
_IR = "services/inventory/reservations"
RS_RESERVE = _code(
    "inventory/reservations",
    _INVENTORY,
    f"{_IR}/reserve.py",
    "shop.inventory.reservations.reserve.reserve_items",
    36,
    old_style=True,
)
RS_RELEASE = _code(
    "inventory/reservations",
    _INVENTORY,
    f"{_IR}/release.py",
    "shop.inventory.reservations.release.release_reservation",
    20,
    old_style=True,
)
RS_SWEEP = _code(
    "inventory/reservations",
    _INVENTORY,
    f"{_IR}/expiry.py",
    "shop.inventory.reservations.expiry.sweep",
    15,
    old_style=True,
)
_IC = "services/inventory/catalog"
CA_FEATURED = _code(
    "inventory/catalog",
    _INVENTORY,
    f"{_IC}/products.py",
    "shop.inventory.catalog.products.list_featured",
    28,
    old_style=True,
)
CA_IMAGES = _code(
    "inventory/catalog",
    _INVENTORY,
    f"{_IC}/images.py",
    "shop.inventory.catalog.images.resolve_urls",
    17,
    old_style=True,
)
CA_QUERY = _code(
    "inventory/catalog",
    _INVENTORY,
    f"{_IC}/search_index.py",
    "shop.inventory.catalog.search_index.query",
    53,
    old_style=True,
)
_IL = "services/inventory/legacy"
LE_SYNC = _code(
    "inventory/legacy", _UNOWNED, f"{_IL}/sync.py", "shop.inventory.legacy.sync.run", 12, old_style=True
)
LE_FETCH = _code(
    "inventory/legacy",
    _UNOWNED,
    f"{_IL}/erp_bridge.py",
    "shop.inventory.legacy.erp_bridge.fetch_changes",
    40,
    old_style=True,
)
LE_APPLY = _code(
    "inventory/legacy",
    _UNOWNED,
    f"{_IL}/erp_bridge.py",
    "shop.inventory.legacy.erp_bridge.apply_changes",
    77,
    old_style=True,
)

# shared database library ------------------------------------------------------------
DB_QUERY = _code("platform/db", _DB, "libs/db/query.py", "shoplib.db.query.execute", 58)
DB_POOL = _code("platform/db", _DB, "libs/db/pool.py", "shoplib.db.pool.acquire", 33)
DB_COMMIT = _code("platform/db", _DB, "libs/db/transactions.py", "shoplib.db.transactions.commit", 21)

# spans placed by non-path rules ------------------------------------------------------
FE_SERVER = _rule("frontend/web", _WEB)  # routes
CK_SERVER = _rule("checkout/api", _CHECKOUT)  # routes
PA_SERVER = _rule("payments/api", _PAYMENTS)  # routes on rpc.service/rpc.method
IN_SERVER = _rule("inventory/api", _INVENTORY)  # routes
ST_CONSUMER = _rule("inventory/stock", _INVENTORY)  # span_names

# third-party code: unattributed, "external" -------------------------------------------
X_REQUESTS = _external("requests/sessions.py", "requests.sessions.Session.request", 589)
X_URLLIB3 = _external("urllib3/connectionpool.py", "urllib3.connectionpool.HTTPConnectionPool.urlopen", 715)
X_GRPC = _external("grpc/_channel.py", "grpc._channel._UnaryUnaryMultiCallable.__call__", 1160)
X_KAFKA = _external("kafka/producer/kafka.py", "kafka.producer.kafka.KafkaProducer.send", 560)

_SCOPE_FLASK: Final = "opentelemetry.instrumentation.flask"
_SCOPE_FASTAPI: Final = "opentelemetry.instrumentation.fastapi"
_SCOPE_GRPC: Final = "opentelemetry.instrumentation.grpc"
_SCOPE_REQUESTS: Final = "opentelemetry.instrumentation.requests"
_SCOPE_URLLIB3: Final = "opentelemetry.instrumentation.urllib3"
_SCOPE_REDIS: Final = "opentelemetry.instrumentation.redis"
_SCOPE_KAFKA: Final = "opentelemetry.instrumentation.kafka"
_SCOPE_DB: Final = "shoplib.db"
_SCOPE_VERSION: Final = "0.66b1"


# --------------------------------------------------------------------------------------
# Deploy timeline.


@dataclass(frozen=True)
class _Deploy:
    deploy_id: str
    service: str
    version: str
    commit_sha: str
    previous_sha: str
    at_unix_nano: int
    run_id: int


_INITIAL_VERSIONS: Final = {
    "checkout": "1.8.3",
    "frontend": "3.12.0",
    "inventory": "5.2.0",
    "payments": "2.7.1",
}


def _sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def _rfc3339(t_unix_nano: int) -> str:
    seconds, nanos = divmod(t_unix_nano, _S)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += f".{nanos:09d}".rstrip("0")
    return text + "Z"


def _plan_deploys(
    rng: random.Random, start: int, duration: int, shas: Mapping[str, tuple[str, str]] | None = None
) -> list[_Deploy]:
    deploys: list[_Deploy] = []
    run_id = 7_100_000 + rng.randrange(100_000)
    live: dict[str, str] = {}
    for service in SERVICES:
        sha = _sha(rng)
        run_id += 1 + rng.randrange(40)
        version = _INITIAL_VERSIONS[service]
        deploys.append(
            _Deploy(f"deploy-{service}-{version}", service, version, sha, _sha(rng), start, run_id)
        )
        live[service] = sha
    for service, version, fraction in (("payments", "2.8.0", 0.4), ("checkout", "1.8.4", 0.7)):
        at = start + max(1, round(duration * fraction / _S)) * _S
        sha = _sha(rng)
        run_id += 1 + rng.randrange(40)
        deploys.append(
            _Deploy(f"deploy-{service}-{version}", service, version, sha, live[service], at, run_id)
        )
        live[service] = sha
    if shas:  # real commits (collector.demo.history); the random draws above stay the same
        deploys = [
            dataclasses.replace(d, commit_sha=shas[d.deploy_id][0], previous_sha=shas[d.deploy_id][1])
            for d in deploys
        ]
    return deploys


def _deploy_event(d: _Deploy) -> dict[str, Any]:
    return {
        "deploy_id": d.deploy_id,
        "service": d.service,
        "environment": ENVIRONMENT,
        "commit_sha": d.commit_sha,
        "previous_sha": d.previous_sha,
        "deployed_at": _rfc3339(d.at_unix_nano),
        "repository": REPOSITORY,
        "status": "succeeded",
        "url": f"{REPOSITORY}/actions/runs/{d.run_id}",
    }


class _Timeline:
    def __init__(self, deploys: Sequence[_Deploy]) -> None:
        self.by_service: dict[str, list[_Deploy]] = {}
        for d in sorted(deploys, key=lambda d: d.at_unix_nano):
            self.by_service.setdefault(d.service, []).append(d)

    def at(self, service: str, t: int) -> _Deploy:
        found = self.by_service[service][0]
        for d in self.by_service[service]:
            if d.at_unix_nano <= t:
                found = d
        return found

    def straddles(self, service: str, start: int, end: int) -> bool:
        return any(start < d.at_unix_nano <= end for d in self.by_service[service][1:])


# --------------------------------------------------------------------------------------
# Planning: a trace is planned as a tree of nodes with simulated times, then emitted.


class _Node:
    __slots__ = (
        "attrs",
        "children",
        "end",
        "error",
        "events",
        "exc",
        "kind",
        "loc",
        "message",
        "name",
        "rate",
        "scope",
        "service",
        "start",
    )

    def __init__(
        self,
        service: str,
        loc: _Loc,
        name: str,
        start: int,
        kind: SpanKind,
        scope: str,
        attrs: dict[str, AttrValue],
    ) -> None:
        self.service = service
        self.loc = loc
        self.name = name
        self.start = start
        self.end = start
        self.kind = kind
        self.scope = scope
        self.attrs = attrs
        self.children: list[_Node] = []
        self.error = False
        self.message = ""
        self.exc = ""  # the exception (a key of failures.TYPES) an errored span records
        self.events: list[tuple[str, dict[str, AttrValue], int]] = []
        self.rate = 0  # 0: not sampled; N > 0: kept with SampleRate N; -1: dropped

    def walk(self) -> list[_Node]:
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


Handler = Callable[[_Node, int], tuple[int, int]]


class _Shop:
    """Plans traces.  Each method appends spans under ``parent`` from time ``t`` and returns
    the time it finished at, with an HTTP status or a success flag."""

    def __init__(self, rng: random.Random, timeline: _Timeline, regressed_sha: str) -> None:
        self.rng = rng
        self.timeline = timeline
        self.regressed_sha = regressed_sha
        self.kafka_offset = 0

    # -- primitives ---------------------------------------------------------------------
    def d(self, median_ms: float, sigma: float = 0.4) -> int:
        z = max(-4.0, min(4.0, self.rng.gauss(0.0, 1.0)))
        return max(1_000, int(median_ms * _MS * math.exp(sigma * z)))

    def p(self, probability: float) -> bool:
        return self.rng.random() < probability

    def open(
        self,
        parent: _Node | None,
        service: str,
        loc: _Loc,
        t: int,
        *,
        name: str = "",
        kind: SpanKind = SpanKind.INTERNAL,
        scope: str = "",
        attrs: dict[str, AttrValue] | None = None,
    ) -> _Node:
        merged = dict(loc.attrs)
        if attrs:
            merged.update(attrs)
        node = _Node(service, loc, name or loc.name, t, kind, scope or f"shop.{service}", merged)
        if parent is not None:
            parent.children.append(node)
        return node

    def close(self, node: _Node, t: int, *, error: bool = False, message: str = "", exc: str = "") -> int:
        node.end = t
        if error:
            node.error = True
            node.message = message
            node.exc = exc
        return t

    def leaf(
        self,
        parent: _Node,
        service: str,
        loc: _Loc,
        t: int,
        median_ms: float,
        sigma: float = 0.4,
        p_err: float = 0.0,
        exc: str = "",
        message: str = "failed",
    ) -> tuple[int, bool]:
        node = self.open(parent, service, loc, t)
        failed = p_err > 0.0 and self.p(p_err)
        return self.close(
            node, t + self.d(median_ms, sigma), error=failed, message=message, exc=exc
        ), not failed

    # -- clients, servers, stores -------------------------------------------------------
    def db(
        self,
        parent: _Node,
        service: str,
        op: str,
        table: str,
        t: int,
        median_ms: float = 2.0,
        p_err: float = 0.001,
    ) -> tuple[int, bool]:
        if self.p(0.05):  # pool contention
            t, _ = self.leaf(parent, service, DB_POOL, t, 4.0, 0.8)
        query = {
            "SELECT": f"SELECT * FROM {table} WHERE id = $1",
            "INSERT": f"INSERT INTO {table} VALUES ($1, $2, $3)",
            "UPDATE": f"UPDATE {table} SET data = $2 WHERE id = $1",
        }[op]
        node = self.open(
            parent,
            service,
            DB_QUERY,
            t,
            name=f"{op} {table}",
            kind=SpanKind.CLIENT,
            scope=_SCOPE_DB,
            attrs={
                "db.system.name": "postgresql",
                "db.namespace": "shop",
                "db.operation.name": op,
                "db.collection.name": table,
                "db.query.text": query,
                "server.address": "pg-main.shop.svc",
                "server.port": 5432,
            },
        )
        failed = self.p(p_err)
        t = self.close(
            node,
            t + self.d(median_ms, 0.6),
            error=failed,
            message="deadlock detected" if failed else "",
            exc="psycopg.errors.DeadlockDetected",
        )
        if op != "SELECT" and not failed:
            t, _ = self.leaf(parent, service, DB_COMMIT, t, 0.8, 0.5)
        return t, not failed

    def redis(self, parent: _Node, service: str, command: str, key: str, t: int) -> int:
        node = self.open(
            parent,
            service,
            _NOWHERE,
            t,
            name=command,
            kind=SpanKind.CLIENT,
            scope=_SCOPE_REDIS,
            attrs={
                "db.system": "redis",
                "db.statement": f"{command} {key}",
                "net.peer.name": "redis.shop.svc",
                "net.peer.port": 6379,
                "db.redis.database_index": 0,
            },
        )
        return self.close(node, t + self.d(0.35, 0.5))

    def http_call(
        self, parent: _Node, service: str, method: str, url: str, t: int, handler: Handler
    ) -> tuple[int, int]:
        host = url.split("/")[2]
        node = self.open(
            parent,
            service,
            X_REQUESTS,
            t,
            name=method,
            kind=SpanKind.CLIENT,
            scope=_SCOPE_REQUESTS,
            attrs={"http.request.method": method, "url.full": url, "server.address": host, "server.port": 80},
        )
        t, status = handler(node, t + self.d(0.3, 0.3))
        t += self.d(0.3, 0.3)
        node.attrs["http.response.status_code"] = status
        return self.close(
            node, t, error=status >= 400, message=f"HTTP {status}" if status >= 400 else ""
        ), status

    def third_party(
        self,
        parent: _Node,
        service: str,
        loc: _Loc,
        method: str,
        url: str,
        t: int,
        median_ms: float,
        sigma: float,
        p_fail: float,
    ) -> tuple[int, int]:
        """An HTTP call to something outside the shop (no spans on the other side)."""
        host = url.split("/")[2]
        urllib3 = loc is X_URLLIB3
        attrs: dict[str, AttrValue] = (
            {"http.method": method, "http.url": url, "net.peer.name": host}
            if urllib3  # an older instrumentation: deprecated HTTP attributes
            else {"http.request.method": method, "url.full": url, "server.address": host, "server.port": 443}
        )
        node = self.open(
            parent,
            service,
            loc,
            t,
            name=method if not urllib3 else f"HTTP {method}",
            kind=SpanKind.CLIENT,
            scope=_SCOPE_URLLIB3 if urllib3 else _SCOPE_REQUESTS,
            attrs=attrs,
        )
        failed = self.p(p_fail)
        status = self.rng.choice((502, 503, 504)) if failed else 200
        node.attrs["http.status_code" if urllib3 else "http.response.status_code"] = status
        end = t + self.d(median_ms, sigma) * (3 if status == 504 else 1)
        return self.close(node, end, error=failed, message=f"HTTP {status}" if failed else ""), status

    def http_server(
        self,
        parent: _Node | None,
        service: str,
        loc: _Loc,
        method: str,
        route: str,
        path: str,
        t: int,
        handler: Handler,
    ) -> tuple[_Node, int]:
        node = self.open(
            parent,
            service,
            loc,
            t,
            name=f"{method} {route}",
            kind=SpanKind.SERVER,
            scope=_SCOPE_FLASK if service == "frontend" else _SCOPE_FASTAPI,
            attrs={
                "http.request.method": method,
                "http.route": route,
                "url.path": path,
                "url.scheme": "http",
                "network.protocol.version": "1.1",
                "server.address": f"{service}.shop.svc",
                "user_agent.original": "kube-probe/1.31"
                if route in ("/healthz", "/readyz")
                else "Mozilla/5.0",
            },
        )
        t, status = handler(node, t + self.d(0.15, 0.3))
        node.attrs["http.response.status_code"] = status
        self.close(node, t + self.d(0.1, 0.3), error=status >= 500)
        if service == "inventory":
            self.sample(node)
        return node, status

    def sample(self, root: _Node) -> None:
        """Inventory's tail sampler: errors kept at rate 1, the rest 1 in 4."""
        nodes = root.walk()
        if any(n.error for n in nodes):
            rate = 1
        else:
            rate = _INVENTORY_KEEP_ONE_IN if self.rng.randrange(_INVENTORY_KEEP_ONE_IN) == 0 else -1
        for n in nodes:
            n.rate = rate

    def inventory(
        self, parent: _Node, method: str, route: str, path: str, t: int, handler: Handler
    ) -> tuple[int, int]:
        node, status = self.http_server(parent, "inventory", IN_SERVER, method, route, path, t, handler)
        return node.end, status

    def grpc_call(
        self, parent: _Node, method: str, t: int, handler: Callable[[_Node, int], tuple[int, str]]
    ) -> tuple[int, str]:
        attrs: dict[str, AttrValue] = {
            "rpc.system": "grpc",
            "rpc.service": "shop.payments.v1.PaymentService",
            "rpc.method": method,
            "server.address": "payments.shop.svc",
            "server.port": 50051,
        }
        client = self.open(
            parent,
            "checkout",
            X_GRPC,
            t,
            name=f"shop.payments.v1.PaymentService/{method}",
            kind=SpanKind.CLIENT,
            scope=_SCOPE_GRPC,
            attrs=attrs,
        )
        server = self.open(
            client,
            "payments",
            PA_SERVER,
            t + self.d(0.4, 0.3),
            name=f"shop.payments.v1.PaymentService/{method}",
            kind=SpanKind.SERVER,
            scope=_SCOPE_GRPC,
            attrs=dict(attrs),
        )
        ts, _ = self.leaf(server, "payments", PA_INTERCEPT, server.start + self.d(0.05, 0.3), 0.2, 0.3)
        ts, outcome = handler(server, ts)
        code = 14 if outcome == "error" else 0  # UNAVAILABLE
        server.attrs["rpc.grpc.status_code"] = code
        client.attrs["rpc.grpc.status_code"] = code
        ts = self.close(server, ts + self.d(0.1, 0.3), error=code != 0, message="UNAVAILABLE" if code else "")
        end = self.close(
            client, ts + self.d(0.4, 0.3), error=code != 0, message="UNAVAILABLE" if code else ""
        )
        return end, outcome

    # -- frontend -----------------------------------------------------------------------
    def frontend_request(self, t: int) -> _Node:
        r = self.rng.random()
        cart = f"{self.rng.getrandbits(48):012x}"
        if r < 0.27:
            method, route, path, view = "GET", "/", "/", self.fe_home
        elif r < 0.57:
            pid = self.rng.randrange(10_000, 99_999)
            method, route, path, view = "GET", "/product/{product_id}", f"/product/{pid}", self.fe_product
        elif r < 0.74:
            method, route, path, view = "GET", "/search", "/search", self.fe_search
        elif r < 0.82:
            method, route, path, view = "GET", "/cart", "/cart", self.fe_cart
        elif r < 0.92:
            method, route, path, view = "POST", "/cart/items", "/cart/items", self.fe_add
        else:
            method, route, path, view = "POST", "/checkout", "/checkout", self.fe_checkout

        def handle(root: _Node, t: int) -> tuple[int, int]:
            t, _ = self.leaf(root, "frontend", FE_AUTH, t, 0.3, 0.3)
            t = self.session(root, t, csrf=method == "POST")
            t, status = view(root, t, cart)
            if status < 500:
                t, _ = self.leaf(root, "frontend", FE_RENDER, t, 4.0, 0.5)
            return t, status

        root, _ = self.http_server(None, "frontend", FE_SERVER, method, route, path, t, handle)
        return root

    def session(self, parent: _Node, t: int, *, csrf: bool) -> int:
        node = self.open(parent, "frontend", SS_LOAD, t)
        t, _ = self.leaf(node, "frontend", SS_COOKIE, t + self.d(0.05), 0.08, 0.3)
        t = self.redis(node, "frontend", "GET", "session:?", t)
        t = self.close(node, t + self.d(0.1))
        if csrf:
            t, _ = self.leaf(parent, "frontend", SS_CSRF, t, 0.1, 0.3)
        return t

    def flag(self, parent: _Node, t: int) -> int:
        node = self.open(parent, "frontend", FF_ENABLED, t)
        t, _ = self.leaf(node, "frontend", FF_CACHE, t + self.d(0.02), 0.05, 0.3)
        if self.p(0.02):  # cache refresh from the flag service (a SaaS)
            t, _ = self.third_party(
                node, "frontend", X_REQUESTS, "GET", "https://flags.example.com/v2/flags", t, 8.0, 0.5, 0.01
            )
        return self.close(node, t + self.d(0.02))

    def view(
        self, parent: _Node, loc: _Loc, t: int, body: Callable[[_Node, int], tuple[int, int]]
    ) -> tuple[int, int]:
        node = self.open(parent, "frontend", loc, t)
        t, status = body(node, t + self.d(0.5))
        t = self.close(
            node, t + self.d(0.5), error=status >= 500, message=f"upstream HTTP {status}", exc="UpstreamError"
        )
        return t, status

    def client(
        self, parent: _Node, service: str, loc: _Loc, t: int, method: str, url: str, handler: Handler
    ) -> tuple[int, int]:
        node = self.open(parent, service, loc, t)
        t, status = self.http_call(node, service, method, url, t + self.d(0.05), handler)
        t = self.close(
            node,
            t + self.d(0.05),
            error=status >= 500,
            message=f"HTTP {status}",
            exc="requests.exceptions.HTTPError",
        )
        return t, status

    def fe_home(self, parent: _Node, t: int, cart: str) -> tuple[int, int]:
        def body(view: _Node, t: int) -> tuple[int, int]:
            t = self.flag(view, t)
            t, _ = self.client(
                view,
                "frontend",
                FE_CLI_FEATURED,
                t,
                "GET",
                "http://inventory.shop.svc/v1/catalog/featured",
                lambda c, t: self.inventory(
                    c, "GET", "/v1/catalog/featured", "/v1/catalog/featured", t, self.inv_featured
                ),
            )
            return t, 200  # the home page renders without featured products

        return self.view(parent, FE_HOME, t, body)

    def fe_product(self, parent: _Node, t: int, cart: str) -> tuple[int, int]:
        sku = f"SKU-{self.rng.randrange(100_000, 999_999)}"

        def body(view: _Node, t: int) -> tuple[int, int]:
            return self.client(
                view,
                "frontend",
                FE_CLI_STOCK,
                t,
                "GET",
                f"http://inventory.shop.svc/v1/stock/{sku}",
                lambda c, t: self.inventory(
                    c, "GET", "/v1/stock/{sku}", f"/v1/stock/{sku}", t, self.inv_stock
                ),
            )

        t, status = self.view(parent, FE_PRODUCT, t, body)
        return t, 502 if status >= 500 else status

    def fe_search(self, parent: _Node, t: int, cart: str) -> tuple[int, int]:
        def body(view: _Node, t: int) -> tuple[int, int]:
            q = self.open(view, "frontend", SE_PARSE, t)
            tq, _ = self.leaf(q, "frontend", SE_SYNONYMS, t + self.d(0.2), 0.4, 0.5)
            t = self.close(q, tq + self.d(0.2))
            hits = self.open(view, "frontend", SE_HITS, t)
            th, status = self.http_call(
                hits,
                "frontend",
                "GET",
                "http://inventory.shop.svc/v1/catalog/search",
                t + self.d(0.1),
                lambda c, t: self.inventory(
                    c, "GET", "/v1/catalog/search", "/v1/catalog/search", t, self.inv_search
                ),
            )
            t = self.close(
                hits, th + self.d(0.1), error=status >= 500, message=f"HTTP {status}", exc="SearchUnavailable"
            )
            if status >= 500:
                return t, 502
            t, _ = self.leaf(view, "frontend", SE_RANK, t, 3.0, 0.6)
            sug = self.open(view, "frontend", SE_SUGGEST, t)
            ts = self.flag(sug, t + self.d(0.1))
            t = self.close(sug, ts + self.d(1.2, 0.5))
            return t, 200

        return self.view(parent, FE_SEARCH, t, body)

    def fe_cart(self, parent: _Node, t: int, cart: str) -> tuple[int, int]:
        def body(view: _Node, t: int) -> tuple[int, int]:
            t, status = self.client(
                view,
                "frontend",
                FE_CLI_CART,
                t,
                "GET",
                f"http://checkout.shop.svc/api/cart/{cart}",
                lambda c, t: self.checkout_server(
                    c, "GET", "/api/cart/{cart_id}", f"/api/cart/{cart}", t, self.ck_get_cart
                ),
            )
            return t, 502 if status >= 500 else 200

        return self.view(parent, FE_CART, t, body)

    def fe_add(self, parent: _Node, t: int, cart: str) -> tuple[int, int]:
        def body(view: _Node, t: int) -> tuple[int, int]:
            t, status = self.client(
                view,
                "frontend",
                FE_CLI_ADD,
                t,
                "POST",
                f"http://checkout.shop.svc/api/cart/{cart}/items",
                lambda c, t: self.checkout_server(
                    c, "POST", "/api/cart/{cart_id}/items", f"/api/cart/{cart}/items", t, self.ck_add_item
                ),
            )
            return t, 502 if status >= 500 else 200

        return self.view(parent, FE_ADD, t, body)

    def fe_checkout(self, parent: _Node, t: int, cart: str) -> tuple[int, int]:
        def body(view: _Node, t: int) -> tuple[int, int]:
            t, status = self.client(
                view,
                "frontend",
                FE_CLI_ORDER,
                t,
                "POST",
                "http://checkout.shop.svc/api/checkout",
                lambda c, t: self.checkout_server(
                    c, "POST", "/api/checkout", "/api/checkout", t, self.ck_checkout
                ),
            )
            return t, 502 if status >= 500 else 200  # 422: the form is shown again

        return self.view(parent, FE_CHECKOUT, t, body)

    # -- checkout -----------------------------------------------------------------------
    def checkout_server(
        self, parent: _Node, method: str, route: str, path: str, t: int, handler: Handler
    ) -> tuple[int, int]:
        node, status = self.http_server(parent, "checkout", CK_SERVER, method, route, path, t, handler)
        return node.end, status

    def load_cart(self, parent: _Node, t: int) -> tuple[int, bool]:
        node = self.open(parent, "checkout", CT_LOAD, t)
        fetch = self.open(node, "checkout", CT_FETCH, t + self.d(0.1))
        tf, ok = self.db(fetch, "checkout", "SELECT", "carts", fetch.start + self.d(0.1), 1.8)
        tf = self.close(
            fetch, tf + self.d(0.1), error=not ok, message="cart store unavailable", exc="CartStoreError"
        )
        return self.close(node, tf + self.d(0.1), error=not ok, message="cart store unavailable"), ok

    def price(self, parent: _Node, t: int, *, full: bool) -> int:
        node = self.open(parent, "checkout", PR_ENGINE, t)
        loader = self.open(node, "checkout", PR_LOADER, t + self.d(0.1))
        tl = loader.start + self.d(0.3)
        if self.p(0.05):  # rule cache miss
            tl, _ = self.db(loader, "checkout", "SELECT", "pricing_rules", tl, 3.0)
        t = self.close(loader, tl + self.d(0.1))
        t, _ = self.leaf(node, "checkout", PR_DISCOUNTS, t, 2.5, 0.6)
        if full:
            t, _ = self.leaf(node, "checkout", PR_TAX, t, 1.8, 0.5)
            if self.p(0.3):
                t, _ = self.leaf(node, "checkout", PR_CURRENCY, t, 0.4, 0.4)
        return self.close(node, t + self.d(0.3))

    def ck_get_cart(self, server: _Node, t: int) -> tuple[int, int]:
        node = self.open(server, "checkout", CK_GET, t)
        t, ok = self.load_cart(node, t + self.d(0.1))
        if ok:
            t = self.price(node, t, full=False)
        t = self.close(node, t + self.d(0.2), error=not ok, message="cart store unavailable")
        return t, 200 if ok else 503

    def ck_add_item(self, server: _Node, t: int) -> tuple[int, int]:
        node = self.open(server, "checkout", CK_ADD, t)
        t, _ = self.leaf(node, "checkout", CK_VALID_ITEM, t + self.d(0.1), 0.3, 0.3)
        svc = self.open(node, "checkout", CT_ADD, t)
        t, ok = self.load_cart(svc, t + self.d(0.1))
        status = 503
        if ok:
            t, _ = self.leaf(svc, "checkout", CT_RECALC, t, 0.6, 0.5)
            t, status = self.client(
                svc,
                "checkout",
                CK_CLI_RESERVE,
                t,
                "POST",
                "http://inventory.shop.svc/v1/reservations",
                lambda c, t: self.inventory(
                    c, "POST", "/v1/reservations", "/v1/reservations", t, self.inv_reserve
                ),
            )
            if status < 500:
                save = self.open(svc, "checkout", CT_SAVE, t)
                ts, ok = self.db(save, "checkout", "UPDATE", "carts", t + self.d(0.1), 2.5)
                t = self.close(
                    save,
                    ts + self.d(0.1),
                    error=not ok,
                    message="cart store unavailable",
                    exc="CartStoreError",
                )
                status = 201 if ok else 503
            else:
                status = 502
        t = self.close(svc, t + self.d(0.1), error=status >= 500, message="add_item failed")
        if status >= 500:
            t, _ = self.leaf(node, "checkout", CK_MAP_ERROR, t, 0.1, 0.3)
        t = self.close(
            node, t + self.d(0.1), error=status >= 500, message="add_item failed", exc="CheckoutError"
        )
        return t, status

    def ck_checkout(self, server: _Node, t: int) -> tuple[int, int]:
        node = self.open(server, "checkout", CK_CHECKOUT, t)
        t, _ = self.leaf(node, "checkout", CK_VALID_ORDER, t + self.d(0.1), 0.5, 0.4)
        if self.p(0.02):
            return self.close(node, t + self.d(0.1)), 422
        t, ok = self.load_cart(node, t)
        status = 503
        if ok:
            t = self.price(node, t, full=True)
            cli = self.open(node, "checkout", CK_CLI_AUTH, t)
            tc, outcome = self.grpc_call(cli, "Authorize", t + self.d(0.05), self.pay_authorize)
            t = self.close(
                cli, tc + self.d(0.05), error=outcome == "error", message="UNAVAILABLE", exc="grpc.RpcError"
            )
            if outcome == "ok":
                order = self.open(node, "checkout", OR_CREATE, t)
                ins = self.open(order, "checkout", OR_INSERT, t + self.d(0.2))
                ti, ok1 = self.db(ins, "checkout", "INSERT", "orders", ins.start + self.d(0.1), 3.0)
                ti, ok2 = self.db(ins, "checkout", "INSERT", "order_lines", ti, 2.0) if ok1 else (ti, False)
                ti = self.close(
                    ins, ti + self.d(0.1), error=not ok2, message="order not stored", exc="OrderStoreError"
                )
                if ok2:
                    pub = self.open(order, "checkout", OR_PUBLISH, ti)
                    tp = self.kafka_send(pub, ti + self.d(0.1))
                    ti = self.close(pub, tp + self.d(0.1))
                t = self.close(order, ti + self.d(0.2), error=not ok2, message="order not stored")
                status = 201 if ok2 else 503
                if ok2:
                    cap = self.open(node, "checkout", CK_CLI_CAPTURE, t)
                    tc, outcome = self.grpc_call(cap, "Capture", t + self.d(0.05), self.pay_capture)
                    t = self.close(
                        cap,
                        tc + self.d(0.05),
                        error=outcome == "error",
                        message="UNAVAILABLE",
                        exc="grpc.RpcError",
                    )
                    # a failed capture is retried by the settlement job; the order stands
            elif outcome == "declined":
                status = 200
            else:
                status = 502
        if status >= 500:
            t, _ = self.leaf(node, "checkout", CK_MAP_ERROR, t, 0.1, 0.3)
        t = self.close(
            node, t + self.d(0.2), error=status >= 500, message="checkout failed", exc="CheckoutError"
        )
        return t, status

    def kafka_send(self, parent: _Node, t: int) -> int:
        node = self.open(
            parent,
            "checkout",
            X_KAFKA,
            t,
            name="order-events publish",
            kind=SpanKind.PRODUCER,
            scope=_SCOPE_KAFKA,
            attrs={
                "messaging.system": "kafka",
                "messaging.destination.name": "order-events",
                "messaging.operation.type": "publish",
            },
        )
        return self.close(node, t + self.d(0.6, 0.5))

    # -- payments -----------------------------------------------------------------------
    def retry_leaf(
        self, parent: _Node, loc: _Loc, t: int, median_ms: float, sigma: float, exc: str
    ) -> tuple[int, bool]:
        """A span of payments/retry; the regressing commit makes it slower and flakier."""
        regressed = self.timeline.at("payments", t).commit_sha == self.regressed_sha
        scale = _REGRESSION_SLOWDOWN if regressed else 1.0
        p_err = _RETRY_ERROR_AFTER if regressed else _RETRY_ERROR_BEFORE
        message = _RETRY_MESSAGES[exc]
        return self.leaf(
            parent, "payments", loc, t, median_ms * scale, sigma, p_err, exc=exc, message=message
        )

    def gateway(self, parent: _Node, t: int, *, capture: bool) -> tuple[int, bool]:
        stripe = self.p(0.7)
        if capture:
            loc, adapter = GW_CAPTURE, GW_STRIPE_CAPTURE if stripe else GW_ADYEN_CAPTURE
        else:
            loc, adapter = GW_CHARGE, GW_STRIPE_CHARGE if stripe else GW_ADYEN_CHARGE
        node = self.open(parent, "payments", loc, t)
        t, _ = self.leaf(node, "payments", GW_TOKEN, t + self.d(0.1), 0.6, 0.4)
        ad = self.open(node, "payments", adapter, t)
        url = (
            "https://api.stripe.com/v1/charges" if stripe else "https://checkout-live.adyen.com/v71/payments"
        )
        median = (90.0 if capture else 180.0) if stripe else (110.0 if capture else 220.0)
        ta, status = self.third_party(
            ad, "payments", X_URLLIB3, "POST", url, t + self.d(0.2), median, 0.4, 0.04
        )
        failed = status >= 500
        ta = self.close(
            ad, ta + self.d(0.3), error=failed, message=f"gateway HTTP {status}", exc="GatewayError"
        )
        return self.close(node, ta + self.d(0.1), error=failed, message=f"gateway HTTP {status}"), not failed

    def attempts(self, parent: _Node, t: int, tries: int, *, capture: bool) -> tuple[int, bool]:
        for attempt in range(tries):
            # A failing circuit-breaker store is logged and the call goes ahead (fail open).
            t, _ = self.retry_leaf(parent, RT_CIRCUIT, t, 0.2, 0.3, "CircuitStateUnavailable")
            t, ok = self.gateway(parent, t, capture=capture)
            if ok:
                return t, True
            if attempt + 1 < tries:
                t, _ = self.retry_leaf(parent, RT_SHOULD, t, 0.1, 0.3, "RetryPolicyError")
                t, _ = self.retry_leaf(parent, RT_BACKOFF, t, 40.0 * 2**attempt, 0.3, "BackoffInterrupted")
        return t, False

    def ledger(self, parent: _Node, t: int, *, post: bool) -> tuple[int, bool]:
        node = self.open(parent, "payments", LG_POST if post else LG_BALANCE, t)
        if post:
            t, ok = self.db(node, "payments", "INSERT", "journal_entries", t + self.d(0.2), 2.5)
        else:
            t, ok = self.db(node, "payments", "SELECT", "accounts", t + self.d(0.2), 1.5)
        return self.close(
            node, t + self.d(0.2), error=not ok, message="ledger unavailable", exc="LedgerError"
        ), ok

    def pay_authorize(self, server: _Node, t: int) -> tuple[int, str]:
        node = self.open(server, "payments", PA_AUTHORIZE, t)
        t, _ = self.leaf(node, "payments", PA_VALIDATE, t + self.d(0.1), 0.3, 0.3)
        fraud = self.open(node, "payments", FR_SCORE, t)
        tf, _ = self.leaf(fraud, "payments", FR_FEATURES, t + self.d(0.1), 1.5, 0.5)
        pred = self.open(fraud, "payments", FR_PREDICT, tf)
        tp, status = self.third_party(
            pred,
            "payments",
            X_URLLIB3,
            "POST",
            "https://fraud-model.acme.internal/v1/predict",
            tf + self.d(0.1),
            25.0,
            0.5,
            0.005,
        )
        tf = self.close(
            pred, tp + self.d(0.1), error=status >= 500, message="model unavailable", exc="ModelUnavailable"
        )
        tf, _ = self.leaf(fraud, "payments", FR_RULES, tf, 0.4, 0.4)
        t = self.close(fraud, tf + self.d(0.1))
        outcome = "ok"
        if self.p(0.02):
            outcome = "declined"
        else:
            t, ok = self.ledger(node, t, post=False)
            t, keyed = self.retry_leaf(node, RT_IDEMPOTENCY, t, 1.5, 0.5, "IdempotencyStoreTimeout")
            if not ok or not keyed:
                outcome = "error"
            else:
                t, charged = self.attempts(node, t, 3, capture=False)
                if charged:
                    t, ok = self.ledger(node, t, post=True)
                    outcome = "ok" if ok else "error"
                else:
                    outcome = "error"
        t = self.close(
            node,
            t + self.d(0.2),
            error=outcome == "error",
            message="authorization failed",
            exc="PaymentError",
        )
        return t, outcome

    def pay_capture(self, server: _Node, t: int) -> tuple[int, str]:
        node = self.open(server, "payments", PA_CAPTURE, t)
        t, keyed = self.retry_leaf(node, RT_IDEMPOTENCY, t + self.d(0.1), 1.5, 0.5, "IdempotencyStoreTimeout")
        outcome = "error"
        if keyed:
            t, captured = self.attempts(node, t, 2, capture=True)
            if captured:
                t, ok = self.ledger(node, t, post=True)
                outcome = "ok" if ok else "error"
        t = self.close(
            node, t + self.d(0.2), error=outcome == "error", message="capture failed", exc="PaymentError"
        )
        return t, outcome

    # -- inventory ----------------------------------------------------------------------
    def handler(
        self, parent: _Node, loc: _Loc, t: int, body: Callable[[_Node, int], tuple[int, int]]
    ) -> tuple[int, int]:
        node = self.open(parent, "inventory", loc, t)
        t, status = body(node, t + self.d(0.1))
        t = self.close(
            node, t + self.d(0.1), error=status >= 500, message=f"HTTP {status}", exc="HTTPException"
        )
        return t, status

    def inv_featured(self, server: _Node, t: int) -> tuple[int, int]:
        def body(h: _Node, t: int) -> tuple[int, int]:
            node = self.open(h, "inventory", CA_FEATURED, t)
            tq, ok = self.db(node, "inventory", "SELECT", "products", t + self.d(0.1), 4.0, 0.002)
            t = self.close(node, tq + self.d(0.1), error=not ok, message="catalog unavailable")
            if not ok:
                return t, 500
            t, _ = self.leaf(h, "inventory", CA_IMAGES, t, 1.5, 0.5)
            t, _ = self.leaf(h, "inventory", IN_SERIALIZE, t, 0.8, 0.4)
            return t, 200

        return self.handler(server, IN_FEATURED, t, body)

    def inv_stock(self, server: _Node, t: int) -> tuple[int, int]:
        def body(h: _Node, t: int) -> tuple[int, int]:
            level = self.open(h, "inventory", ST_LEVEL, t)
            cache = self.open(level, "inventory", ST_CACHE_READ, t + self.d(0.1))
            tc = self.redis(cache, "inventory", "GET", "stock:?", cache.start + self.d(0.05))
            tc = self.close(cache, tc + self.d(0.05))
            ok = True
            if self.p(0.3):  # cache miss
                tc, ok = self.db(level, "inventory", "SELECT", "stock", tc, 2.0, 0.002)
            t = self.close(level, tc + self.d(0.1), error=not ok, message="stock unavailable")
            if not ok:
                return t, 500
            return t, 404 if self.p(0.02) else 200

        return self.handler(server, IN_STOCK, t, body)

    def inv_search(self, server: _Node, t: int) -> tuple[int, int]:
        def body(h: _Node, t: int) -> tuple[int, int]:
            node = self.open(h, "inventory", CA_QUERY, t)
            tq, ok = self.db(node, "inventory", "SELECT", "product_search", t + self.d(0.3), 6.0, 0.003)
            t = self.close(node, tq + self.d(0.5), error=not ok, message="search index unavailable")
            if not ok:
                return t, 500
            t, _ = self.leaf(h, "inventory", IN_SERIALIZE, t, 0.8, 0.4)
            return t, 200

        return self.handler(server, IN_SEARCH, t, body)

    def inv_reserve(self, server: _Node, t: int) -> tuple[int, int]:
        def body(h: _Node, t: int) -> tuple[int, int]:
            node = self.open(h, "inventory", RS_RESERVE, t)
            tr, ok = self.db(node, "inventory", "SELECT", "stock", t + self.d(0.1), 2.0, 0.002)
            if ok:
                tr, ok = self.db(node, "inventory", "INSERT", "reservations", tr, 2.5, 0.002)
            t = self.close(node, tr + self.d(0.1), error=not ok, message="reservation failed")
            if not ok:
                return t, 500
            return t, 409 if self.p(0.01) else 201

        return self.handler(server, IN_RESERVE, t, body)

    def stock_event(self, t: int) -> _Node:
        self.kafka_offset += 1
        root = self.open(
            None,
            "inventory",
            ST_CONSUMER,
            t,
            name="stock-events process",
            kind=SpanKind.CONSUMER,
            scope=_SCOPE_KAFKA,
            attrs={
                "messaging.system": "kafka",
                "messaging.destination.name": "stock-events",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": "inventory",
                "messaging.destination.partition.id": str(self.kafka_offset % 6),
                "messaging.kafka.offset": self.kafka_offset // 6,
            },
        )
        handle = self.open(root, "inventory", ST_HANDLE, t + self.d(0.1))
        adjust = self.open(handle, "inventory", ST_ADJUST, handle.start + self.d(0.1))
        ta, ok = self.db(adjust, "inventory", "UPDATE", "stock", adjust.start + self.d(0.1), 2.5, 0.005)
        ta = self.close(
            adjust, ta + self.d(0.1), error=not ok, message="deadlock detected", exc="StockUpdateError"
        )
        if ok:
            drop = self.open(handle, "inventory", ST_CACHE_DROP, ta)
            td = self.redis(drop, "inventory", "DEL", "stock:?", ta + self.d(0.05))
            ta = self.close(drop, td + self.d(0.05))
        ta = self.close(handle, ta + self.d(0.1), error=not ok, message="event not applied")
        self.close(root, ta + self.d(0.1), error=not ok, message="event not applied")
        self.sample(root)
        return root

    def expiry_sweep(self, t: int) -> _Node:
        root = self.open(None, "inventory", RS_SWEEP, t)
        t, ok = self.db(root, "inventory", "SELECT", "reservations", t + self.d(0.2), 5.0)
        for _ in range(self.rng.randrange(5) if ok else 0):
            rel = self.open(root, "inventory", RS_RELEASE, t)
            tr, ok = self.db(rel, "inventory", "UPDATE", "reservations", t + self.d(0.1), 2.0)
            t = self.close(rel, tr + self.d(0.1), error=not ok, message="release failed", exc="ReleaseError")
        self.close(root, t + self.d(0.2))
        self.sample(root)
        return root

    def legacy_sync(self, t: int) -> _Node:
        root = self.open(None, "inventory", LE_SYNC, t)
        fetch = self.open(root, "inventory", LE_FETCH, t + self.d(0.3))
        tf, status = self.third_party(
            fetch,
            "inventory",
            X_REQUESTS,
            "GET",
            "https://erp.acme.internal/api/changes",
            fetch.start + self.d(0.2),
            150.0,
            0.6,
            0.05,
        )
        failed = status >= 500
        t = self.close(fetch, tf + self.d(0.3), error=failed, message="ERP unavailable", exc="ErpTimeout")
        if not failed:
            apply = self.open(root, "inventory", LE_APPLY, t)
            ta = t + self.d(0.3)
            for _ in range(1 + self.rng.randrange(4)):
                ta, _ = self.db(apply, "inventory", "UPDATE", "products", ta, 3.0)
            t = self.close(apply, ta + self.d(0.3))
        self.close(root, t + self.d(0.5), error=failed, message="sync failed")
        self.sample(root)
        return root

    def health(self, service: str, probe: str, t: int) -> _Node:
        def ok(node: _Node, t: int) -> tuple[int, int]:
            return t + self.d(0.1, 0.3), 200

        if service == "payments":  # the gRPC health service: no rule matches it
            node = self.open(
                None,
                service,
                _NOWHERE,
                t,
                name="grpc.health.v1.Health/Check",
                kind=SpanKind.SERVER,
                scope=_SCOPE_GRPC,
                attrs={
                    "rpc.system": "grpc",
                    "rpc.service": "grpc.health.v1.Health",
                    "rpc.method": "Check",
                    "rpc.grpc.status_code": 0,
                },
            )
            self.close(node, t + self.d(0.2, 0.3))
            return node
        node, _ = self.http_server(None, service, _NOWHERE, "GET", probe, probe, t, ok)
        return node


# --------------------------------------------------------------------------------------
# Emission through the real SDK.


class _SeededIds(IdGenerator):
    """Deterministic trace and span ids."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def generate_span_id(self) -> int:
        while True:
            value = self._rng.getrandbits(64)
            if value:
                return value

    def generate_trace_id(self) -> int:
        while True:
            value = self._rng.getrandbits(128)
            if value:
                return value

    def is_trace_id_random(self) -> bool:
        return True


class _Collector(SpanExporter):
    """Keeps finished spans in memory until they are encoded."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.spans = []

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_LIMITS: Final = dict(
    max_span_attributes=128,
    max_events=128,
    max_links=128,
    max_attributes=128,
    max_event_attributes=128,
    max_link_attributes=128,
)


class _Emitter:
    def __init__(self, id_rng: random.Random, timeline: _Timeline) -> None:
        self.timeline = timeline
        self.collector = _Collector()
        self.ids = _SeededIds(id_rng)
        self.providers: list[TracerProvider] = []
        self.tracers: dict[tuple[str, str, str], Tracer] = {}
        self.truth: dict[TruthKey, list[Any]] = {}
        self.empty = Context()

    def tracer(self, service: str, version: str, scope: str) -> Tracer:
        key = (service, version, scope)
        tracer = self.tracers.get(key)
        if tracer is None:
            provider = self._provider(service, version)
            tracer = provider.get_tracer(
                scope, _SCOPE_VERSION if scope.startswith("opentelemetry.") else version
            )
            self.tracers[key] = tracer
        return tracer

    def _provider(self, service: str, version: str) -> TracerProvider:
        for provider in self.providers:
            attrs = provider.resource.attributes
            if attrs["service.name"] == service and attrs["service.version"] == version:
                return provider
        resource = Resource(
            {
                "service.name": service,
                "service.namespace": "shop",
                "service.version": version,
                "deployment.environment.name": ENVIRONMENT,
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.version": "1.45.2",
            }
        )
        provider = TracerProvider(
            sampler=ALWAYS_ON,
            resource=resource,
            shutdown_on_exit=False,
            id_generator=self.ids,
            span_limits=SpanLimits(**_LIMITS),
        )
        provider.add_span_processor(SimpleSpanProcessor(self.collector))
        self.providers.append(provider)
        return provider

    def emit(self, node: _Node, context: Context) -> None:
        deploy = self.timeline.at(node.service, node.start)
        attrs = node.attrs
        if node.rate > 0:
            attrs[SAMPLE_RATE_ATTRIBUTE] = node.rate
        span = self.tracer(node.service, deploy.version, node.scope).start_span(
            node.name, context=context, kind=node.kind, attributes=attrs, start_time=node.start
        )
        if not isinstance(span, SdkSpan):
            raise RuntimeError("the OpenTelemetry SDK is disabled (OTEL_SDK_DISABLED); the demo needs it")
        if node.children:
            child_context = set_span_in_context(span, self.empty)
            for child in node.children:
                if child.rate >= 0:
                    self.emit(child, child_context)
        for name, event_attrs, ts in node.events:
            span.add_event(name, event_attrs, timestamp=ts)
        thrower: _Node | None = None
        exc_type = ""
        if node.error and node.exc:
            chain = _failure_chain(node)
            thrower = chain[-1]
            exc = raise_chain([_link(n) for n in chain])
            exc_type = f"{type(exc).__module__}.{type(exc).__qualname__}"  # as the SDK names it
            span.record_exception(exc, timestamp=node.end)
        if node.error:
            span.set_status(Status(StatusCode.ERROR, node.message or None))
        span.end(end_time=node.end)
        acc = self._acc(node, deploy.commit_sha)
        acc[0] += 1
        acc[1] += float(node.rate) if node.rate > 0 else 1.0
        acc[2] += int(node.error)
        acc[3].append(node.end - node.start)
        acc[4] += int(node.error and not any(c.error for c in node.children if c.rate >= 0))
        if thrower is not None:
            acc[5] += 1
            thrown = self._acc(thrower, self.timeline.at(thrower.service, thrower.start).commit_sha)
            thrown[6] += 1
            thrown[7][exc_type] = thrown[7].get(exc_type, 0) + 1

    def _acc(self, node: _Node, commit_sha: str) -> list[Any]:
        key = (node.service, ENVIRONMENT, node.loc.module, node.loc.owners, commit_sha)
        acc = self.truth.get(key)
        if acc is None:
            acc = self.truth[key] = [0, 0.0, 0, [], 0, 0, 0, {}]
        return acc

    def drain(self, before: int | None) -> list[ReadableSpan]:
        """Finished spans that ended before ``before`` (all if None), in end-time order."""
        spans = self.collector.spans
        if before is None:
            ready, rest = spans, []
        else:
            ready = [s for s in spans if (s.end_time or 0) < before]
            rest = [s for s in spans if (s.end_time or 0) >= before]
        self.collector.spans = rest
        ready.sort(key=lambda s: s.end_time or 0)
        return ready

    def close(self) -> None:
        for provider in self.providers:
            provider.shutdown()


def _failure_chain(node: _Node) -> list[_Node]:
    """The spans an errored span's exception came through, outermost first: from each, its
    last errored child running shop code (a failure in another service, or in a library,
    ends the chain: that span threw)."""
    chain = [node]
    while True:
        failed = [c for c in chain[-1].children if c.error and c.loc.site is not None and c.rate >= 0]
        if not failed:
            return chain
        chain.append(failed[-1])


def _link(node: _Node) -> Link:
    if node.loc.site is None:
        raise ValueError(f"span {node.name!r} records an exception but runs no shop code")
    detail = dict(node.attrs)
    for child in node.children:  # the failed call into a library or another service
        if child.error and child.loc.site is None:
            detail.update(child.attrs)
    return Link(node.loc.site, node.exc, node.message, detail)


def _encode(spans: Sequence[ReadableSpan], encoding: str = "otlp_proto") -> bytes:
    """One request, encoded by the real OpenTelemetry encoders (protobuf, or OTLP/JSON)."""
    if encoding == "otlp_json":
        # the OTLP/JSON encoder is a beta package, installed with the dev extra
        from opentelemetry.exporter.otlp.json.common.trace_encoder import (  # noqa: PLC0415  beta package of the dev extra, needed for JSON only
            encode_spans as encode_json,
        )

        text = encode_json(spans).to_json()
        return text.encode() if isinstance(text, str) else bytes(text)
    data = encode_spans(spans).SerializeToString()
    assert isinstance(data, bytes)
    return data


# --------------------------------------------------------------------------------------


def _arrivals(
    rng: random.Random, start: int, end: int, rate: Callable[[float], float], rate_max: float
) -> list[int]:
    """A Poisson process of the given rate (per second) by thinning."""
    out: list[int] = []
    t = float(start)
    while True:
        t += rng.expovariate(rate_max) * _S
        if t >= end:
            return out
        if rng.random() * rate_max < rate((t - start) / _S):
            out.append(int(t))


def generate(
    *,
    seed: int = 7,
    minutes: int = 10,
    start_unix_nano: int = DEFAULT_START_UNIX_NANO,
    progress: Callable[[int, int], None] | None = None,
    encoding: str = "otlp_proto",
    commit_shas: Mapping[str, tuple[str, str]] | None = None,
) -> Traffic:
    """Simulate ``minutes`` of shop traffic from ``start_unix_nano``.

    ``encoding``: ``otlp_proto`` (ExportTraceServiceRequest bytes) or ``otlp_json`` (OTLP/JSON,
    one request per element, as the Collector's file exporter writes a line).
    ``commit_shas``: deploy id -> (commit_sha, previous_sha), the SHAs of a real history
    (:func:`collector.demo.history.deploy_shas`); without it the SHAs are random.

    The same arguments give identical bytes.  ``progress(done, total)`` is called as traces
    are generated (units: traces), last with ``done == total``.
    """
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    rng = random.Random(seed)
    duration = minutes * 60 * _S
    end_unix_nano = start_unix_nano + duration
    deploys = _plan_deploys(rng, start_unix_nano, duration, commit_shas)
    timeline = _Timeline(deploys)
    regressing = deploys[len(SERVICES)]
    shop = _Shop(random.Random(rng.getrandbits(64)), timeline, regressing.commit_sha)
    emitter = _Emitter(random.Random(rng.getrandbits(64)), timeline)

    # Root events: (time, tie-break, kind, argument).
    first = start_unix_nano + _MS
    roots: list[tuple[int, int, str, str]] = []
    for t in _arrivals(
        rng,
        first,
        end_unix_nano,
        lambda s: _FRONTEND_RATE_PER_S * (1.0 + 0.25 * math.sin(2 * math.pi * s / 420.0)),
        _FRONTEND_RATE_PER_S * 1.25,
    ):
        roots.append((t, 0, "frontend", ""))
    for t in _arrivals(rng, first, end_unix_nano, lambda s: _STOCK_EVENTS_PER_S, _STOCK_EVENTS_PER_S):
        roots.append((t, 1, "stock", ""))
    for i, service in enumerate(SERVICES):
        for j, probe in enumerate(("/healthz", "/readyz")):
            t = first + (i * 2 + j) * 1_250 * _MS
            while t < end_unix_nano:
                roots.append((t, 2, service, probe))
                t += 10 * _S
    for kind, period, offset in (("expiry", 15, 4), ("legacy", 30, 7)):
        t = first + offset * _S
        while t < end_unix_nano:
            roots.append((t, 3, kind, ""))
            t += period * _S
    roots.sort()

    requests: list[bytes] = []
    pending: list[ReadableSpan] = []
    total = len(roots)
    try:
        for i, (t, order, kind, arg) in enumerate(roots):
            if i % 64 == 0:
                pending.extend(emitter.drain(t))
                while len(pending) >= BATCH_SPANS:
                    requests.append(_encode(pending[:BATCH_SPANS], encoding))
                    del pending[:BATCH_SPANS]
                if progress is not None:
                    progress(i, total)
            if order == 0:
                root = shop.frontend_request(t)
            elif order == 1:
                root = shop.stock_event(t)
            elif order == 2:
                root = shop.health(kind, arg, t)
            elif kind == "expiry":
                root = shop.expiry_sweep(t)
            else:
                root = shop.legacy_sync(t)
            nodes = root.walk()
            if any(n.end > end_unix_nano or timeline.straddles(n.service, n.start, n.end) for n in nodes):
                continue  # would leave the run, or its commit would depend on start vs end
            if root.rate >= 0:
                emitter.emit(root, emitter.empty)
        pending.extend(emitter.drain(None))
        for k in range(0, len(pending), BATCH_SPANS):
            requests.append(_encode(pending[k : k + BATCH_SPANS], encoding))
    finally:
        emitter.close()
    if progress is not None:
        progress(total, total)

    truth = {
        key: TruthRow(
            spans=acc[0],
            spans_adjusted=acc[1],
            errors=acc[2],
            durations_ns=tuple(sorted(acc[3])),
            own_errors=acc[4],
            exception_events=acc[5],
            exceptions=acc[6],
            exception_types=tuple(sorted(acc[7].items())),
        )
        for key, acc in sorted(emitter.truth.items())
    }
    return Traffic(
        requests=requests,
        deploys=[_deploy_event(d) for d in sorted(deploys, key=lambda d: d.at_unix_nano)],
        truth=truth,
        start_unix_nano=start_unix_nano,
        end_unix_nano=end_unix_nano,
        regressed=(regressing.service, "payments/retry", regressing.deploy_id),
    )
