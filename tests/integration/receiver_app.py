"""A small application instrumented with the real OpenTelemetry SDK, for the receiver tests.

Two services of one repository (``https://github.com/acme/app``, source root ``/srv/app``)
serve requests; every span's module, owners and commit are decided here, when the code path
is chosen, never by running an attributor.  The spans go out through whatever
``SpanExporter`` the test gives (the real OTLP exporters), via a ``BatchSpanProcessor``,
as in any instrumented application.  Timestamps are passed to the SDK explicitly, so the
durations are known exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, set_span_in_context

from attribution.model import AttrValue

ROOT = "/srv/app"
REPOSITORY = "https://github.com/acme/app"
ENVIRONMENT = "prod"
CART_COMMIT = "3f1c2a9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"
PAYMENTS_COMMIT = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
START_UNIX_NANO = 1_772_323_200 * 1_000_000_000  # 2026-03-01T00:00:00Z
UNATTRIBUTED = "(unattributed)"

MODULES_YAML = f"""\
source_roots: ["{ROOT}"]
module_depth: 2
modules:
  - name: cart/store
    paths: ["services/cart/store/**"]
  - name: cart/api
    services: [cart]
    routes: ["/api/cart/*"]
    owners: ["@acme/cart-api"]
  - name: payments/gateway
    paths: ["services/payments/gateway/**"]
  - name: payments/ledger
    namespaces: ["app.payments.ledger"]
    owners: ["@acme/finance"]
"""

CODEOWNERS = """\
*                     @acme/platform
/services/cart/       @acme/cart
/services/payments/   @acme/payments @dana
"""

TruthKey = tuple[str, str, str, tuple[str, ...], str]


@dataclass
class Truth:
    spans: int = 0
    errors: int = 0
    durations_ns: list[int] | None = None

    def add(self, duration: int, error: bool) -> None:
        self.spans += 1
        self.errors += int(error)
        if self.durations_ns is None:
            self.durations_ns = []
        self.durations_ns.append(duration)


@dataclass(frozen=True)
class Loc:
    module: str
    owners: tuple[str, ...]
    attrs: dict[str, AttrValue]


CART_STORE = Loc(
    "cart/store",
    ("@acme/cart",),
    {
        "code.file.path": f"{ROOT}/services/cart/store/db.py",
        "code.function.name": "app.cart.store.db.load_cart",
    },
)
CART_API = Loc("cart/api", ("@acme/cart-api",), {"http.route": "/api/cart/{id}"})
UTIL = Loc(
    "libs/util",
    ("@acme/platform",),
    {"code.file.path": f"{ROOT}/libs/util/retry.py", "code.function.name": "app.libs.util.retry.retry"},
)
GATEWAY = Loc(
    "payments/gateway",
    ("@acme/payments", "@dana"),
    {"code.file.path": f"{ROOT}/services/payments/gateway/stripe.py", "code.function.name": "charge"},
)
LEDGER = Loc("payments/ledger", ("@acme/finance",), {"code.namespace": "app.payments.ledger.Ledger"})
EXTERNAL = Loc(
    UNATTRIBUTED,
    (),
    {"code.file.path": "/usr/lib/python3/site-packages/requests/api.py", "code.function.name": "get"},
)
NOWHERE = Loc(UNATTRIBUTED, (), {})


def write_config(directory: Path) -> tuple[Path, Path]:
    modules = directory / "modules.yaml"
    codeowners = directory / "CODEOWNERS"
    modules.write_text(MODULES_YAML)
    codeowners.write_text(CODEOWNERS)
    return modules, codeowners


class _App:
    def __init__(self, seed: int, make_exporter: Callable[[], SpanExporter]) -> None:
        self.rng = random.Random(seed)
        self.truth: dict[TruthKey, Truth] = {}
        self.providers: dict[str, TracerProvider] = {}
        self.tracers: dict[str, Tracer] = {}
        for service, resource in (
            (
                "cart",
                {
                    "service.name": "cart",
                    "service.version": CART_COMMIT,
                    "deployment.environment.name": ENVIRONMENT,
                },
            ),
            (
                "payments",
                {
                    "service.name": "payments",
                    "service.version": "2.1.0",
                    "vcs.ref.head.revision": PAYMENTS_COMMIT,
                    "deployment.environment.name": ENVIRONMENT,
                },
            ),
        ):
            provider = TracerProvider(resource=Resource(resource), shutdown_on_exit=False)
            provider.add_span_processor(
                BatchSpanProcessor(make_exporter(), max_export_batch_size=128, schedule_delay_millis=50)
            )
            self.providers[service] = provider
            self.tracers[service] = provider.get_tracer("app", "1.0")

    def span(
        self,
        service: str,
        name: str,
        loc: Loc,
        start: int,
        parent: Context | None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> tuple[int, Context]:
        """Start a span; returns (end time chosen, context for children).  Ended by end()."""
        duration = int(self.rng.lognormvariate(15.0, 0.8))  # ~3 ms median
        error = self.rng.random() < 0.08
        span = self.tracers[service].start_span(
            name, context=parent or Context(), kind=kind, attributes=loc.attrs, start_time=start
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, "boom"))
        end = start + duration
        span.end(end_time=end)
        commit = CART_COMMIT if service == "cart" else PAYMENTS_COMMIT
        key = (service, ENVIRONMENT, loc.module, loc.owners, commit)
        self.truth.setdefault(key, Truth()).add(duration, error)
        return end, set_span_in_context(span, Context())

    def request(self, i: int) -> None:
        t = START_UNIX_NANO + i * 37_000_000
        if i % 3:
            _, ctx = self.span("cart", "GET /api/cart/{id}", CART_API, t, None, SpanKind.SERVER)
            self.span("cart", "load_cart", CART_STORE, t + 1000, ctx)
            self.span("cart", "retry", UTIL, t + 2000, ctx)
            if i % 5 == 0:
                self.span("cart", "GET", EXTERNAL, t + 3000, ctx, SpanKind.CLIENT)
        else:
            _, ctx = self.span("payments", "Authorize", NOWHERE, t, None, SpanKind.SERVER)
            self.span("payments", "charge", GATEWAY, t + 1000, ctx)
            self.span("payments", "post", LEDGER, t + 2000, ctx)

    def close(self) -> None:
        for p in self.providers.values():
            p.shutdown()  # flushes the batch processor, then shuts the exporter down


def run_app(
    make_exporter: Callable[[], SpanExporter], *, requests: int = 300, seed: int = 5
) -> dict[TruthKey, Truth]:
    """Serve ``requests`` requests, exporting through ``make_exporter()``; returns the truth."""
    app = _App(seed, make_exporter)
    try:
        for i in range(requests):
            app.request(i)
    finally:
        app.close()
    return app.truth
