"""Plans as documents: native and template shapes, every error at once with its field path."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ratecard.core.catalog import BillingTiming, ChargeModel, ExceedAction, QuantitySource
from ratecard.core.errors import ErrorCode, ValidationFailed
from ratecard.core.periods import IntervalUnit
from ratecard.services.documents import load_text
from ratecard.services.plan_documents import load_plan

SEED = Path(__file__).resolve().parents[1] / "data" / "seed_template.json"

NATIVE_YAML = """
code: pro
name: Pro
currency: usd
interval: {unit: month, count: 3}
trial_days: 14
charges:
  - code: seats
    model: per_unit
    source: seats
    unit_price: 12.50
  - code: api_calls
    model: graduated
    meter: api_calls
    tiers:
      - {up_to: 10000, unit_price: 0}
      - {up_to: null, unit_price: 0.000125, flat_fee: 5}
entitlements:
  - {feature: sso, type: boolean}
commitments:
  - {minimum_amount: "500.00"}
"""


def _problems(data: Any) -> list[tuple[str | None, ErrorCode]]:
    with pytest.raises(ValidationFailed) as info:
        load_plan(data)
    return [(p.field, p.code) for p in info.value.problems]


def test_native_yaml_plan_loads_exactly() -> None:
    plan = load_plan(load_text(NATIVE_YAML, "plan.yaml")).plan
    assert plan.currency == "USD"
    assert plan.interval.unit is IntervalUnit.MONTH and plan.interval.count == 3
    seats, api = plan.charges
    assert seats.source is QuantitySource.SEATS and seats.timing is BillingTiming.IN_ADVANCE
    assert seats.price.unit_price == Decimal("12.50")
    assert api.source is QuantitySource.METER and api.timing is BillingTiming.IN_ARREARS
    assert api.price.tiers[1].unit_price == Decimal("0.000125")
    assert api.price.tiers[1].flat_fee == Decimal(5)
    assert plan.commitments[0].minimum_amount == Decimal("500.00")


def test_seed_template_loads_as_written() -> None:
    loaded = load_plan(load_text(SEED.read_text(encoding="utf-8"), "seed.json"))
    plan = loaded.plan
    assert plan.code == "enterprise_v2" and plan.currency == "USD"
    api, storage = plan.charges
    assert api.model is ChargeModel.VOLUME
    assert [t.up_to for t in api.price.tiers] == [Decimal(100000), Decimal(500000), None]
    assert [t.unit_price for t in api.price.tiers] == [
        Decimal("0.0005"),
        Decimal("0.0004"),
        Decimal("0.0003"),
    ]
    assert storage.model is ChargeModel.PER_UNIT and storage.price.unit_price == Decimal("0.10")
    (ent,) = plan.entitlements
    assert ent.limit == Decimal(1000000) and ent.on_exceed is ExceedAction.THROTTLE_AND_NOTIFY
    assert plan.commitments[0].minimum_amount == Decimal("5000.00")
    assert {m.code: m.aggregation for m in loaded.meters} == {
        "api_calls": "sum",
        "storage_gb": "latest",
    }


def test_every_problem_is_reported_with_its_path() -> None:
    problems = _problems(
        {
            "code": "x",
            "currency": "XXX",
            "charges": [
                {"code": "a", "model": "per_unit", "unit_price": 1.5},
                {"code": "b", "model": "bogus"},
            ],
            "surprise": True,
        }
    )
    assert ("currency", ErrorCode.INVALID_VALUE) in problems
    assert ("charges[0].unit_price", ErrorCode.INVALID_VALUE) in problems
    assert ("charges[1].model", ErrorCode.INVALID_VALUE) in problems
    assert ("surprise", ErrorCode.UNKNOWN_FIELD) in problems


def test_semantic_problems_name_fields() -> None:
    problems = _problems(
        {
            "code": "x",
            "currency": "USD",
            "charges": [
                {
                    "code": "a",
                    "model": "graduated",
                    "tiers": [{"up_to": "10", "unit_price": "1"}, {"up_to": "5"}],
                },
                {"code": "a", "model": "per_unit"},
            ],
        }
    )
    assert ("charges[0].tiers[1].up_to", ErrorCode.TIERS_NOT_CONTIGUOUS) in problems
    assert ("charges[1]", ErrorCode.INVALID_VALUE) in problems
    assert ("charges[1].unit_price", ErrorCode.MISSING_FIELD) in problems


def test_missing_required_fields() -> None:
    problems = _problems({"code": "x"})
    assert ("currency", ErrorCode.MISSING_FIELD) in problems
    assert ("charges", ErrorCode.MISSING_FIELD) in problems


def test_template_errors_name_template_fields() -> None:
    problems = _problems({"planId": "p", "currency": "USD", "features": [{"key": "k"}]})
    assert ("features[0].rating", ErrorCode.MISSING_FIELD) in problems


@pytest.mark.parametrize("text", ["amount: .inf", "amount: .nan", "{unclosed"])
def test_bad_documents_are_clear_errors(text: str) -> None:
    with pytest.raises(ValidationFailed):
        load_text(text, "plan.yaml")


def test_json_numbers_stay_exact() -> None:
    data = load_text('{"x": 0.1000000000000000055511151231257827}', "a.json")
    assert data["x"] == Decimal("0.1000000000000000055511151231257827")
