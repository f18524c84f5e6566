"""Every case of tests/data/cases/proration.json, driven through the real proration core.

One small adapter per case shape turns the reference's notation into Ratecard values; the
conventions (inclusive dates, end-exclusive dates, per-second, classic vs flexible) are options of
`ProrationPolicy`, never arithmetic here. Inclusive end dates (Lago) become the half-open end at
the next local midnight.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ratecard.core.money import D, Money, RoundingMode, currency, quantize, round_to_minor
from ratecard.core.periods import Period, local_midnight
from ratecard.core.proration import (
    Change,
    CreditBasis,
    DayRounding,
    LineKind,
    ProrationMethod,
    ProrationPolicy,
    Rate,
    changes_lines,
    prorated_line,
    prorated_sum,
)
from tests.cases import params

UTC = ZoneInfo("UTC")
HALF_UP = RoundingMode.HALF_UP
LAGO = ProrationPolicy(rounding=HALF_UP)  # DAY, change day to the new state
STRIPE = ProrationPolicy(rounding=HALF_UP, method=ProrationMethod.SECOND)
KILL_BILL = ProrationPolicy(rounding=HALF_UP, fraction_places=9)

Case = dict[str, Any]


def _day(text: str) -> datetime:
    return local_midnight(date.fromisoformat(text), UTC)


def _through(text: str) -> datetime:
    """An inclusive end date: through the end of that day, i.e. the next midnight."""
    return local_midnight(date.fromisoformat(text) + timedelta(days=1), UTC)


def _num(value: object) -> Decimal:
    return D(str(value))


def brief_17_of_31(case: Case) -> None:
    i, e = case["input"], case["expected"]
    period = Period(_day(i["period_start"]), _through(i["period_end"]))
    part = Period(_day(i["usage_start"]), _through(i["usage_end"]))
    cur = currency(i["currency"])
    line = prorated_line(Rate(_num(i["base_amount"])), part, period, tz=UTC, cur=cur, policy=LAGO)
    assert line.part_units == e["used_days"]
    assert line.period_units == e["period_days"]
    assert line.amount == Money.parse(str(e["prorated_amount"]), cur)


def lago_fixed_charge_cents(case: Case) -> None:
    i, e = case["input"], case["expected"]
    cur = currency(i["currency"])
    period = Period(_day(i["period_start"]), _through(i["period_end"]))
    part = Period(_day(i["charge_start"]), period.end_at)
    unit_price = Decimal(i["unit_amount_cents"]).scaleb(-cur.exponent)
    rate = Rate(unit_price, Decimal(i["units"]))
    line = prorated_line(rate, part, period, tz=UTC, cur=cur, policy=LAGO)
    precise_cents = quantize(line.exact * 10**cur.exponent, 2, HALF_UP)
    assert precise_cents == _num(e["precise_amount_cents"])
    assert line.amount.amount_minor == e["amount_cents"]


def lago_termination_credit(case: Case) -> None:
    i, e = case["input"], case["expected"]
    cur = currency(i["currency"])
    period = Period(_day(i["period_start"]), _through(i["period_end"]))
    # Lago terminates during the day (10:00 in its spec); the termination day counts as used.
    terminated_at = _day(i["terminated_on"]) + timedelta(hours=10)
    policy = ProrationPolicy(rounding=HALF_UP, day_rounding=DayRounding.UP)
    unused = Period(terminated_at, period.end_at)
    line = prorated_line(
        Rate(_num(i["plan_amount"])),
        unused,
        period,
        tz=UTC,
        cur=cur,
        policy=policy,
        kind=LineKind.CREDIT,
    )
    assert line.part_units == e["unused_days"]
    credit = -line.amount
    assert credit == Money.parse(str(e["credit_subtotal"]), cur)
    rate = _num(i["tax_rate_percent"]) / 100
    tax = Money(round_to_minor(credit.to_decimal() * rate, cur, HALF_UP), cur)
    assert tax == Money.parse(str(e["credit_tax"]), cur)
    assert credit + tax == Money.parse(str(e["credit_total"]), cur)


def lago_prorated_sum(case: Case) -> None:
    i, e = case["input"], case["expected"]
    period = Period(_day(i["period_start"]), _through(i["period_end"]))
    events = [(_day(ev["date"]), _num(ev["value"])) for ev in i["events_in_period"]]
    exact = prorated_sum(period, _num(i["carried_over_recurring_value"]), events, UTC, LAGO)
    assert quantize(exact, 5, RoundingMode.CEILING) == _num(e["aggregation"])


def stripe_classic_vs_flexible(case: Case) -> None:
    i, e = case["input"], case["expected"]
    cur = currency(i["currency"])
    period = Period(_day(i["period_start"]), _day(i["period_end_exclusive"]))
    assert period.days(UTC) == i["period_days"]
    billed = Rate(_num(i["last_billed_price"]))
    # The upgrade to the current price was made without prorations (Stripe's April 11 step).
    upgrade = Change(_day("2024-04-11"), Rate(_num(i["current_price"])), prorate=False)
    downgrade = Change(_day(i["change_date"]), Rate(_num(i["new_price"])))
    assert Period(downgrade.at, period.end_at).days(UTC) == i["remaining_days"]
    for basis, expected in (
        (CreditBasis.CURRENT, e["classic_total"]),
        (CreditBasis.LAST_BILLED, e["flexible_total"]),
    ):
        policy = ProrationPolicy(
            rounding=HALF_UP, method=ProrationMethod.SECOND, credit_basis=basis
        )
        lines = changes_lines(
            [upgrade, downgrade], billed=billed, period=period, tz=UTC, cur=cur, policy=policy
        )
        assert [line.kind for line in lines] == [LineKind.CREDIT, LineKind.CHARGE]
        total = lines[0].amount + lines[1].amount
        assert total == Money.parse(str(expected), cur)
    classic = ProrationPolicy(rounding=HALF_UP, method=ProrationMethod.SECOND)
    credit, debit = changes_lines(
        [upgrade, downgrade], billed=billed, period=period, tz=UTC, cur=cur, policy=classic
    )
    assert (credit.amount.format(), debit.amount.format()) == ("-6.67", "3.33")


def stripe_upgrade(case: Case) -> None:
    i, e = case["input"], case["expected"]
    cur = currency(i["currency"])
    change_at = datetime.fromisoformat(i["change_at"].replace("Z", "+00:00"))
    period = Period(datetime(2019, 4, 1, tzinfo=UTC), datetime(2019, 5, 1, tzinfo=UTC))
    assert period.days(UTC) == i["period_days"]
    old, new = Rate(_num(i["old_price"])), Rate(_num(i["new_price"]))
    credit, debit = changes_lines(
        [Change(change_at, new)], billed=old, period=period, tz=UTC, cur=cur, policy=STRIPE
    )
    assert credit.fraction == Fraction(i["remaining_days"], i["period_days"])
    assert credit.amount == Money.parse(str(e["unused_time_credit"]), cur)
    assert debit.amount == Money.parse(str(e["remaining_time_debit"]), cur)
    may = Money.parse(str(i["new_price"]), cur)
    assert credit.amount + debit.amount + may == Money.parse(str(e["next_invoice_total"]), cur)
    # Revenue: April earns the old price for the used part and the new for the rest.
    used = Period(period.start_at, change_at)
    april = prorated_line(old, used, period, tz=UTC, cur=cur, policy=STRIPE).amount + debit.amount
    assert april == Money.parse(str(e["april_revenue"]), cur)
    assert may == Money.parse(str(e["may_revenue"]), cur)


def kill_bill_leading(case: Case) -> None:
    i, e = case["input"], case["expected"]
    cur = currency(i["currency"])
    period = Period(_day(i["period_start"]), _day(i["period_end"]))  # end-exclusive dates
    part = Period(_day(i["start"]), _day(i["end"]))
    line = prorated_line(Rate(_num(i["price"])), part, period, tz=UTC, cur=cur, policy=KILL_BILL)
    assert line.part_units == e["days"]
    assert line.period_units == e["period_days"]
    assert line.fraction == Fraction(quantize(Fraction(e["days"], e["period_days"]), 9, HALF_UP))
    assert line.amount == Money.parse(str(e["amount"]), cur)


ADAPTERS: dict[str, Callable[[Case], None]] = {
    "PR-BRIEF-JAN2024-17-OF-31": brief_17_of_31,
    "PR-LAGO-FIXED-CHARGE-CENTS": lago_fixed_charge_cents,
    "PR-LAGO-TERMINATION-CREDIT-31": lago_termination_credit,
    "PR-LAGO-PRORATED-SUM-AGG": lago_prorated_sum,
    "PR-STRIPE-CREDIT-CLASSIC-VS-FLEXIBLE": stripe_classic_vs_flexible,
    "PR-STRIPE-UPGRADE-90-TO-120": stripe_upgrade,
    "PR-KB-LEADING-BCD25-0916": kill_bill_leading,
    "PR-KB-LEADING-BCD25-0930": kill_bill_leading,
}


@pytest.mark.parametrize("case", params("proration"))
def test_proration_case(case: Case) -> None:
    assert case["id"] in ADAPTERS, f"no adapter for {case['id']}: every case must run"
    ADAPTERS[case["id"]](case)
