"""The billing engine on timelines: advance, proration, arrears, commitments, behaviours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from ratecard.core.billing import BillingConventions, Draft, PlanBook, ProrationBehavior
from ratecard.core.catalog import (
    BillingTiming,
    Charge,
    ChargeModel,
    Commitment,
    Plan,
    PriceSpec,
    QuantitySource,
)
from ratecard.core.invoicing import InvoiceReason, LineKind
from ratecard.core.money import RoundingMode
from ratecard.core.periods import Interval, IntervalUnit, Period
from ratecard.core.pricing import Usage
from ratecard.core.proration import ProrationMethod, ProrationPolicy
from ratecard.core.subscription_model import Effective, PlanRef
from ratecard.services.rating import (
    Action,
    ChangeSpec,
    SubscriptionSpec,
    no_usage,
    subscription_drafts,
)

HALF_UP = RoundingMode.HALF_UP
CONV = BillingConventions(HALF_UP, ProrationPolicy(HALF_UP))
MONTH = Interval(IntervalUnit.MONTH)


def d(month: int, day: int, year: int = 2024) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def seat_plan(code: str, price: str, *, commitment: str | None = None) -> Plan:
    return Plan(
        code=code,
        name=code.title(),
        currency="USD",
        interval=MONTH,
        charges=(
            Charge(
                "seats",
                ChargeModel.PER_UNIT,
                PriceSpec(unit_price=Decimal(price)),
                source=QuantitySource.SEATS,
            ),
        ),
        commitments=(Commitment(Decimal(commitment)),) if commitment else (),
    )


def metered_plan() -> Plan:
    return Plan(
        code="usage",
        name="Usage",
        currency="USD",
        interval=MONTH,
        charges=(
            Charge(
                "calls",
                ChargeModel.PER_UNIT,
                PriceSpec(unit_price=Decimal("0.01")),
                source=QuantitySource.METER,
                meter_code="calls",
                timing=BillingTiming.IN_ARREARS,
            ),
        ),
        commitments=(Commitment(Decimal("50")),),
    )


def book(*plans: Plan) -> PlanBook:
    return {(p.code, p.version): p for p in plans}


def drafts(
    plans: PlanBook,
    changes: list[ChangeSpec],
    until: datetime,
    *,
    conv: BillingConventions = CONV,
    quantity: int = 1,
    start: datetime | None = None,
    trial_days: int | None = None,
    usage: object = no_usage,
) -> list[Draft]:
    first = next(iter(plans))
    spec = SubscriptionSpec(
        "s", PlanRef(*first), start or d(1, 1), quantity=quantity, trial_days=trial_days
    )
    return subscription_drafts(
        spec,
        changes,
        plans,
        usage=usage,
        conventions=conv,
        until_at=until,  # type: ignore[arg-type]
    )


def amounts(draft: Draft) -> list[str]:
    return [line.amount.format() for line in draft.lines]


def test_full_period_bills_the_full_price() -> None:
    (first,) = drafts(book(seat_plan("a", "19.99")), [], d(1, 20), quantity=3)
    assert first.reason is InvoiceReason.SUBSCRIPTION_START
    assert amounts(first) == ["59.97"]
    assert first.lines[0].proration is None


def test_quantity_change_now_credits_and_charges() -> None:
    plans = book(seat_plan("a", "10"))
    out = drafts(plans, [ChangeSpec(d(1, 15), Action.CHANGE_QUANTITY, quantity=5)], d(2, 1))
    change = out[1]
    assert change.reason is InvoiceReason.SUBSCRIPTION_CHANGE
    assert [line.kind for line in change.lines] == [
        LineKind.PRORATION_CREDIT,
        LineKind.PRORATION_DEBIT,
    ]
    assert amounts(change) == ["-5.48", "27.42"]  # 17/31 of 10 and of 50
    assert amounts(out[2]) == ["50.00"]


def test_change_at_period_end_bills_nothing_now() -> None:
    plans = book(seat_plan("a", "10"), seat_plan("b", "30"))
    change = ChangeSpec(d(1, 15), Action.CHANGE_PLAN, PlanRef("b", 1), when=Effective.PERIOD_END)
    out = drafts(plans, [change], d(2, 1))
    assert [amounts(x) for x in out] == [["10.00"], ["30.00"]]


def test_pause_credits_and_resume_charges() -> None:
    plans = book(seat_plan("a", "31"))
    changes = [ChangeSpec(d(1, 11), Action.PAUSE), ChangeSpec(d(1, 21), Action.RESUME)]
    out = drafts(plans, changes, d(2, 1))
    assert [amounts(x) for x in out] == [["31.00"], ["-21.00"], ["11.00"], ["31.00"]]


def test_cancel_now_credits_unused_time_unless_the_tenant_does_not() -> None:
    plans = book(seat_plan("a", "31"))
    cancel = [ChangeSpec(d(1, 22), Action.CANCEL)]
    out = drafts(plans, cancel, d(3, 1))
    assert [amounts(x) for x in out] == [["31.00"], ["-10.00"]]
    assert out[-1].reason is InvoiceReason.SUBSCRIPTION_END
    quiet = BillingConventions(HALF_UP, ProrationPolicy(HALF_UP), credit_on_cancel=False)
    assert [amounts(x) for x in drafts(plans, cancel, d(3, 1), conv=quiet)] == [["31.00"]]


def test_next_invoice_behaviour_defers_proration_lines() -> None:
    plans = book(seat_plan("a", "31"), seat_plan("b", "62"))
    conv = BillingConventions(
        HALF_UP, ProrationPolicy(HALF_UP), behavior=ProrationBehavior.NEXT_INVOICE
    )
    out = drafts(
        plans, [ChangeSpec(d(1, 22), Action.CHANGE_PLAN, PlanRef("b", 1))], d(2, 1), conv=conv
    )
    assert [amounts(x) for x in out] == [["31.00"], ["-10.00", "20.00", "62.00"]]


def test_none_behaviour_bills_changes_from_the_next_period() -> None:
    plans = book(seat_plan("a", "31"), seat_plan("b", "62"))
    conv = BillingConventions(HALF_UP, ProrationPolicy(HALF_UP), behavior=ProrationBehavior.NONE)
    out = drafts(
        plans, [ChangeSpec(d(1, 22), Action.CHANGE_PLAN, PlanRef("b", 1))], d(2, 1), conv=conv
    )
    assert [amounts(x) for x in out] == [["31.00"], ["62.00"]]


def test_trial_is_free_and_billing_starts_at_its_end() -> None:
    out = drafts(book(seat_plan("a", "10")), [], d(2, 1), trial_days=14)
    assert [(x.at, amounts(x)) for x in out] == [(d(1, 15), ["10.00"])]


def test_usage_in_arrears_and_commitment_true_up() -> None:
    def usage(meter: str, span: Period, with_values: bool) -> Usage:
        days = (span.end_at - span.start_at) // timedelta(days=1)
        return Usage(Decimal(days * 100))  # 100 calls a day -> 1.00 a day

    out = drafts(book(metered_plan()), [], d(3, 1), usage=usage)
    jan, feb = out
    assert [(line.kind, line.amount.format()) for line in jan.lines] == [
        (LineKind.USAGE, "31.00"),
        (LineKind.COMMITMENT_TRUE_UP, "19.00"),
    ]
    assert amounts(feb) == ["29.00", "21.00"]


def test_seat_change_does_not_restart_usage_tiers() -> None:
    plan = metered_plan()
    calls: list[Period] = []

    def usage(meter: str, span: Period, with_values: bool) -> Usage:
        calls.append(span)
        return Usage(Decimal(10000))

    drafts(
        book(plan), [ChangeSpec(d(1, 10), Action.CHANGE_QUANTITY, quantity=4)], d(2, 1), usage=usage
    )
    assert calls == [Period(d(1, 1), d(2, 1))]


def test_second_proration_rounds_credit_and_debit_separately() -> None:
    plans = book(seat_plan("a", "90"), seat_plan("b", "120"))
    conv = BillingConventions(HALF_UP, ProrationPolicy(HALF_UP, method=ProrationMethod.SECOND))
    out = drafts(
        plans,
        [ChangeSpec(d(4, 21, 2019), Action.CHANGE_PLAN, PlanRef("b", 1))],
        d(4, 30, 2019),
        conv=conv,
        start=d(4, 1, 2019),
    )
    assert amounts(out[1]) == ["-30.00", "40.00"]


prices = st.integers(min_value=1, max_value=10**7).map(lambda c: Decimal(c).scaleb(-2))


@settings(max_examples=60, deadline=None)
@given(
    price=prices,
    quantities=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=4),
    days=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=4, unique=True),
)
def test_changes_add_up_to_the_time_each_state_was_held(
    price: Decimal, quantities: list[int], days: list[int]
) -> None:
    """Advance + every credit and debit = the exact cost of each segment, to within rounding."""
    plans = book(seat_plan("a", str(price)))
    days = sorted(days)[: len(quantities)]
    changes = [
        ChangeSpec(d(1, 1) + timedelta(days=day), Action.CHANGE_QUANTITY, quantity=q)
        for day, q in zip(days, quantities, strict=False)
    ]
    out = drafts(plans, changes, d(1, 31), quantity=1)
    lines = [line for draft in out for line in draft.lines]
    billed = sum(line.amount.amount_minor for line in lines)
    held = [(0, 1)] + [(day, q) for day, q in zip(days, quantities, strict=False)]
    exact = Fraction(0)
    for (start, qty), (end, _) in zip(held, [*held[1:], (31, 0)], strict=True):
        exact += Fraction(price) * qty * Fraction(end - start, 31) * 100
    assert abs(billed - exact) <= len(lines)


@settings(max_examples=40, deadline=None)
@given(
    price=prices,
    quantity=st.integers(min_value=1, max_value=1000),
    month=st.integers(min_value=1, max_value=12),
)
def test_any_full_month_bills_exactly_price_times_quantity(
    price: Decimal, quantity: int, month: int
) -> None:
    start = d(month, 1, 2023)
    (first,) = drafts(
        book(seat_plan("a", str(price))),
        [],
        start + timedelta(days=2),
        quantity=quantity,
        start=start,
    )
    assert first.lines[0].amount.amount_minor == int(price * quantity * 100)
