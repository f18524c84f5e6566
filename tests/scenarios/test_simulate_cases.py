"""Worked cases from ../shared/cases driven end to end through `ratecard simulate`.

The unit tests reproduce every case on the core; these drive the whole path (scenario ->
timeline -> rating -> invoice) for the cases that describe an invoice.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from ratecard.services.render import invoice_dict
from ratecard.services.simulation import simulate
from tests.cases import load

CASES = {
    c["id"]: c
    for family in ("proration", "credits_discounts", "tax", "pricing_models")
    for c in load(family)
}


def _flat_plan(code: str, amount: str, currency: str, **extra: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": code,
        "currency": currency,
        "charges": [{"code": "base", "model": "flat", "amount": amount}],
        **extra,
    }


def _invoices(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    return [invoice_dict(i) for i in simulate(scenario).invoices]


def test_brief_17_of_31_days() -> None:
    case = CASES["PR-BRIEF-JAN2024-17-OF-31"]
    inp, expected = case["input"], case["expected"]
    # Calendar billing, started on Jan 15: the first (stub) period is 17 of January's 31 days.
    (first,) = _invoices(
        {
            "plans": [_flat_plan("p", inp["base_amount"], inp["currency"])],
            "subscription": {
                "plan": "p",
                "start": f"{inp['usage_start']}T00:00:00Z",
                "billing": "calendar",
            },
            "end": f"{inp['usage_end']}T00:00:00Z",
        }
    )
    (line,) = first["lines"]
    assert line["breakdown"]["proration"] == {
        "fraction": f"{expected['used_days']}/{expected['period_days']}",
        "used": "17 days",
        "of": "31 days",
        "convention": "day",
    }
    assert line["amount"] == expected["prorated_amount"]


def test_stripe_upgrade_next_invoice_130() -> None:
    expected = CASES["PR-STRIPE-UPGRADE-90-TO-120"]["expected"]
    invoices = _invoices(
        {
            "tenant": {"proration": "second", "proration_behavior": "next_invoice"},
            "plans": [_flat_plan("old", "90.00", "USD"), _flat_plan("new", "120.00", "USD")],
            "subscription": {
                "plan": "old",
                "start": "2019-04-01T00:00:00Z",
                "changes": [{"at": "2019-04-21T00:00:00Z", "action": "change_plan", "plan": "new"}],
            },
            "end": "2019-05-01T00:00:00Z",
        }
    )
    assert [i["issued_on"] for i in invoices] == ["2019-04-01", "2019-05-01"]
    amounts = [line["amount"] for line in invoices[1]["lines"]]
    assert amounts == [
        expected["unused_time_credit"],
        expected["remaining_time_debit"],
        "120.00",
    ]
    assert invoices[1]["total"] == expected["next_invoice_total"]


def test_lago_waterfall_through_an_invoice() -> None:
    case = CASES["CR-LAGO-INVOICE-WATERFALL"]
    inp, expected = case["input"], case["expected"]
    invoices = _invoices(
        {
            "plans": [
                {
                    "code": "p",
                    "currency": "USD",
                    "charges": [
                        {
                            "code": "sub",
                            "model": "flat",
                            "amount": str(inp["subscription_fees"]),
                            "timing": "in_arrears",
                        },
                        {
                            "code": "usage",
                            "model": "flat",
                            "amount": str(inp["usage_fees"]),
                            "timing": "in_arrears",
                        },
                    ],
                }
            ],
            "customer": {
                "tax": {"rate_percent": str(inp["tax_rate_percent"])},
                "credit_note_balance": str(inp["credit_notes"]),
                "prepaid_credits": str(inp["prepaid_credits"]),
            },
            "coupons": [{"code": "c", "amount_off": str(inp["coupons"])}],
            "subscription": {"plan": "p", "start": "2024-01-01T00:00:00Z", "coupons": ["c"]},
            "end": "2024-02-01T00:00:00Z",
        }
    )
    (invoice,) = invoices
    assert invoice["subtotal"] == "70.00"
    assert invoice["tax"] == expected["tax"]
    assert invoice["total"] == expected["subtotal_incl_tax"]
    assert invoice["amount_due"] == expected["total_due"]


def test_lago_lifecycle_annual_tax() -> None:
    expected = CASES["TX-LAGO-LIFECYCLE-SUBSCRIPTION-TAX"]["expected"]
    (invoice,) = _invoices(
        {
            "plans": [_flat_plan("annual", "1200.00", "USD", interval="year")],
            "customer": {"tax": {"rate_percent": "20"}},
            "subscription": {"plan": "annual", "start": "2025-01-01T00:00:00Z"},
            "end": "2025-06-01T00:00:00Z",
        }
    )
    assert (invoice["tax"], invoice["total"]) == (expected["tax"], expected["invoice_total"])


@pytest.mark.parametrize("units, total", [(10000, "5000.00"), (10001, "4000.40")])
def test_stripe_volume_boundary_on_an_invoice(units: int, total: str) -> None:
    (invoice,) = _invoices(
        {
            "meters": [{"code": "m", "aggregation": "sum", "property": "n"}],
            "plans": [
                {
                    "code": "v",
                    "currency": "USD",
                    "charges": [
                        {
                            "code": "u",
                            "model": "volume",
                            "meter": "m",
                            "tiers": [
                                {"up_to": 10000, "unit_price": "0.50"},
                                {"up_to": None, "unit_price": "0.40"},
                            ],
                        }
                    ],
                }
            ],
            "subscription": {"plan": "v", "start": "2024-01-01T00:00:00Z"},
            "events": [{"meter": "m", "timestamp": "2024-01-02T00:00:00Z", "value": str(units)}],
            "end": "2024-02-01T00:00:00Z",
        }
    )
    assert invoice["total"] == total


def test_termination_credit_through_a_cancel() -> None:
    expected = CASES["PR-LAGO-TERMINATION-CREDIT-31"]["expected"]
    invoices = _invoices(
        {
            "plans": [_flat_plan("p", "31.00", "EUR")],
            "customer": {"currency": "EUR", "tax": {"rate_percent": "20"}},
            "subscription": {
                "plan": "p",
                "start": "2022-10-01T00:00:00Z",
                "changes": [{"at": "2022-10-16T00:00:00Z", "action": "cancel", "when": "now"}],
            },
            "end": "2022-11-01T00:00:00Z",
        }
    )
    credit = invoices[-1]
    assert credit["subtotal"] == "-" + expected["credit_subtotal"]
    assert credit["tax"] == "-" + expected["credit_tax"]
    assert credit["total"] == "-" + expected["credit_total"]


@pytest.mark.parametrize("case_id", ["PR-KB-LEADING-BCD25-0916", "PR-KB-LEADING-BCD25-0930"])
def test_kill_bill_leading_proration_with_a_billing_day(case_id: str) -> None:
    inp, expected = CASES[case_id]["input"], CASES[case_id]["expected"]
    invoices = _invoices(
        {
            "plans": [_flat_plan("p", inp["price"], inp["currency"])],
            "subscription": {
                "plan": "p",
                "start": f"{inp['start']}T00:00:00Z",
                "billing_anchor": f"{inp['period_start']}T00:00:00Z",
            },
            "end": f"{inp['end']}T00:00:00Z",
        }
    )
    line = invoices[0]["lines"][0]
    assert line["breakdown"]["proration"]["fraction"] == str(
        Fraction(expected["days"], expected["period_days"])
    )
    assert line["amount"] == expected["amount"]


def test_contract_refuses_cancel_now_inside_the_minimum_term() -> None:
    from ratecard.core.errors import ValidationFailed

    scenario = {
        "plans": [_flat_plan("p", "10.00", "USD")],
        "subscription": {
            "plan": "p",
            "start": "2024-01-01T00:00:00Z",
            "contract": {"minimum_term_end": "2025-01-01T00:00:00Z", "auto_renew": False},
            "changes": [{"at": "2024-03-10T00:00:00Z", "action": "cancel", "when": "now"}],
        },
        "end": "2024-04-01T00:00:00Z",
    }
    with pytest.raises(ValidationFailed) as info:
        simulate(scenario)
    (problem,) = info.value.problems
    assert problem.field == "subscription.changes[0]"  # as the document names it
    assert problem.code == "subscription_in_minimum_term"


def test_contract_without_renewal_ends_at_the_term() -> None:
    invoices = _invoices(
        {
            "plans": [_flat_plan("p", "10.00", "USD")],
            "subscription": {
                "plan": "p",
                "start": "2024-01-01T00:00:00Z",
                "contract": {"minimum_term_end": "2024-03-01T00:00:00Z", "auto_renew": False},
            },
            "end": "2024-06-01T00:00:00Z",
        }
    )
    assert [i["issued_on"] for i in invoices] == ["2024-01-01", "2024-02-01"]


@pytest.mark.parametrize(
    ("key", "field"),
    [("subscription", "subscription.quantity"), ("subscriptions", "subscriptions[0].quantity")],
)
def test_a_problem_names_the_subscription_as_the_document_writes_it(key, field):
    from ratecard.core.errors import ValidationFailed

    sub = {"plan": "p", "start": "2024-01-01T00:00:00Z", "quantity": -1}
    scenario = {
        "plans": [
            {
                "code": "p",
                "currency": "USD",
                "charges": [{"code": "c", "model": "flat", "amount": "1.00"}],
            }
        ],
        key: sub if key == "subscription" else [sub],
        "end": "2024-02-01T00:00:00Z",
    }
    with pytest.raises(ValidationFailed) as info:
        simulate(scenario)
    assert [p.field for p in info.value.problems] == [field]
