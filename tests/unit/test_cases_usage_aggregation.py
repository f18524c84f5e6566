"""Every worked case of tests/data/cases/usage_aggregation.json, through `aggregate()`.

Lago cases drive the meter kinds directly; Stripe's legacy `aggregate_usage` cases go through
`stripe_meter()` and then a per-unit price, as an invoice would.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from ratecard.core.aggregation import (
    Aggregation,
    Event,
    MeterSpec,
    aggregate,
    stripe_meter,
)
from ratecard.core.catalog import ChargeModel, PriceSpec
from ratecard.core.money import RoundingMode, quantize
from ratecard.core.pricing import Usage, rate, validate_price
from tests.cases import params

Case = dict[str, Any]


def dec(value: object) -> Decimal:
    assert not isinstance(value, float)
    return value if isinstance(value, Decimal) else Decimal(str(value))


def instant(text: str) -> datetime:
    if len(text) == 10:  # a date: its midnight in UTC
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def prop(value: object) -> str | Decimal:
    return value if isinstance(value, str) else dec(value)


def lago_events(raw: list[dict[str, Any]]) -> list[Event]:
    events = []
    for item in raw:
        properties = dict(item.get("properties", {}))
        properties.update({k: v for k, v in item.items() if k not in ("timestamp", "properties")})
        events.append(
            Event(instant(item["timestamp"]), {k: prop(v) for k, v in properties.items()})
        )
    return events


def month_of(events: list[Event]) -> tuple[datetime, datetime]:
    first = events[0].timestamp
    start = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start, end


def check_simple_kinds(case: Case) -> None:
    inp, exp = case["input"], case["expected"]
    events = lago_events(inp["events"])
    start, end = month_of(events)
    fields = {
        "count": (Aggregation.COUNT, None),
        "sum": (Aggregation.SUM, inp.get("sum_field")),
        "max": (Aggregation.MAX, inp.get("max_field")),
        "unique_count": (Aggregation.UNIQUE_COUNT, inp.get("unique_field", inp.get("field"))),
    }
    for name, expected in exp.items():
        kind, value_property = fields[name]
        result = aggregate(MeterSpec(kind, value_property=value_property), events, start, end)
        assert result.total.value == dec(expected), name


def check_weighted_sum(case: Case) -> None:
    inp, exp = case["input"], case["expected"]
    events = lago_events(inp["events"])
    start, end = instant(inp["period_start"]), instant(inp["period_end_exclusive"])
    grouped = "weighted_sum_5dp" not in exp
    spec = MeterSpec(
        Aggregation.WEIGHTED_SUM, value_property="value", group_by=("region",) if grouped else ()
    )
    result = aggregate(spec, events, start, end)
    if grouped:
        for region, expected in exp.items():
            assert quantize(result.group(region).exact, 5, RoundingMode.HALF_UP) == dec(expected)
        return
    assert quantize(result.total.exact, 5, RoundingMode.HALF_UP) == dec(exp["weighted_sum_5dp"])
    assert result.total.event_count == exp["count"]


def stripe_invoice(case: Case, start: datetime, end: datetime) -> Decimal:
    inp = case["input"]
    events = [Event(instant(r["date"]), {"units": dec(r["units"])}) for r in inp["usage_records"]]
    quantity = aggregate(stripe_meter(inp["aggregate_usage"], "units"), events, start, end)
    price = PriceSpec(unit_price=dec(inp["unit_price"]))
    assert validate_price(ChargeModel.PER_UNIT, price, "price") == []
    return rate(ChargeModel.PER_UNIT, price, Usage(quantity.total.value)).amount


def check_stripe(case: Case) -> None:
    inp, exp = case["input"], case["expected"]
    if "periods" in inp:
        periods = [(instant(a), instant(b)) for a, b in inp["periods"]]
        for (start, end), expected in zip(periods, exp["invoices"], strict=True):
            assert stripe_invoice(case, start, end) == dec(expected)
        return
    start, end = instant(inp["period_start"]), instant(inp["period_end_exclusive"])
    assert stripe_invoice(case, start, end) == dec(exp["invoice_feb_14"])


def adapter(case: Case) -> Callable[[Case], None]:
    inp = case["input"]
    if "aggregate_usage" in inp:
        return check_stripe
    if "period_start" in inp:
        return check_weighted_sum
    return check_simple_kinds


@pytest.mark.parametrize("case", params("usage_aggregation"))
def test_case(case: Case) -> None:
    adapter(case)(case)
