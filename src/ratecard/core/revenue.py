"""ASC 606 revenue: recognition schedules, price allocation, accruals and journal entries.

Worked example — Stripe's 31.00 USD monthly subscription from Jan 15 to Feb 15 (end exclusive),
recognized daily: 17 days in January, 14 in February::

    >>> from ratecard.core.money import currency
    >>> usd = currency("USD")
    >>> s = recognition_schedule(Money(3100, usd), datetime(2019, 1, 15, tzinfo=UTC),
    ...     datetime(2019, 2, 15, tzinfo=UTC), RecognitionConvention.DAILY_EXCLUSIVE_END,
    ...     RoundingMode.HALF_UP)
    >>> [(e.month_on.isoformat(), str(e.amount)) for e in s.entries]
    [('2019-01-01', '17.00 USD'), ('2019-02-01', '14.00 USD')]

Conventions (`RecognitionConvention`):
- DAILY_EXCLUSIVE_END (Stripe): whole UTC days in [start, end);
- DAILY_INCLUSIVE (Lago): whole days from the start date through the end date, both included;
- SECOND (Stripe amortization): time-proportional to the second;
- MONTH_EVEN_PRORATED_ENDS (Stripe "evenly, first and last month prorated"): partial first and
  last months time-proportional (rounded with the mode), the rest split evenly over the full
  months truncated to minor units, the last full month taking the residual.

Every schedule sums exactly to its amount: proportional splits go through `allocate()`
(largest remainder) and the sum is asserted. Journal entries always balance (asserted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from fractions import Fraction

from ratecard.core.errors import ErrorCode, RatecardError, invalid
from ratecard.core.money import Money, RoundingMode, allocate
from ratecard.core.tax import round_minor

__all__ = [
    "Account",
    "ArrearsAccrual",
    "JournalEntry",
    "JournalLine",
    "RecognitionConvention",
    "RecognitionSchedule",
    "ScheduleEntry",
    "SspAllocation",
    "account_balances",
    "accrual_entry",
    "allocate_transaction_price",
    "arrears_accrual",
    "credit_note_entry",
    "deferred_balance",
    "invoice_issued_entry",
    "payment_entry",
    "per_day",
    "recognition_entry",
    "recognition_schedule",
    "recognized_through",
]

_DAY = 86400


class RecognitionConvention(StrEnum):
    DAILY_EXCLUSIVE_END = "daily_exclusive_end"
    DAILY_INCLUSIVE = "daily_inclusive"
    SECOND = "second"
    MONTH_EVEN_PRORATED_ENDS = "month_even_prorated_ends"


def _utc(at: datetime) -> datetime:
    assert at.tzinfo is not None and at.utcoffset() == timedelta(0), f"not UTC: {at!r}"
    return at


def _midnight(at: datetime) -> datetime:
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


def _next_month(month: datetime) -> datetime:
    y, m = (month.year + 1, 1) if month.month == 12 else (month.year, month.month + 1)
    return datetime(y, m, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    month_on: date  # first day of the calendar month (UTC)
    amount: Money


@dataclass(frozen=True, slots=True)
class RecognitionSchedule:
    amount: Money
    service_start_at: datetime  # normalized half-open service period
    service_end_at: datetime
    convention: RecognitionConvention
    entries: tuple[ScheduleEntry, ...]

    def __post_init__(self) -> None:
        assert self.service_start_at < self.service_end_at
        assert sum(e.amount.amount_minor for e in self.entries) == self.amount.amount_minor

    @property
    def days(self) -> int:
        return (self.service_end_at - self.service_start_at) // timedelta(days=1)

    def measure(self, lo: datetime, hi: datetime) -> int:
        """Service units (days or seconds, by convention) within [lo, hi)."""
        return _measure(self.convention, self.service_start_at, self.service_end_at, lo, hi)


def _measure(
    convention: RecognitionConvention,
    start_at: datetime,
    end_at: datetime,
    lo: datetime,
    hi: datetime,
) -> int:
    daily = convention in (
        RecognitionConvention.DAILY_EXCLUSIVE_END,
        RecognitionConvention.DAILY_INCLUSIVE,
    )
    if daily:
        hi = _midnight(hi)  # a day counts once it has ended
    start, end = max(lo, start_at), min(hi, end_at)
    seconds = max(0, int((end - start).total_seconds()))
    return seconds // _DAY if daily else seconds


def recognition_schedule(
    amount: Money,
    start_at: datetime,
    end_at: datetime,
    convention: RecognitionConvention,
    mode: RoundingMode,
) -> RecognitionSchedule:
    """Straight-line recognition of `amount` over the service period, per calendar month.

    For DAILY_INCLUSIVE, `end_at`'s date is the last service day; for the other conventions
    `end_at` is the exclusive end. `mode` rounds the prorated ends of MONTH_EVEN_PRORATED_ENDS.
    """
    _utc(start_at), _utc(end_at)
    if convention is RecognitionConvention.DAILY_INCLUSIVE:
        start_at, end_at = _midnight(start_at), _midnight(end_at) + timedelta(days=1)
    elif convention is RecognitionConvention.DAILY_EXCLUSIVE_END:
        start_at, end_at = _midnight(start_at), _midnight(end_at)
    if not start_at < end_at:
        raise RatecardError(
            "the service period is empty", code=ErrorCode.INVALID_PERIOD, field="end_at"
        )
    months = [datetime(start_at.year, start_at.month, 1, tzinfo=UTC)]
    while _next_month(months[-1]) < end_at:
        months.append(_next_month(months[-1]))
    weights = [_measure(convention, start_at, end_at, m, _next_month(m)) for m in months]
    if convention is RecognitionConvention.MONTH_EVEN_PRORATED_ENDS:
        parts = _month_even(amount.amount_minor, months, weights, mode)
    else:
        parts = allocate(amount.amount_minor, weights)
    entries = tuple(
        ScheduleEntry(m.date(), Money(p, amount.currency))
        for m, p in zip(months, parts, strict=True)
    )
    return RecognitionSchedule(amount, start_at, end_at, convention, entries)


def _month_even(
    total: int,
    months: list[datetime],
    weights: list[int],
    mode: RoundingMode,
) -> list[int]:
    whole = sum(weights)
    partial = [
        i for i, m in enumerate(months) if weights[i] != int((_next_month(m) - m).total_seconds())
    ]
    parts = [0] * len(months)
    taken = 0
    for i in partial:
        share = round_minor(Fraction(total * weights[i], whole), mode)
        # Ends rounded away from zero could add up to more than the amount (1 cent over a 1
        # second end and a nearly whole one, rounded up: 2 cents), leaving a month negative:
        # an end takes no more than is left.
        left = total - taken
        parts[i] = min(share, left) if total >= 0 else max(share, left)
        taken += parts[i]
    full = [i for i in range(len(months)) if i not in partial]
    rest = total - sum(parts)
    if full:
        share = rest // len(full)  # truncated to minor units
        for i in full:
            parts[i] = share
        parts[full[-1]] += rest - share * len(full)
    else:
        parts[partial[-1]] += rest
    assert sum(parts) == total
    return parts


def recognized_through(schedule: RecognitionSchedule, at: datetime, mode: RoundingMode) -> Money:
    """Revenue recognized up to instant `at`: whole months, plus the elapsed part of `at`'s
    month (proportional to the convention's units, rounded with `mode`)."""
    _utc(at)
    total = 0
    for entry in schedule.entries:
        month = datetime(entry.month_on.year, entry.month_on.month, 1, tzinfo=UTC)
        end = _next_month(month)
        if end <= at:
            total += entry.amount.amount_minor
        elif month < at:
            units = schedule.measure(month, end)
            done = schedule.measure(month, at)
            total += round_minor(Fraction(entry.amount.amount_minor * done, units), mode)
    return Money(total, schedule.amount.currency)


def deferred_balance(schedule: RecognitionSchedule, at: datetime, mode: RoundingMode) -> Money:
    """What is billed but not yet recognized at instant `at`."""
    return schedule.amount - recognized_through(schedule, at, mode)


def per_day(amount: Money, days: int, mode: RoundingMode) -> Money:
    """The daily figure shown beside a schedule: 1,200.00 / 365 -> 3.29."""
    assert days > 0
    return Money(round_minor(Fraction(amount.amount_minor, days), mode), amount.currency)


@dataclass(frozen=True, slots=True)
class ArrearsAccrual:
    """Daily accrual of an in-arrears fee into unbilled revenue, trued up at invoice."""

    amount: Money
    days: int
    daily: Money

    def unbilled_after(self, days_elapsed: int) -> Money:
        assert 0 <= days_elapsed <= self.days
        return Money(self.daily.amount_minor * days_elapsed, self.amount.currency)

    @property
    def true_up(self) -> Money:
        """Recognized when the invoice is issued (may be negative if the daily rounded up)."""
        return self.amount - self.unbilled_after(self.days)


def arrears_accrual(amount: Money, service_days: int, mode: RoundingMode) -> ArrearsAccrual:
    """50.00 over 31 days: 1.61 a day, 49.91 unbilled at the end, 0.09 trued up."""
    return ArrearsAccrual(amount, service_days, per_day(amount, service_days, mode))


@dataclass(frozen=True, slots=True)
class SspAllocation:
    obligation: str
    standalone_price: Money
    allocated: Money
    discount: Money  # standalone price - allocated (negative for a premium)


def allocate_transaction_price(
    transaction_price: Money, standalone_prices: Mapping[str, Money]
) -> tuple[SspAllocation, ...]:
    """Relative standalone-selling-price allocation (ASC 606-10-32-31), largest remainder:
    80 over SSPs 20/30/40 -> 18/27/35 (half-up each would give 81)."""
    if not standalone_prices:
        raise invalid("at least one performance obligation is needed", "standalone_prices")
    names = list(standalone_prices)
    ssp = [standalone_prices[n] for n in names]
    if any(p.amount_minor < 0 or p.currency != transaction_price.currency for p in ssp):
        raise invalid("standalone prices must be non-negative, in the price's currency")
    parts = allocate(transaction_price.amount_minor, [p.amount_minor for p in ssp])
    cur = transaction_price.currency
    return tuple(
        SspAllocation(n, p, Money(a, cur), p - Money(a, cur))
        for n, p, a in zip(names, ssp, parts, strict=True)
    )


# --- journal entries ----------------------------------------------------------------------


class Account(StrEnum):
    CASH = "cash"
    ACCOUNTS_RECEIVABLE = "accounts_receivable"
    UNBILLED_REVENUE = "unbilled_revenue"  # asset: earned, not yet invoiced
    DEFERRED_REVENUE = "deferred_revenue"  # liability: invoiced, not yet earned
    REVENUE = "revenue"
    CONTRA_REVENUE = "contra_revenue"  # credit notes, in the period issued
    TAX_PAYABLE = "tax_payable"


@dataclass(frozen=True, slots=True)
class JournalLine:
    account: Account
    debit: Money
    credit: Money

    def __post_init__(self) -> None:
        assert self.debit.currency == self.credit.currency
        assert min(self.debit.amount_minor, self.credit.amount_minor) == 0
        assert max(self.debit.amount_minor, self.credit.amount_minor) > 0


@dataclass(frozen=True, slots=True)
class JournalEntry:
    posted_on: date
    memo: str
    lines: tuple[JournalLine, ...]

    def __post_init__(self) -> None:
        assert len(self.lines) >= 2, "an entry needs two sides"
        assert len({line.debit.currency for line in self.lines}) == 1
        debits = sum(line.debit.amount_minor for line in self.lines)
        credits = sum(line.credit.amount_minor for line in self.lines)
        assert debits == credits, f"unbalanced entry: {debits} != {credits}"


def _entry(posted_on: date, memo: str, sides: Sequence[tuple[Account, Money]]) -> JournalEntry:
    """Lines from signed amounts: positive debits, negative credits; zero lines are dropped."""
    lines = []
    for account, amount in sides:
        zero = Money.zero(amount.currency)
        if amount.amount_minor > 0:
            lines.append(JournalLine(account, amount, zero))
        elif amount.amount_minor < 0:
            lines.append(JournalLine(account, zero, -amount))
    if not lines:
        raise invalid(f"nothing to post for {memo!r}")
    return JournalEntry(posted_on, memo, tuple(lines))


def invoice_issued_entry(
    issued_on: date, *, deferred: Money, unbilled: Money, revenue: Money, tax: Money
) -> JournalEntry:
    """Dr receivable for the invoice total; Cr deferred revenue (service not yet delivered),
    unbilled revenue (accrued in arrears, now billed), revenue (earned now) and tax payable."""
    receivable = deferred + unbilled + revenue + tax
    return _entry(
        issued_on,
        "invoice issued",
        [
            (Account.ACCOUNTS_RECEIVABLE, receivable),
            (Account.DEFERRED_REVENUE, -deferred),
            (Account.UNBILLED_REVENUE, -unbilled),
            (Account.REVENUE, -revenue),
            (Account.TAX_PAYABLE, -tax),
        ],
    )


def recognition_entry(on: date, amount: Money) -> JournalEntry:
    """Deferred revenue released to revenue (a schedule entry)."""
    return _entry(
        on, "revenue recognized", [(Account.DEFERRED_REVENUE, amount), (Account.REVENUE, -amount)]
    )


def accrual_entry(on: date, amount: Money) -> JournalEntry:
    """In-arrears revenue earned before it is invoiced."""
    return _entry(
        on, "revenue accrued", [(Account.UNBILLED_REVENUE, amount), (Account.REVENUE, -amount)]
    )


def payment_entry(on: date, amount: Money) -> JournalEntry:
    return _entry(
        on, "payment received", [(Account.CASH, amount), (Account.ACCOUNTS_RECEIVABLE, -amount)]
    )


def credit_note_entry(on: date, *, net: Money, tax: Money) -> JournalEntry:
    """Contra-revenue in the period issued, tax given back, receivable reduced."""
    return _entry(
        on,
        "credit note",
        [
            (Account.CONTRA_REVENUE, net),
            (Account.TAX_PAYABLE, tax),
            (Account.ACCOUNTS_RECEIVABLE, -(net + tax)),
        ],
    )


def account_balances(entries: Iterable[JournalEntry]) -> dict[Account, Money]:
    """Debit-minus-credit balance per account (liabilities and revenue come out negative)."""
    balances: dict[Account, Money] = {}
    for entry in entries:
        for line in entry.lines:
            zero = Money.zero(line.debit.currency)
            balances[line.account] = balances.get(line.account, zero) + line.debit - line.credit
    assert sum(b.amount_minor for b in balances.values()) == 0
    return balances
