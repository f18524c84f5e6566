"""Billing periods: half-open `[start_at, end_at)` spans of aware UTC time, cut in local time.

Worked example — a monthly subscription anchored on 31 January in New York::

    >>> from datetime import datetime
    >>> from zoneinfo import ZoneInfo
    >>> ny = ZoneInfo("America/New_York")
    >>> anchor_at = datetime(2024, 1, 31, tzinfo=ny)
    >>> monthly = Interval(IntervalUnit.MONTH)
    >>> [add_interval(anchor_at, monthly, n, ny).astimezone(ny).date().isoformat()
    ...  for n in range(4)]
    ['2024-01-31', '2024-02-29', '2024-03-31', '2024-04-30']
    >>> p = period_containing(datetime(2024, 3, 5, tzinfo=ny), anchor_at, monthly, ny,
    ...                       calendar=False)
    >>> p.days(ny)
    31

Rules held here:
- instants are aware and stored in UTC; the customer's timezone only decides where local days,
  months, quarters (Jan/Apr/Jul/Oct 1), years (Jan 1) and weeks (Monday) begin;
- the n-th boundary is always computed from the anchor, never from the previous boundary, so an
  anchor on the 31st bills on Feb 29 and returns to Mar 31 (month-end clamping);
- an anniversary period repeats the anchor's local wall time; a calendar period starts at local
  midnight on the calendar boundary, and the first one is clipped to begin at the anchor (a stub);
- wall times that fall into a daylight-saving gap resolve with `fold=0` (the pre-transition offset).
"""

from __future__ import annotations

import calendar as _calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from ratecard.core.errors import ErrorCode, Problem, ValidationFailed

#: A bound on period iteration: no timeline walks more periods than this.
MAX_PERIODS = 100_000


class IntervalUnit(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


_MONTHS = {IntervalUnit.MONTH: 1, IntervalUnit.QUARTER: 3, IntervalUnit.YEAR: 12}
_DAYS = {IntervalUnit.DAY: 1, IntervalUnit.WEEK: 7}


@dataclass(frozen=True, slots=True)
class Interval:
    unit: IntervalUnit
    count: int = 1

    def __post_init__(self) -> None:
        assert self.count >= 1


def _period_error(message: str) -> ValidationFailed:
    return ValidationFailed([Problem(ErrorCode.INVALID_PERIOD, message)])


def require_aware(at: datetime, name: str = "at") -> datetime:
    """The instant in UTC; a naive datetime is refused."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise _period_error(f"{name} must be timezone-aware: {at.isoformat()}")
    return at.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open span `[start_at, end_at)` of time; both ends aware, stored in UTC."""

    start_at: datetime
    end_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_at", require_aware(self.start_at, "start_at"))
        object.__setattr__(self, "end_at", require_aware(self.end_at, "end_at"))
        if not self.start_at < self.end_at:
            raise _period_error(
                f"period start {self.start_at.isoformat()} is not before its end "
                f"{self.end_at.isoformat()}"
            )

    def contains(self, at: datetime) -> bool:
        return self.start_at <= require_aware(at) < self.end_at

    def covers(self, other: Period) -> bool:
        """True when `other` lies entirely inside this period."""
        return self.start_at <= other.start_at and other.end_at <= self.end_at

    @property
    def duration(self) -> timedelta:
        return self.end_at - self.start_at

    @property
    def microseconds(self) -> int:
        """The exact length as an integer (no float seconds anywhere)."""
        return self.duration // timedelta(microseconds=1)

    def days(self, tz: ZoneInfo) -> int:
        """Local midnights crossed: the local end date minus the local start date.

        For a period cut at local midnights this is its number of calendar days in `tz`
        (23- and 25-hour DST days count as one day each).
        """
        return (local_date(self.end_at, tz) - local_date(self.start_at, tz)).days

    def intersection(self, other: Period) -> Period | None:
        start_at = max(self.start_at, other.start_at)
        end_at = min(self.end_at, other.end_at)
        return Period(start_at, end_at) if start_at < end_at else None


def local_date(at: datetime, tz: ZoneInfo) -> date:
    """The calendar date of an instant in the customer's timezone (`_on` values come from here)."""
    return require_aware(at).astimezone(tz).date()


def local_midnight(on: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which the local day `on` begins in `tz`."""
    return datetime.combine(on, time(0), tzinfo=tz).astimezone(UTC)


def _at_wall(on: date, wall: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(on, wall, tzinfo=tz).astimezone(UTC)


def _add_months(on: date, months: int, day: int) -> date:
    y, m = divmod(on.year * 12 + on.month - 1 + months, 12)
    return date(y, m + 1, min(day, _calendar.monthrange(y, m + 1)[1]))


def add_interval(anchor_at: datetime, interval: Interval, n: int, tz: ZoneInfo) -> datetime:
    """The n-th boundary after (n < 0: before) `anchor_at`, in local wall time of `tz`.

    Months clamp to the month's last day and are always counted from the anchor's own day, so a
    Jan 31 anchor gives Feb 29 (2024), Mar 31, Apr 30.
    """
    local = require_aware(anchor_at, "anchor_at").astimezone(tz)
    wall = local.time()
    if interval.unit in _MONTHS:
        months = n * interval.count * _MONTHS[interval.unit]
        return _at_wall(_add_months(local.date(), months, local.day), wall, tz)
    days = n * interval.count * _DAYS[interval.unit]
    return _at_wall(local.date() + timedelta(days=days), wall, tz)


def _steps_between(anchor: date, on: date, interval: Interval) -> int:
    """A first guess of how many intervals separate two local dates (corrected by the caller)."""
    if interval.unit in _MONTHS:
        months = (on.year - anchor.year) * 12 + on.month - anchor.month
        return months // (interval.count * _MONTHS[interval.unit])
    return (on - anchor).days // (interval.count * _DAYS[interval.unit])


def anniversary_period(
    at: datetime, anchor_at: datetime, interval: Interval, tz: ZoneInfo
) -> Period:
    """The period `[anchor + n·interval, anchor + (n+1)·interval)` that holds `at`."""
    at = require_aware(at)
    n = _steps_between(local_date(anchor_at, tz), local_date(at, tz), interval)
    while add_interval(anchor_at, interval, n, tz) > at:
        n -= 1
    while add_interval(anchor_at, interval, n + 1, tz) <= at:
        n += 1
    return Period(
        add_interval(anchor_at, interval, n, tz), add_interval(anchor_at, interval, n + 1, tz)
    )


def calendar_start(at: datetime, interval: Interval, tz: ZoneInfo) -> date:
    """The local date on which the calendar unit holding `at` begins.

    Months begin on the 1st, quarters on Jan/Apr/Jul/Oct 1, years on Jan 1, weeks on Monday.
    A count above one aligns to multiples counted from year 0 (months) or 0001-01-01 (days).
    """
    on = local_date(at, tz)
    if interval.unit in _MONTHS:
        step = interval.count * _MONTHS[interval.unit]
        index = on.year * 12 + on.month - 1
        index -= index % step
        return date(index // 12, index % 12 + 1, 1)
    step = interval.count * _DAYS[interval.unit]
    ordinal = on.toordinal() - 1  # 0001-01-01 is a Monday, ordinal 1
    return date.fromordinal(ordinal - ordinal % step + 1)


def calendar_period(at: datetime, interval: Interval, tz: ZoneInfo) -> Period:
    """The whole calendar unit (local midnight to local midnight) that holds `at`."""
    start_on = calendar_start(at, interval, tz)
    if interval.unit in _MONTHS:
        end_on = _add_months(start_on, interval.count * _MONTHS[interval.unit], 1)
    else:
        end_on = start_on + timedelta(days=interval.count * _DAYS[interval.unit])
    return Period(local_midnight(start_on, tz), local_midnight(end_on, tz))


def period_containing(
    at: datetime, anchor_at: datetime, interval: Interval, tz: ZoneInfo, calendar: bool
) -> Period:
    """The billing period that holds `at`.

    Anniversary billing repeats the anchor; calendar billing uses calendar units and clips the
    unit that holds the anchor so that the first (stub) period starts at `anchor_at`.
    """
    if not calendar:
        return anniversary_period(at, anchor_at, interval, tz)
    unit = calendar_period(at, interval, tz)
    anchor_at = require_aware(anchor_at, "anchor_at")
    if unit.contains(anchor_at) and anchor_at <= require_aware(at):
        return Period(anchor_at, unit.end_at)
    return unit


def iter_periods(
    anchor_at: datetime,
    interval: Interval,
    tz: ZoneInfo,
    *,
    calendar: bool,
    until_at: datetime,
) -> Iterator[Period]:
    """Consecutive periods from `anchor_at`, each starting where the last ended, until `until_at`.

    The last period yielded is the one that holds `until_at` (if `until_at` is a boundary, the
    period ending there). Bounded by `MAX_PERIODS`.
    """
    until_at = require_aware(until_at, "until_at")
    current = period_containing(anchor_at, anchor_at, interval, tz, calendar)
    for _ in range(MAX_PERIODS):
        if current.start_at >= until_at:
            return
        yield current
        current = period_containing(current.end_at, anchor_at, interval, tz, calendar)
    raise _period_error(f"more than {MAX_PERIODS} periods before {until_at.isoformat()}")


def next_period(
    period: Period, anchor_at: datetime, interval: Interval, tz: ZoneInfo, calendar: bool
) -> Period:
    """The period that begins where `period` ends."""
    following = period_containing(period.end_at, anchor_at, interval, tz, calendar)
    assert following.start_at == period.end_at, (period, following)
    return following
