"""Cost per module (attribution/cost.py): apportionment, billing files, rates, the split.

Every expected number is the test's own: exact shares from :class:`fractions.Fraction`,
billing totals summed from the rows the test wrote, rates times the hours of the range.
"""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest

from attribution.cost import (
    DAY_NS,
    HOUR_NS,
    IDLE_MODULE,
    CostEntry,
    CostRate,
    WeightSample,
    apportion,
    breakpoints,
    cost_report,
    effective_costs,
    format_usd,
    headline,
    module_costs,
    parse_billing_csv,
    rate_cost,
    rate_micro_usd_per_hour,
    to_micro_usd,
)
from collector.app.settings import load_settings
from collector.errors import ConfigError

D0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z
HEADER = "BillingCurrency,ChargePeriodStart,ChargePeriodEnd,BilledCost,EffectiveCost,ServiceName,Tags,x_environment\n"


# -- apportion -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(300))
def test_apportion_sums_back_exactly_and_stays_within_one_of_the_exact_share(seed: int) -> None:
    rnd = random.Random(seed)
    n = rnd.randint(1, 30)
    weights = {
        f"m{i:02d}": rnd.choice([0, 1, rnd.randint(0, 10**6), rnd.randint(0, 10**15)]) for i in range(n)
    }
    if not any(weights.values()):
        weights["m00"] = 1
    total = rnd.choice([0, 1, 7, rnd.randint(0, 10**6), rnd.randint(0, 10**13), -rnd.randint(1, 10**9)])
    shares = apportion(total, weights)
    assert set(shares) == set(weights)
    assert sum(shares.values()) == total
    wsum = sum(weights.values())
    for k, w in weights.items():
        exact = Fraction(total * w, wsum)
        assert abs(shares[k] - exact) < 1, (k, shares[k], exact)
        if w == 0:
            assert shares[k] == 0
    # the order the weights come in does not matter
    reordered = dict(sorted(weights.items(), key=lambda kv: rnd.random()))
    assert apportion(total, reordered) == shares


def test_apportion_breaks_ties_by_key_and_prefers_larger_remainders() -> None:
    assert apportion(1, {"b": 1, "a": 1}) == {"a": 1, "b": 0}
    assert apportion(2, {"c": 1, "b": 1, "a": 1}) == {"a": 1, "b": 1, "c": 0}
    # 10 over 1:2:3 is 1.67, 3.33, 5.0: the largest remainder (0.67) gets the spare unit
    assert apportion(10, {"x": 1, "y": 2, "z": 3}) == {"x": 2, "y": 3, "z": 5}
    # a credit is split like the charge, negated
    assert apportion(-10, {"x": 1, "y": 2, "z": 3}) == {"x": -2, "y": -3, "z": -5}
    assert apportion(5, {("svc", "env", "b"): 1, ("svc", "env", "a"): 1}) == {
        ("svc", "env", "a"): 3,
        ("svc", "env", "b"): 2,
    }


def test_apportion_with_no_weight_apportions_nothing() -> None:
    assert apportion(1_000, {}) == {}
    assert apportion(1_000, {"a": 0, "b": 0}) == {}
    with pytest.raises(ValueError, match="negative"):
        apportion(1_000, {"a": 2, "b": -1})


# -- money and billing files ---------------------------------------------------------------------


def test_money_is_exact_integer_micro_usd() -> None:
    assert to_micro_usd("12.345678") == 12_345_678
    assert to_micro_usd(" -0.5 ") == -500_000
    assert to_micro_usd("1e3") == 1_000_000_000
    assert to_micro_usd("0.0000005") == 0  # half-even at the micro-USD
    assert to_micro_usd("0.0000015") == 2
    for bad in ("", "1,5", "abc", "NaN", "inf"):
        with pytest.raises(ValueError):
            to_micro_usd(bad)
    assert format_usd(1_234_567_891) == "$1,234.57" and format_usd(-5_000) == "-$0.01"


def _csv(*rows: str, header: str = HEADER) -> str:
    return header + "".join(r + "\n" for r in rows)


def test_a_focus_file_becomes_entries_per_service_environment_and_day() -> None:
    day1, day2 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
    text = _csv(
        # ten rows of 0.1: a float sum would be 0.9999999999999999
        *[f'USD,{day1},{day2},9,0.1,Amazon EC2,"{{""service"": ""checkout""}}",prod' for _ in range(10)],
        'usd,2026-01-02,2026-01-03,1,2.000001,Amazon EKS,"{""service"": ""checkout""}",prod',
        'USD,2026-01-01 00:00:00,2026-01-02 00:00:00,1,3.5,Amazon RDS,"{""service"": ""payments"", ""environment"": ""prod""}",',
        f"USD,{day1},{day2},1,4.25,AWS Support,,",  # no service: skipped, counted
        "",  # blank lines are ignored
    )
    got = parse_billing_csv(text, "bill.csv")
    assert got.errors == []
    assert got.cost_column == "EffectiveCost"  # preferred over BilledCost when present
    assert got.rows == 13 and got.skipped_rows == 1 and got.skipped_micro_usd == 4_250_000
    assert got.entries == [
        CostEntry("checkout", "prod", D0, D0 + DAY_NS, 1_000_000, "bill.csv"),
        CostEntry("checkout", "prod", D0 + DAY_NS, D0 + 2 * DAY_NS, 2_000_001, "bill.csv"),
        CostEntry("payments", "prod", D0, D0 + DAY_NS, 3_500_000, "bill.csv"),
    ]
    assert got.micro_usd == 6_500_001
    billed = parse_billing_csv(text, "bill.csv", cost_column="BilledCost")
    assert billed.entries[0].micro_usd == 90_000_000


def test_columns_and_defaults_name_the_service() -> None:
    header = "ChargePeriodStart,ChargePeriodEnd,BilledCost,Tags,x_service\n"
    text = _csv(
        '2026-01-01,2026-01-02,1,"{""app"": ""cart""}",checkout',  # x_service wins over the tags
        '2026-01-01,2026-01-02,2,"{""app"": ""cart""}",',
        "2026-01-01,2026-01-02,4,,",
        header=header,
    )
    got = parse_billing_csv(
        text, "b.csv", service_tag="app", default_service="misc", default_environment="prod"
    )
    assert [(e.service, e.environment, e.micro_usd) for e in got.entries] == [
        ("cart", "prod", 2_000_000),
        ("checkout", "prod", 1_000_000),
        ("misc", "prod", 4_000_000),
    ]
    assert got.cost_column == "BilledCost" and not got.errors  # no BillingCurrency column: USD


def test_unreadable_rows_are_errors_naming_file_line_and_column() -> None:
    tags = '"{""service"": ""checkout""}"'
    text = _csv(
        f"USD,2026-01-01,2026-01-02,1,1.5,EC2,{tags},prod",  # line 2: fine
        f"USD,2026-01-01,2026-01-02,1,12;5,EC2,{tags},prod",  # 3: bad number
        f"EUR,2026-01-01,2026-01-02,1,1,EC2,{tags},prod",  # 4: not USD
        f"USD,yesterday,2026-01-02,1,1,EC2,{tags},prod",  # 5: bad time
        f"USD,2026-01-02,2026-01-01,1,1,EC2,{tags},prod",  # 6: ends before it starts
        'USD,2026-01-01,2026-01-02,1,1,"EC2\nmulti-line name",[1],prod',  # 7-8: tags not an object
        "USD,2026-01-01,2026-01-02,1",  # 9: too few fields
        f"USD,2026-01-01,2026-01-02,1,2.5,EC2,{tags},prod",  # 10: fine
    )
    got = parse_billing_csv(text, "exports/bill.csv")
    assert [(e.line, e.column) for e in got.errors] == [
        (3, "EffectiveCost"),
        (4, "BillingCurrency"),
        (5, "ChargePeriodStart"),
        (6, "ChargePeriodEnd"),
        (7, "Tags"),
        (9, "-"),
    ]
    assert str(got.errors[0]).startswith("exports/bill.csv:3: EffectiveCost: '12;5' is not a number")
    assert "'EUR'" in got.errors[1].message and "USD only" in got.errors[1].message
    assert str(got.errors[5]) == "exports/bill.csv:9: -: 4 fields, the header has 8"
    # the good rows are still read (the CLI imports nothing when there is any error)
    assert [e.micro_usd for e in got.entries] == [4_000_000]


def test_a_header_without_the_needed_columns_is_an_error_on_line_1() -> None:
    got = parse_billing_csv("Date,Cost\n2026-01-01,1\n", "b.csv")
    assert [str(e) for e in got.errors] == [
        "b.csv:1: ChargePeriodStart: no such column in the header",
        "b.csv:1: ChargePeriodEnd: no such column in the header",
        "b.csv:1: BilledCost: no such column in the header",
    ]
    assert got.entries == []
    assert parse_billing_csv("\ufeff" + HEADER, "bom.csv").errors == []  # a UTF-8 BOM is fine


# -- rates -------------------------------------------------------------------------------------


def test_rates_times_the_hours_of_a_range() -> None:
    per_hour = rate_micro_usd_per_hour(
        usd_per_cpu_hour=Decimal("0.0464"), cpus_per_instance=Decimal(2), instances=Decimal(3)
    )
    assert per_hour == 278_400  # 0.0464 x 2 x 3 = 0.2784 USD an hour
    assert rate_micro_usd_per_hour(usd_per_hour=Decimal("1.25")) == 1_250_000
    assert rate_cost(per_hour, D0, D0 + 90 * 60 * 10**9) == 417_600  # 1.5 h
    assert rate_cost(per_hour, D0, D0 + 10**9) == 77  # one second, floored to the micro-USD
    for kwargs in ({}, {"usd_per_hour": Decimal(1), "usd_per_cpu_hour": Decimal(1)}):
        with pytest.raises(ValueError, match="either"):
            rate_micro_usd_per_hour(**kwargs)

    rate = CostRate("checkout", "prod", 1_000_000)  # 1 USD an hour
    start, end = D0 + 6 * HOUR_NS, D0 + 2 * DAY_NS + 12 * HOUR_NS  # 2.25 days
    costs = effective_costs([], [rate], start, end)
    assert [(c.start_unix_nano, c.end_unix_nano, c.micro_usd) for c in costs] == [
        (start, D0 + DAY_NS, 18_000_000),
        (D0 + DAY_NS, D0 + 2 * DAY_NS, 24_000_000),
        (D0 + 2 * DAY_NS, end, 12_000_000),
    ]
    assert sum(c.micro_usd for c in costs) == 54 * 1_000_000  # 54 hours
    bounded = CostRate(
        "checkout", "prod", 1_000_000, since_unix_nano=D0 + DAY_NS, until_unix_nano=D0 + DAY_NS + HOUR_NS
    )
    assert [c.micro_usd for c in effective_costs([], [bounded], start, end)] == [1_000_000]


def test_billing_wins_over_rates_on_the_days_it_covers_and_is_prorated_at_the_edges() -> None:
    bill = [
        CostEntry("checkout", "prod", D0, D0 + DAY_NS, 48_000_000, "bill.csv"),
        CostEntry("checkout", "prod", D0, D0 + DAY_NS, 2_000_000, "other.csv"),  # same day, added
    ]
    rates = [CostRate("checkout", "prod", 1_000_000), CostRate("payments", "prod", 500_000)]
    start, end = D0 + 12 * HOUR_NS, D0 + 2 * DAY_NS
    costs = effective_costs(bill, rates, start, end)
    assert costs == [
        CostEntry("checkout", "prod", start, D0 + DAY_NS, 25_000_000),  # half of the billed day
        CostEntry("checkout", "prod", D0 + DAY_NS, end, 24_000_000),  # unbilled: the rate
        CostEntry("payments", "prod", start, D0 + DAY_NS, 6_000_000),
        CostEntry("payments", "prod", D0 + DAY_NS, end, 12_000_000),
    ]
    assert breakpoints(costs, start, end) == [start, D0 + DAY_NS, end]


# -- the split ------------------------------------------------------------------------------------


def _sample(
    module: str, at: int, *, cpu: int = 0, self_ns: int = 0, dur: int = 0, spans: int = 0
) -> WeightSample:
    return WeightSample("checkout", "prod", module, at, cpu, self_ns, dur, spans)


def test_each_period_is_split_by_cpu_then_self_time_then_wall_time_and_idle_goes_to_idle() -> None:
    day = [CostEntry("checkout", "prod", D0 + i * DAY_NS, D0 + (i + 1) * DAY_NS, 1_000_000) for i in range(4)]
    samples = [
        # day 0: CPU time is recorded (the api's only): CPU decides, self time does not
        _sample("api", D0, cpu=3, self_ns=1, spans=1000),
        _sample("cart", D0 + HOUR_NS, cpu=1, self_ns=9, spans=1000),
        _sample("db", D0 + 2 * HOUR_NS, self_ns=50, spans=1000),
        # day 1: no CPU time: self time 1:3
        _sample("api", D0 + DAY_NS, self_ns=100, dur=1, spans=1000),
        _sample("cart", D0 + DAY_NS + 5, self_ns=300, dur=1, spans=1000),
        # day 2: no self time (rows from before it was measured): wall time
        _sample("api", D0 + 2 * DAY_NS, dur=7, spans=1000),
        _sample("cart", D0 + 2 * DAY_NS, dur=3, spans=1000),
        # day 3: nothing ran: idle capacity
    ]
    a = module_costs(day, samples)
    costs = {k[2]: v for k, v in a.costs.items()}
    assert costs == {
        "api": 750_000 + 250_000 + 700_000,
        "cart": 250_000 + 750_000 + 300_000,
        "db": 0,
        IDLE_MODULE: 1_000_000,
    }
    assert a.totals == {("checkout", "prod"): 4_000_000} and sum(a.costs.values()) == 4_000_000
    assert a.bases == {("checkout", "prod"): ["cpu_time", "self_time", "wall_time"]}


@pytest.mark.parametrize("seed", range(40))
def test_the_split_sums_back_to_the_costs_of_every_service(seed: int) -> None:
    rnd = random.Random(seed)
    services = [("checkout", "prod"), ("checkout", "staging"), ("payments", "prod")]
    costs = [
        CostEntry(s, e, D0 + d * DAY_NS, D0 + (d + 1) * DAY_NS, rnd.randint(-(10**6), 10**10))
        for s, e in services
        for d in range(5)
        if rnd.random() < 0.8
    ]
    samples = [
        WeightSample(
            s,
            e,
            f"m{rnd.randint(0, 6)}",
            D0 + rnd.randint(0, 5 * DAY_NS - 1),
            rnd.choice([0, rnd.randint(0, 10**12)]),
            rnd.choice([0, rnd.randint(0, 10**12)]),
            rnd.randint(0, 10**12),
            rnd.randint(0, 10**6),
        )
        for s, e in services
        for _ in range(rnd.randint(0, 60))
    ]
    a = module_costs(costs, samples)
    for s, e in services:
        want = sum(c.micro_usd for c in costs if (c.service, c.environment) == (s, e))
        assert sum(v for k, v in a.costs.items() if k[:2] == (s, e)) == want


def test_the_report_puts_the_module_costing_most_beyond_its_traffic_first() -> None:
    costs = [CostEntry("checkout", "prod", D0, D0 + DAY_NS, 100_000_000)]  # 100 USD
    samples = [
        _sample("api", D0, self_ns=60, spans=90_000),  # 90% of the traffic, 60% of the cost
        _sample("search", D0, self_ns=40, spans=10_000),  # 10% of the traffic, 40% of the cost
    ]
    rows = cost_report(
        module_costs(costs, samples), samples, {("checkout", "prod", "search"): ("@acme/search",)}
    )
    assert [r.module for r in rows] == ["search", "api"]
    search = rows[0]
    assert search.micro_usd == 40_000_000 and search.owners == ("@acme/search",)
    assert search.cost_share == pytest.approx(0.4) and search.traffic_share == pytest.approx(0.1)
    assert search.ratio == pytest.approx(4.0) and search.self_time_share == pytest.approx(0.4)
    assert headline(rows) == "search (checkout/prod): 10.0% of the traffic, 40.0% of the cost (x4.0), $40.00"
    assert headline([]) == "no module has both cost and traffic in this range"


# -- settings ----------------------------------------------------------------------------------


def test_cost_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PRODLOOP_COST__RATES",
        '[{"service": "checkout", "environment": "prod", "usd_per_cpu_hour": "0.0464", "cpus_per_instance": 2,'
        ' "instances": 3, "since": "2026-01-01T00:00:00Z"}, {"service": "payments", "usd_per_hour": 1.25}]',
    )
    monkeypatch.setenv("PRODLOOP_COST__CPU_TIME_ATTRIBUTE", "process.cpu.time")
    monkeypatch.setenv("PRODLOOP_COST__CPU_TIME_UNIT", "ms")
    s = load_settings()
    assert s.cost_rates() == (
        CostRate("checkout", "prod", 278_400, D0, None),
        CostRate("payments", "", 1_250_000, None, None),
    )
    assert s.cost.cpu_time_attribute == "process.cpu.time" and s.cost.cpu_time_unit_ns == 1_000_000
    monkeypatch.setenv("PRODLOOP_COST__RATES", '[{"service": "checkout"}]')
    with pytest.raises(ConfigError, match=r"cost\.rates\.0.*usd_per_cpu_hour"):
        load_settings()
