"""Proration: what share of a billing period a part of it is, and the lines a change produces.

Worked example — the brief's 100.00 USD for Jan 15..31 of January (17 of 31 days)::

    >>> from datetime import datetime
    >>> from zoneinfo import ZoneInfo
    >>> from ratecard.core.money import D, RoundingMode, currency
    >>> utc = ZoneInfo("UTC")
    >>> jan = Period(datetime(2024, 1, 1, tzinfo=utc), datetime(2024, 2, 1, tzinfo=utc))
    >>> part = Period(datetime(2024, 1, 15, tzinfo=utc), jan.end_at)
    >>> policy = ProrationPolicy(rounding=RoundingMode.HALF_UP)
    >>> line = prorated_line(Rate(D("100")), part, jan, tz=utc, cur=currency("USD"),
    ...                      policy=policy)
    >>> (line.part_units, line.period_units, line.fraction, str(line.amount))
    (Fraction(17, 1), Fraction(31, 1), Fraction(17, 31), '54.84 USD')

Conventions (all options of `ProrationPolicy`, none hidden in callers):
- `DAY` (default): whole local days in the customer's timezone, half-open. Lago's inclusive
  dates 2024-01-15..2024-01-31 are the half-open `[01-15, 02-01)`: 17 of 31 days; Kill Bill's
  end-exclusive LocalDate periods over the real length of the billing period are the same thing.
  An instant inside a day is moved to a day boundary by `day_rounding`: `DOWN` (default) gives
  the day of a change to what starts then; `UP` gives it to what ends then (Lago counts the
  termination day as used). Boundaries move, not counts, so the parts of a period always add up.
- `SECOND` (Stripe): exact elapsed time over the period's exact length.
- `MONTHLY` (the seed's "each month a standard unit"): every calendar month counts 30 days; a
  part of a month counts its share of that month's days, so Feb 15..Mar 1 is 15 of 30.
- `fraction_places`: round the fraction itself first (Kill Bill: 9 places, half-up).
- `minimum_charge`: a prorated debit is never less than this (never more than the full amount).
- `credit_basis`: which price a change credits — `CURRENT` (Stripe classic: the current price,
  even if it was never billed) or `LAST_BILLED` (Stripe flexible: what was actually billed).

Amounts are exact `Fraction`s until one named rounding per line (`policy.rounding`, to the
currency's exponent); Stripe rounds the credit and the debit of a change separately, and so do we.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from zoneinfo import ZoneInfo

from ratecard.core.money import Currency, Money, RoundingMode, allocate, quantize
from ratecard.core.periods import Period, local_date, local_midnight, require_aware


class ProrationMethod(StrEnum):
    DAY = "day"
    SECOND = "second"
    MONTHLY = "monthly"


class DayRounding(StrEnum):
    """Where an instant inside a local day goes: to that day's start, the next, or the nearer."""

    DOWN = "down"
    UP = "up"
    NEAREST = "nearest"  # a tie (exactly noon) goes up


class CreditBasis(StrEnum):
    CURRENT = "current"  # Stripe billing_mode=classic
    LAST_BILLED = "last_billed"  # Stripe billing_mode=flexible


class LineKind(StrEnum):
    CHARGE = "charge"  # remaining time at the new rate (a debit)
    CREDIT = "credit"  # unused time at the old rate (negative)


@dataclass(frozen=True, slots=True)
class ProrationPolicy:
    rounding: RoundingMode
    method: ProrationMethod = ProrationMethod.DAY
    day_rounding: DayRounding = DayRounding.DOWN
    fraction_places: int | None = None
    minimum_charge: Decimal | None = None
    credit_basis: CreditBasis = CreditBasis.CURRENT

    def __post_init__(self) -> None:
        assert self.fraction_places is None or 0 <= self.fraction_places <= 18
        assert self.minimum_charge is None or self.minimum_charge >= 0


@dataclass(frozen=True, slots=True)
class Rate:
    """A price for a full period and how many of it: one seat-priced charge or a flat fee."""

    unit_price: Decimal
    quantity: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        assert self.quantity >= 0, self.quantity

    @property
    def full_amount(self) -> Decimal:
        return self.unit_price * self.quantity


def snap_to_day(at: datetime, tz: ZoneInfo, rounding: DayRounding) -> datetime:
    """Move an instant to a local midnight in `tz` (unchanged if it is one already)."""
    at = require_aware(at)
    start_at = local_midnight(local_date(at, tz), tz)
    if start_at == at or rounding is DayRounding.DOWN:
        return start_at
    end_at = local_midnight(local_date(at, tz) + timedelta(days=1), tz)
    if rounding is DayRounding.UP or (at - start_at) >= (end_at - at):
        return end_at
    return start_at


def _month_units(start_at: datetime, end_at: datetime, tz: ZoneInfo) -> Fraction:
    """30 per whole calendar month; a part of a month its share of that month's days times 30."""
    total = Fraction(0)
    on, end_on = local_date(start_at, tz), local_date(end_at, tz)
    while on < end_on:
        first_next = (on.replace(day=28) + timedelta(days=4)).replace(day=1)
        stop = min(first_next, end_on)
        month_days = (first_next - on.replace(day=1)).days
        total += Fraction(30 * (stop - on).days, month_days)
        on = stop
    return total


def measure(part: Period, tz: ZoneInfo, policy: ProrationPolicy) -> Fraction:
    """The length of `part` in the method's unit: days, microseconds or 30-day months' days.

    Day-based methods first snap both ends to local midnights (`policy.day_rounding`).
    """
    if policy.method is ProrationMethod.SECOND:
        return Fraction(part.microseconds)
    start_at = snap_to_day(part.start_at, tz, policy.day_rounding)
    end_at = snap_to_day(part.end_at, tz, policy.day_rounding)
    if end_at <= start_at:
        return Fraction(0)
    if policy.method is ProrationMethod.DAY:
        return Fraction((local_date(end_at, tz) - local_date(start_at, tz)).days)
    return _month_units(start_at, end_at, tz)


def proration_fraction(
    part: Period | None, period: Period, tz: ZoneInfo, policy: ProrationPolicy
) -> Fraction:
    """The share of `period` that `part` is; a full period is exactly 1, None is 0."""
    if part is None:
        return Fraction(0)
    assert period.covers(part), (part, period)
    whole = measure(period, tz, policy)
    assert whole > 0, period
    fraction = measure(part, tz, policy) / whole
    if policy.fraction_places is not None:
        fraction = Fraction(quantize(fraction, policy.fraction_places, policy.rounding))
    return fraction


def prorate(amount: Decimal, fraction: Fraction) -> Fraction:
    """The exact share of an amount (a Fraction: 100 x 17/31 has no finite decimal)."""
    assert 0 <= fraction <= 1, fraction
    return Fraction(amount) * fraction


@dataclass(frozen=True, slots=True)
class ProrationLine:
    """One separately rounded line, with everything its breakdown shows.

    `exact` and `amount` are signed: credits are negative. `part_units`/`period_units` are in
    the method's unit (days, microseconds, 30-day-month days): "17 of 31 days".
    """

    kind: LineKind
    part: Period
    rate: Rate
    part_units: Fraction
    period_units: Fraction
    fraction: Fraction
    exact: Fraction
    amount: Money
    rounding: RoundingMode
    minimum_applied: bool = False


def prorated_line(
    rate: Rate,
    part: Period,
    period: Period,
    *,
    tz: ZoneInfo,
    cur: Currency,
    policy: ProrationPolicy,
    kind: LineKind = LineKind.CHARGE,
) -> ProrationLine:
    """The charge (or, with `kind=CREDIT`, the negative credit) for `rate` over `part`."""
    fraction = proration_fraction(part, period, tz, policy)
    exact = prorate(rate.full_amount, fraction)
    minimum_applied = False
    if kind is LineKind.CHARGE and policy.minimum_charge is not None and exact > 0:
        floor = min(Fraction(policy.minimum_charge), Fraction(rate.full_amount))
        if exact < floor:
            exact, minimum_applied = floor, True
    if kind is LineKind.CREDIT:
        exact = -exact
    return ProrationLine(
        kind=kind,
        part=part,
        rate=rate,
        part_units=measure(part, tz, policy),
        period_units=measure(period, tz, policy),
        fraction=fraction,
        exact=exact,
        amount=Money.from_decimal(exact, cur, policy.rounding),
        rounding=policy.rounding,
        minimum_applied=minimum_applied,
    )


@dataclass(frozen=True, slots=True)
class Change:
    """A change of rate at `at` within a period; `prorate=False` changes without lines."""

    at: datetime
    new: Rate
    prorate: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", require_aware(self.at))


def change_lines(
    change: Change,
    *,
    current: Rate,
    last_billed: Rate,
    period: Period,
    tz: ZoneInfo,
    cur: Currency,
    policy: ProrationPolicy,
) -> tuple[ProrationLine, ProrationLine]:
    """Credit for the unused time of the old rate and charge for the remaining time of the new.

    The old rate is `current` or `last_billed` by `policy.credit_basis`. Each line is rounded on
    its own. With `credit_basis=CURRENT` the exact sum is (new - old) x remaining fraction.
    """
    assert period.contains(change.at), (change.at, period)
    remaining = Period(change.at, period.end_at)
    credited = current if policy.credit_basis is CreditBasis.CURRENT else last_billed
    credit = prorated_line(
        credited, remaining, period, tz=tz, cur=cur, policy=policy, kind=LineKind.CREDIT
    )
    debit = prorated_line(change.new, remaining, period, tz=tz, cur=cur, policy=policy)
    return credit, debit


def changes_lines(
    changes: Sequence[Change],
    *,
    billed: Rate,
    period: Period,
    tz: ZoneInfo,
    cur: Currency,
    policy: ProrationPolicy,
) -> list[ProrationLine]:
    """The lines of several changes in one period, in time order.

    `billed` is what the period was billed at. A prorated change bills its new rate for the rest
    of the period, so it becomes the last billed rate; a change with `prorate=False` does not.
    """
    lines: list[ProrationLine] = []
    current = last_billed = billed
    previous_at = period.start_at
    for change in changes:
        assert previous_at <= change.at, "changes must be in time order"
        previous_at = change.at
        if change.prorate:
            lines.extend(
                change_lines(
                    change,
                    current=current,
                    last_billed=last_billed,
                    period=period,
                    tz=tz,
                    cur=cur,
                    policy=policy,
                )
            )
            last_billed = change.new
        current = change.new
    return lines


def split_amount(
    amount_minor: int,
    parts: Sequence[Period],
    period: Period,
    tz: ZoneInfo,
    policy: ProrationPolicy,
) -> list[int]:
    """Split a rounded amount over parts of a period by largest remainder; sums to the whole."""
    weights = [proration_fraction(part, period, tz, policy) for part in parts]
    return allocate(amount_minor, weights)


def prorated_sum(
    period: Period,
    carried_value: Decimal,
    events: Sequence[tuple[datetime, Decimal]],
    tz: ZoneInfo,
    policy: ProrationPolicy,
) -> Fraction:
    """Lago's recurring prorated SUM over one period, exact.

    A value carried from earlier periods counts for the whole period; an event at `at` counts
    from the local day that holds it to the period end (with `DAY`, the event day is included:
    May 26..31 is 6 of 31 days). Round the result where it is used, e.g. Lago's
    `quantize(result, 5, RoundingMode.CEILING)`.
    """
    result = Fraction(carried_value)
    for at, value in events:
        assert period.contains(at), (at, period)
        result += prorate_signed(
            value, proration_fraction(Period(at, period.end_at), period, tz, policy)
        )
    return result


def prorate_signed(value: Decimal, fraction: Fraction) -> Fraction:
    """`prorate` for values that may be negative (usage removals)."""
    return -prorate(-value, fraction) if value < 0 else prorate(value, fraction)
