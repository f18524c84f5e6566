"""Revenue schedules, allocation and journal entries: examples and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ratecard.core.money import Money, RoundingMode, currency
from ratecard.core.revenue import (
    Account,
    JournalEntry,
    JournalLine,
    RecognitionConvention,
    account_balances,
    allocate_transaction_price,
    credit_note_entry,
    deferred_balance,
    invoice_issued_entry,
    payment_entry,
    recognition_entry,
    recognition_schedule,
    recognized_through,
)

USD = currency("USD")
HALF_UP = RoundingMode.HALF_UP
START = datetime(2024, 1, 1, tzinfo=UTC)


def usd(minor: int) -> Money:
    return Money(minor, USD)


def test_inclusive_and_exclusive_daily_differ_by_the_end_day() -> None:
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 31, tzinfo=UTC)
    inclusive = recognition_schedule(
        usd(3100), start, end, RecognitionConvention.DAILY_INCLUSIVE, HALF_UP
    )
    exclusive = recognition_schedule(
        usd(3000), start, end, RecognitionConvention.DAILY_EXCLUSIVE_END, HALF_UP
    )
    assert (inclusive.days, exclusive.days) == (31, 30)
    assert [e.amount for e in inclusive.entries] == [usd(3100)]


def test_recognized_through_mid_month_is_proportional() -> None:
    schedule = recognition_schedule(
        usd(3100),
        datetime(2019, 1, 15, tzinfo=UTC),
        datetime(2019, 2, 15, tzinfo=UTC),
        RecognitionConvention.DAILY_EXCLUSIVE_END,
        HALF_UP,
    )
    assert recognized_through(schedule, datetime(2019, 1, 20, 12, tzinfo=UTC), HALF_UP) == usd(500)
    assert deferred_balance(schedule, datetime(2019, 3, 1, tzinfo=UTC), HALF_UP) == usd(0)


def test_empty_service_period_is_refused() -> None:
    from ratecard.core.errors import RatecardError

    with pytest.raises(RatecardError):
        recognition_schedule(usd(100), START, START, RecognitionConvention.SECOND, HALF_UP)


def test_month_even_within_one_month_takes_everything() -> None:
    end = START + timedelta(days=10)
    schedule = recognition_schedule(
        usd(999), START, end, RecognitionConvention.MONTH_EVEN_PRORATED_ENDS, HALF_UP
    )
    assert [e.amount for e in schedule.entries] == [usd(999)]


def test_journal_entry_must_balance() -> None:
    with pytest.raises(AssertionError):
        JournalEntry(
            date(2025, 1, 1),
            "bad",
            (
                JournalLine(Account.CASH, usd(100), usd(0)),
                JournalLine(Account.REVENUE, usd(0), usd(99)),
            ),
        )


def test_invoice_payment_recognition_and_credit_note_balances() -> None:
    on = date(2025, 1, 1)
    entries = [
        invoice_issued_entry(
            on, deferred=usd(12000), unbilled=usd(0), revenue=usd(0), tax=usd(2400)
        ),
        payment_entry(on, usd(14400)),
        recognition_entry(on, usd(1000)),
        credit_note_entry(on, net=usd(500), tax=usd(100)),
    ]
    balances = account_balances(entries)
    assert balances[Account.CASH] == usd(14400)
    assert balances[Account.ACCOUNTS_RECEIVABLE] == usd(-600)
    assert balances[Account.DEFERRED_REVENUE] == usd(-11000)
    assert balances[Account.TAX_PAYABLE] == usd(-2300)
    assert balances[Account.REVENUE] + balances[Account.CONTRA_REVENUE] == usd(-500)


conventions = st.sampled_from(list(RecognitionConvention))
amounts = st.integers(min_value=0, max_value=10**9)
offsets = st.integers(min_value=0, max_value=3 * 365 * 86400)
lengths = st.integers(min_value=86400, max_value=3 * 365 * 86400)


def test_ends_rounded_up_never_take_more_than_the_amount():
    """1 cent over 60 days from a second past midnight: January is nearly whole and March one
    second long; rounded up, both ends would take a cent, and February -1."""
    start = START + timedelta(seconds=1)
    schedule = recognition_schedule(
        usd(1),
        start,
        start + timedelta(days=60),
        RecognitionConvention.MONTH_EVEN_PRORATED_ENDS,
        RoundingMode.UP,
    )
    assert [e.amount.amount_minor for e in schedule.entries] == [1, 0, 0]


@given(amounts, offsets, lengths, conventions, st.sampled_from(list(RoundingMode)))
@example(1, 1, 60 * 86400, RecognitionConvention.MONTH_EVEN_PRORATED_ENDS, RoundingMode.UP)
def test_schedules_sum_to_the_amount(
    minor: int, offset: int, length: int, convention: RecognitionConvention, mode: RoundingMode
) -> None:
    start = START + timedelta(seconds=offset)
    end = start + timedelta(seconds=length)
    schedule = recognition_schedule(usd(minor), start, end, convention, mode)
    assert sum(e.amount.amount_minor for e in schedule.entries) == minor
    assert all(e.amount.amount_minor >= 0 for e in schedule.entries)
    months = [e.month_on for e in schedule.entries]
    assert months == sorted(set(months))
    assert recognized_through(schedule, end + timedelta(days=32), mode) == usd(minor)
    assert deferred_balance(schedule, start - timedelta(days=1), mode) == usd(minor)


@given(amounts, st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=8))
def test_ssp_allocations_sum_to_the_transaction_price(minor: int, ssp: list[int]) -> None:
    result = allocate_transaction_price(usd(minor), {f"o{i}": usd(p) for i, p in enumerate(ssp)})
    assert sum(a.allocated.amount_minor for a in result) == minor


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**5)), min_size=1
    )
)
def test_journal_debits_equal_credits(rows: list[tuple[int, int, int]]) -> None:
    on = date(2025, 1, 1)
    entries = []
    for deferred, revenue, tax in rows:
        if deferred + revenue + tax == 0:
            continue
        entries.append(
            invoice_issued_entry(
                on, deferred=usd(deferred), unbilled=usd(0), revenue=usd(revenue), tax=usd(tax)
            )
        )
        if deferred:
            entries.append(recognition_entry(on, usd(deferred)))
    for entry in entries:
        assert sum(x.debit.amount_minor for x in entry.lines) == sum(
            x.credit.amount_minor for x in entry.lines
        )
    if entries:
        assert sum(b.amount_minor for b in account_balances(entries).values()) == 0
