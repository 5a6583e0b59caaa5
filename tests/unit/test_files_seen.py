"""Files seen (dead-code candidates): which code files attributed spans came from, and when last.

``group_ids`` notes each span's location per resource and the latest span start;
``drain_files_seen`` returns one row per (service, environment, repository, path) with the
latest start of the drained spans (a batch's), and starts over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attribution.attribute import Attributor, FileSeen, FileSightings
from attribution.model import Span
from attribution.modules import ModuleConfig
from attribution.repository import Repository
from collector.processing.batch import BatchProcessor, ProcessorConfig
from collector.processing.dedup import DedupWindow
from collector.processing.partitions import Job, PartitionProcessor

if TYPE_CHECKING:
    from conftest import Otel

T0 = 1_700_000_040 * 1_000_000_000
MS = 1_000_000
SECOND = 1_000_000_000

MODULES = ModuleConfig.from_mapping(
    {
        "source_roots": ["/srv/shop"],
        "modules": [
            {"name": "checkout/api", "routes": ["/api/cart/*"]},
            {"name": "payments", "paths": ["services/payments/**"]},
        ],
    }
)
REPO = Repository(name="shop", url="https://github.com/acme/shop", modules=MODULES)
URL = "https://github.com/acme/shop"

CHECKOUT = {"service.name": "checkout", "deployment.environment.name": "prod"}
PAYMENTS = {"service.name": "payments", "deployment.environment.name": "prod"}
CART = "/srv/shop/services/checkout/cart.py"
RETRY = "/srv/shop/services/payments/retry.py"
LEDGER = "services/payments/ledger.py"  # already repository-relative
EXTERNAL = "/usr/lib/python3.12/json/decoder.py"  # outside every source root


def spans(otel: Otel, resource: dict[str, Any], specs: list[tuple[int, dict[str, Any]]]) -> list[Span]:
    """Spans of 1 ms starting ``T0 + s`` seconds, with ``attributes``."""
    return otel.core_spans(resource, [("op", T0 + s * SECOND, T0 + s * SECOND + MS, a) for s, a in specs])


def path(p: str) -> dict[str, Any]:
    return {"code.file.path": p}


def test_files_seen_per_batch_carry_the_batch_latest_span(otel: Otel) -> None:
    att = Attributor([REPO])
    checkout = spans(
        otel,
        CHECKOUT,
        [
            (5, path(CART)),
            (1, path(CART)),
            (9, path(CART)),
            (3, path(RETRY)),
            (4, path(EXTERNAL)),  # unattributed (external): no file
            (6, {"http.route": "/api/cart/add"}),  # attributed by its route, without a file
            (7, {}),  # no location
        ],
    )
    payments = spans(otel, PAYMENTS, [(2, path(RETRY)), (8, path(LEDGER)), (10, path(RETRY))])
    gids = att.group_ids(checkout + payments)
    assert [att.group(g).unattributed_reason for g in gids[4:7]] == ["external", "", "no_location"]
    latest = T0 + 10 * SECOND  # the batch's latest span start
    assert att.drain_files_seen() == [
        FileSeen("checkout", "prod", URL, "services/checkout/cart.py", latest),
        FileSeen("checkout", "prod", URL, "services/payments/retry.py", latest),
        FileSeen("payments", "prod", URL, "services/payments/ledger.py", latest),
        FileSeen("payments", "prod", URL, "services/payments/retry.py", latest),
    ]
    assert att.drain_files_seen() == []  # drained

    # the next batch: cached locations are noted too; the group ids do not change
    again = spans(otel, CHECKOUT, [(20, path(CART)), (30, path(CART)), (4, path(EXTERNAL))])
    gids2 = att.group_ids(again)
    assert gids2[0] == gids[0] and gids2[2] == gids[4]
    assert att.drain_files_seen() == [
        FileSeen("checkout", "prod", URL, "services/checkout/cart.py", T0 + 30 * SECOND)
    ]

    # two calls before one drain: one batch
    att.group_ids(spans(otel, CHECKOUT, [(40, path(CART))]))
    att.group_ids(spans(otel, CHECKOUT, [(50, path(CART))]))
    assert att.drain_files_seen() == [
        FileSeen("checkout", "prod", URL, "services/checkout/cart.py", T0 + 50 * SECOND)
    ]


def test_one_file_of_several_resources_is_one_row_per_service_and_environment(otel: Otel) -> None:
    """Two resources (versions) of one service and environment: one row."""
    att = Attributor([REPO])
    v1 = spans(otel, {**CHECKOUT, "service.version": "1.0"}, [(5, path(CART))])
    v2 = spans(otel, {**CHECKOUT, "service.version": "2.0"}, [(7, path(CART))])
    staging = spans(otel, {**CHECKOUT, "deployment.environment.name": "staging"}, [(1, path(CART))])
    att.group_ids(v2 + v1 + staging)
    assert att.drain_files_seen() == [
        FileSeen("checkout", "prod", URL, "services/checkout/cart.py", T0 + 7 * SECOND),
        FileSeen("checkout", "staging", URL, "services/checkout/cart.py", T0 + 7 * SECOND),
    ]


def test_files_seen_with_non_path_rules_key_the_cache_by_location(otel: Otel) -> None:
    """With route rules the path cache is keyed by the whole location: one file at two
    locations is still one row."""
    att = Attributor([REPO])
    att.group_ids(spans(otel, CHECKOUT, [(5, path(CART)), (8, {**path(CART), "code.function.name": "add"})]))
    assert att.drain_files_seen() == [
        FileSeen("checkout", "prod", URL, "services/checkout/cart.py", T0 + 8 * SECOND)
    ]


def test_batch_processor_open_batch_and_closed_batches(otel: Otel) -> None:
    proc = BatchProcessor(ProcessorConfig(), [REPO])
    proc.add(spans(otel, CHECKOUT, [(5, path(CART)), (6, path(CART)), (7, path(EXTERNAL))]))
    proc.drain()
    assert proc.drain_files_seen() == [
        FileSeen("checkout", "prod", URL, "services/checkout/cart.py", T0 + 7 * SECOND)
    ]
    assert proc.drain_files_seen() == []

    # the stream: each closed batch carries the files that are news to its partition in their
    # window (T0 starts one), with the batch's own attributor
    assert T0 % ProcessorConfig().window_ns == 0
    att = Attributor([REPO])
    window = DedupWindow(100)
    seen = FileSightings(ProcessorConfig().window_ns)
    first = otel.proto(_sdk(otel, PAYMENTS, [(2, RETRY), (3, LEDGER)]))
    second = otel.proto(_sdk(otel, PAYMENTS, [(12, RETRY), (13, CART)]))
    out1 = proc.process("traces[0]", [(0, -1, first)], window, att, sightings=seen)
    assert out1.files_seen == [
        FileSeen("payments", "prod", URL, "services/payments/ledger.py", T0),
        FileSeen("payments", "prod", URL, "services/payments/retry.py", T0),
    ]
    # retry.py was reported in this window: only the new file
    out2 = proc.process("traces[0]", [(1, -1, second)], window, att, sightings=seen)
    assert out2.files_seen == [FileSeen("payments", "prod", URL, "services/checkout/cart.py", T0)]
    # records rebuilt (already written) report nothing, and do not hide the next batch's files
    third = otel.proto(_sdk(otel, PAYMENTS, [(70, RETRY)]))
    assert (
        proc.process("traces[0]", [(2, -1, third)], window, att, rebuild=True, sightings=seen).files_seen
        == []
    )
    fourth = otel.proto(_sdk(otel, PAYMENTS, [(75, RETRY)]))
    assert proc.process("traces[0]", [(3, -1, fourth)], window, att, sightings=seen).files_seen == [
        FileSeen("payments", "prod", URL, "services/payments/retry.py", T0 + 60 * SECOND)
    ]
    # a new process (a restart, a replay elsewhere) reports everything again: max makes it harmless
    again = BatchProcessor(ProcessorConfig(), [REPO]).process(
        "traces[0]",
        [(1, -1, second)],
        DedupWindow(100),
        Attributor([REPO]),
        sightings=FileSightings(60 * SECOND),
    )
    assert again.files_seen == [
        FileSeen("payments", "prod", URL, "services/checkout/cart.py", T0),
        FileSeen("payments", "prod", URL, "services/payments/retry.py", T0),
    ]


def test_file_sightings_report_a_file_once_per_window_and_start_over_past_their_cap() -> None:
    s = FileSightings(60 * SECOND, max_files=3)
    a, b, c, d = (("svc", "prod", URL, p) for p in "abcd")
    assert s.news([a, b], T0 + 5 * SECOND) == ([a, b], T0)
    assert s.news([a, b, c], T0 + 59 * SECOND) == ([c], T0)
    assert s.news([a], T0 - SECOND) == ([], T0 - 60 * SECOND)  # an older window: nothing new
    # a new window; holding a and c again would pass the cap: the rest is forgotten
    assert s.news([a, c], T0 + 61 * SECOND) == ([a, c], T0 + 60 * SECOND)
    assert s.news([b], T0 + 62 * SECOND) == ([b], T0 + 60 * SECOND)  # b again: forgotten
    assert s.news([a, b, c], T0 + 63 * SECOND) == ([], T0 + 60 * SECOND)
    assert s.news([d], T0 + 64 * SECOND) == ([d], T0 + 60 * SECOND)


def _sdk(otel: Otel, resource: dict[str, Any], specs: list[tuple[int, str]]) -> Any:
    batch = otel.batch(resource)
    for s, p in specs:
        batch.add("op", T0 + s * SECOND, T0 + s * SECOND + MS, attributes=path(p))
    return batch.spans


def test_each_partition_reports_its_files_and_a_reset_starts_over(otel: Otel) -> None:
    """Sightings are kept per partition (a partition's outcomes do not depend on which worker
    process holds it) and forgotten when it is assigned again."""
    pp = PartitionProcessor(ProcessorConfig(), [REPO])
    job = Job(selection=(0, 0, ()), end_offset=1)
    record = otel.proto(_sdk(otel, PAYMENTS, [(2, RETRY)]))
    retry = [FileSeen("payments", "prod", URL, "services/payments/retry.py", T0)]
    assert pp.process("traces", 0, [(0, -1, record)], job).files_seen == retry
    assert pp.process("traces", 1, [(0, -1, record)], job).files_seen == retry  # its own
    assert pp.process("traces", 0, [(1, -1, record)], job).files_seen == []
    pp.reset(0)
    assert pp.process("traces", 0, [(1, -1, record)], job).files_seen == retry
