"""Proration: conventions, change lines, quantity changes and the invariants, by hypothesis."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from ratecard.core.money import D, Money, RoundingMode, currency
from ratecard.core.periods import Period, local_midnight
from ratecard.core.proration import (
    Change,
    DayRounding,
    LineKind,
    ProrationMethod,
    ProrationPolicy,
    Rate,
    change_lines,
    changes_lines,
    measure,
    prorate,
    prorated_line,
    prorated_sum,
    proration_fraction,
    snap_to_day,
    split_amount,
)

Z = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")
USD = currency("USD")
HALF_UP = RoundingMode.HALF_UP
DAY = ProrationPolicy(rounding=HALF_UP)
SECOND = ProrationPolicy(rounding=HALF_UP, method=ProrationMethod.SECOND)
MONTHLY = ProrationPolicy(rounding=HALF_UP, method=ProrationMethod.MONTHLY)
POLICIES = [DAY, SECOND, MONTHLY, ProrationPolicy(rounding=HALF_UP, day_rounding=DayRounding.UP)]


def day(y: int, m: int, d: int, tz: ZoneInfo = Z) -> datetime:
    return local_midnight(date(y, m, d), tz)


JAN = Period(day(2024, 1, 1), day(2024, 2, 1))


def test_day_rounding_moves_boundaries() -> None:
    noon = datetime(2024, 1, 15, 12, tzinfo=Z)
    assert snap_to_day(noon, Z, DayRounding.DOWN) == day(2024, 1, 15)
    assert snap_to_day(noon, Z, DayRounding.UP) == day(2024, 1, 16)
    assert snap_to_day(noon, Z, DayRounding.NEAREST) == day(2024, 1, 16)
    assert snap_to_day(noon - timedelta(minutes=1), Z, DayRounding.NEAREST) == day(2024, 1, 15)
    assert snap_to_day(day(2024, 1, 15), Z, DayRounding.UP) == day(2024, 1, 15)


def test_day_counts_in_the_customer_timezone_across_dst() -> None:
    march = Period(day(2024, 3, 1, NY), day(2024, 4, 1, NY))
    second_half = Period(day(2024, 3, 16, NY), march.end_at)
    assert proration_fraction(second_half, march, NY, DAY) == Fraction(16, 31)
    # By the second the lost hour shows: 16 days of 31 minus one hour.
    hours = Fraction(16 * 24, 31 * 24 - 1)
    assert proration_fraction(second_half, march, NY, SECOND) == hours


def test_monthly_method_counts_each_month_as_thirty() -> None:
    period = Period(day(2024, 1, 15), day(2024, 2, 15))
    assert measure(Period(day(2024, 2, 1), day(2024, 3, 1)), Z, MONTHLY) == 30
    assert measure(period, Z, MONTHLY) == Fraction(17 * 30, 31) + Fraction(14 * 30, 29)
    assert proration_fraction(period, period, Z, MONTHLY) == 1


def test_minimum_charge_is_applied_and_capped_at_the_full_amount() -> None:
    policy = ProrationPolicy(rounding=HALF_UP, minimum_charge=D("5"))
    one_day = Period(day(2024, 1, 31), JAN.end_at)
    line = prorated_line(Rate(D("31")), one_day, JAN, tz=Z, cur=USD, policy=policy)
    assert line.minimum_applied and line.amount == Money(500, USD)
    cheap = prorated_line(Rate(D("3")), one_day, JAN, tz=Z, cur=USD, policy=policy)
    assert cheap.amount == Money(300, USD)


def test_fraction_places_round_the_fraction_first() -> None:
    policy = ProrationPolicy(rounding=HALF_UP, fraction_places=2)
    part = Period(day(2024, 1, 15), JAN.end_at)
    assert proration_fraction(part, JAN, Z, policy) == Fraction(55, 100)


def test_quantity_change_credits_old_quantity_and_charges_new() -> None:
    credit, debit = change_lines(
        Change(day(2024, 1, 15), Rate(D("10"), D("5"))),
        current=Rate(D("10"), D("3")),
        last_billed=Rate(D("10"), D("3")),
        period=JAN,
        tz=Z,
        cur=USD,
        policy=DAY,
    )
    assert (credit.kind, debit.kind) == (LineKind.CREDIT, LineKind.CHARGE)
    assert credit.amount == Money(-1645, USD)  # 30 x 17/31 = 16.4516
    assert debit.amount == Money(2742, USD)  # 50 x 17/31 = 27.4193...
    assert credit.fraction == debit.fraction == Fraction(17, 31)


def test_several_changes_in_one_period() -> None:
    changes = [
        Change(day(2024, 1, 10), Rate(D("20"))),
        Change(day(2024, 1, 20), Rate(D("30"))),
    ]
    lines = changes_lines(changes, billed=Rate(D("10")), period=JAN, tz=Z, cur=USD, policy=DAY)
    assert [line.rate.unit_price for line in lines] == [10, 20, 20, 30]
    assert sum(line.exact for line in lines) == Fraction(10 * 22, 31) + Fraction(10 * 12, 31)


def test_prorated_sum_counts_the_event_day() -> None:
    may = Period(day(2023, 5, 1), day(2023, 6, 1))
    events = [(datetime(2023, 5, 26, 15, tzinfo=Z), D("12")), (day(2023, 5, 31), D("-3"))]
    assert prorated_sum(may, D("5"), events, Z, DAY) == 5 + Fraction(72, 31) - Fraction(3, 31)


amounts = st.decimals(min_value=0, max_value=100_000, places=4, allow_nan=False)
day_offsets = st.integers(min_value=0, max_value=60 * 24 * 3600)


def _period(start_on: date, length_days: int, tz: ZoneInfo) -> Period:
    start = local_midnight(start_on, tz)
    return Period(start, local_midnight(start_on + timedelta(days=length_days), tz))


starts = st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31))
zones = st.sampled_from([Z, NY, ZoneInfo("Europe/Berlin")])


@given(amount=amounts, start_on=starts, length=st.integers(1, 366), tz=zones)
def test_full_period_prorates_to_the_full_price(
    amount: Decimal, start_on: date, length: int, tz: ZoneInfo
) -> None:
    period = _period(start_on, length, tz)
    for policy in POLICIES:
        fraction = proration_fraction(period, period, tz, policy)
        assert fraction == 1
        line = prorated_line(Rate(amount), period, period, tz=tz, cur=USD, policy=policy)
        assert line.exact == amount
        assert line.amount == Money.from_decimal(amount, USD, HALF_UP)


@given(
    amount=amounts,
    start_on=starts,
    length=st.integers(2, 120),
    cuts=st.lists(day_offsets, max_size=5),
    tz=zones,
)
def test_parts_of_a_split_period_sum_to_the_whole(
    amount: Decimal, start_on: date, length: int, cuts: list[int], tz: ZoneInfo
) -> None:
    period = _period(start_on, length, tz)
    inner = sorted({period.start_at + timedelta(seconds=c) for c in cuts} - {period.start_at})
    bounds = [period.start_at, *[b for b in inner if b < period.end_at], period.end_at]
    parts = [Period(a, b) for a, b in itertools.pairwise(bounds)]
    for policy in POLICIES:
        fractions = [proration_fraction(p, period, tz, policy) for p in parts]
        assert sum(fractions) == 1
        assert sum(prorate(amount, f) for f in fractions) == amount
        whole = Money.from_decimal(amount, USD, HALF_UP).amount_minor
        assert sum(split_amount(whole, parts, period, tz, policy)) == whole


@given(
    old=amounts,
    new=amounts,
    old_qty=st.integers(0, 50),
    new_qty=st.integers(0, 50),
    offset=st.integers(0, 30 * 24 * 3600 - 1),
)
def test_credit_and_debit_add_up_to_the_difference(
    old: Decimal, new: Decimal, old_qty: int, new_qty: int, offset: int
) -> None:
    at = JAN.start_at + timedelta(seconds=offset)
    before, after = Rate(old, Decimal(old_qty)), Rate(new, Decimal(new_qty))
    for policy in POLICIES:
        credit, debit = change_lines(
            Change(at, after),
            current=before,
            last_billed=before,
            period=JAN,
            tz=Z,
            cur=USD,
            policy=policy,
        )
        remaining = proration_fraction(Period(at, JAN.end_at), JAN, Z, policy)
        expected = Fraction(after.full_amount - before.full_amount) * remaining
        assert credit.exact + debit.exact == expected
        # Rounded separately: each line within half a cent of its exact value.
        assert abs(Fraction(credit.amount.to_decimal()) - credit.exact) <= Fraction(1, 200)
        assert abs(Fraction(debit.amount.to_decimal()) - debit.exact) <= Fraction(1, 200)
