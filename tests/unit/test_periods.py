"""Periods: half-open spans, month-end clamping from the anchor, calendar units, DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratecard.core.errors import ErrorCode, ValidationFailed
from ratecard.core.periods import (
    Interval,
    IntervalUnit,
    Period,
    add_interval,
    iter_periods,
    local_date,
    local_midnight,
    period_containing,
)

NY = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
Z = ZoneInfo("UTC")
MONTH = Interval(IntervalUnit.MONTH)


def at(y: int, m: int, d: int, tz: ZoneInfo = Z, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=tz)


def test_period_is_half_open_and_stored_in_utc() -> None:
    p = Period(at(2024, 1, 1, NY), at(2024, 2, 1, NY))
    assert p.start_at.tzinfo is UTC
    assert p.contains(at(2024, 1, 1, NY))
    assert not p.contains(at(2024, 2, 1, NY))
    assert p.duration == timedelta(days=31)
    assert p.days(NY) == 31


@pytest.mark.parametrize(
    ("start", "end"),
    [(at(2024, 1, 2), at(2024, 1, 1)), (at(2024, 1, 1), at(2024, 1, 1))],
)
def test_period_start_must_be_before_end(start: datetime, end: datetime) -> None:
    with pytest.raises(ValidationFailed) as err:
        Period(start, end)
    assert err.value.code is ErrorCode.INVALID_PERIOD


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValidationFailed):
        Period(datetime(2024, 1, 1), at(2024, 2, 1))  # noqa: DTZ001


def test_month_end_anchor_clamps_and_returns_to_the_31st() -> None:
    anchor = at(2024, 1, 31)
    days = [add_interval(anchor, MONTH, n, Z).date() for n in range(14)]
    assert days[:4] == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]
    assert days[13] == date(2025, 2, 28)
    assert add_interval(anchor, MONTH, -2, Z).date() == date(2023, 11, 30)


def test_leap_day_yearly_anchor() -> None:
    anchor = at(2024, 2, 29)
    year = Interval(IntervalUnit.YEAR)
    assert add_interval(anchor, year, 1, Z).date() == date(2025, 2, 28)
    assert add_interval(anchor, year, 4, Z).date() == date(2028, 2, 29)


def test_anniversary_period_containing() -> None:
    p = period_containing(at(2024, 3, 5), at(2024, 1, 31), MONTH, Z, calendar=False)
    assert (p.start_at.date(), p.end_at.date()) == (date(2024, 2, 29), date(2024, 3, 31))
    before = period_containing(at(2021, 9, 16), at(2021, 9, 25), MONTH, Z, calendar=False)
    assert (before.start_at.date(), before.end_at.date()) == (date(2021, 8, 25), date(2021, 9, 25))


@pytest.mark.parametrize(
    ("unit", "on", "start", "end"),
    [
        (IntervalUnit.MONTH, date(2024, 2, 10), date(2024, 2, 1), date(2024, 3, 1)),
        (IntervalUnit.QUARTER, date(2024, 5, 10), date(2024, 4, 1), date(2024, 7, 1)),
        (IntervalUnit.QUARTER, date(2024, 12, 31), date(2024, 10, 1), date(2025, 1, 1)),
        (IntervalUnit.YEAR, date(2024, 7, 4), date(2024, 1, 1), date(2025, 1, 1)),
        (IntervalUnit.WEEK, date(2024, 1, 10), date(2024, 1, 8), date(2024, 1, 15)),
        (IntervalUnit.DAY, date(2024, 1, 10), date(2024, 1, 10), date(2024, 1, 11)),
    ],
)
def test_calendar_units(unit: IntervalUnit, on: date, start: date, end: date) -> None:
    p = period_containing(local_midnight(on, TOKYO), at(2020, 1, 1), Interval(unit), TOKYO, True)
    assert p == Period(local_midnight(start, TOKYO), local_midnight(end, TOKYO))
    assert local_date(p.start_at, TOKYO).weekday() == 0 or unit is not IntervalUnit.WEEK


def test_calendar_first_period_is_a_stub_from_the_anchor() -> None:
    anchor = at(2024, 1, 15, NY, 9)
    first = period_containing(anchor, anchor, MONTH, NY, calendar=True)
    assert first == Period(anchor, at(2024, 2, 1, NY))
    periods = list(iter_periods(anchor, MONTH, NY, calendar=True, until_at=at(2024, 4, 1, NY)))
    assert [p.start_at for p in periods[1:]] == [at(2024, m, 1, NY) for m in (2, 3)]


def test_customer_timezone_decides_where_the_month_starts() -> None:
    # 2024-01-31 20:00 in New York is already February 1st in UTC.
    instant = at(2024, 1, 31, NY, 20)
    ny = period_containing(instant, at(2024, 1, 1), MONTH, NY, calendar=True)
    utc = period_containing(instant, at(2024, 1, 1), MONTH, Z, calendar=True)
    assert local_date(ny.start_at, NY) == date(2024, 1, 1)
    assert utc.start_at == at(2024, 2, 1)


def test_dst_month_keeps_local_midnight_and_counts_days() -> None:
    march = period_containing(at(2024, 3, 15, NY), at(2024, 1, 1, NY), MONTH, NY, calendar=True)
    assert march.duration == timedelta(days=31) - timedelta(hours=1)  # spring forward
    assert march.days(NY) == 31
    assert march.start_at.astimezone(NY).hour == march.end_at.astimezone(NY).hour == 0
    week = Interval(IntervalUnit.WEEK)
    anchor = at(2024, 11, 1, NY, 9)
    nxt = add_interval(anchor, week, 1, NY)
    assert nxt.astimezone(NY).hour == 9 and nxt - anchor == timedelta(days=7, hours=1)


@given(
    anchor_on=st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
    hour=st.integers(0, 23),
    unit=st.sampled_from(list(IntervalUnit)),
    count=st.integers(1, 3),
    tz=st.sampled_from([Z, NY, TOKYO, ZoneInfo("Australia/Lord_Howe")]),
    calendar=st.booleans(),
    offset_days=st.integers(0, 800),
)
def test_periods_tile_time_and_contain_their_instant(
    anchor_on: date,
    hour: int,
    unit: IntervalUnit,
    count: int,
    tz: ZoneInfo,
    calendar: bool,
    offset_days: int,
) -> None:
    interval = Interval(unit, count)
    anchor = datetime(anchor_on.year, anchor_on.month, anchor_on.day, hour, tzinfo=tz)
    instant = anchor + timedelta(days=offset_days, hours=offset_days % 24)
    p = period_containing(instant, anchor, interval, tz, calendar)
    assert p.contains(instant)
    following = period_containing(p.end_at, anchor, interval, tz, calendar)
    assert following.start_at == p.end_at


@given(
    day=st.integers(1, 31),
    month=st.integers(1, 12),
    n=st.integers(0, 60),
)
def test_monthly_boundaries_are_computed_from_the_anchor(day: int, month: int, n: int) -> None:
    anchor_on = date(2023, month, 1) + timedelta(days=day - 1)
    anchor = local_midnight(anchor_on, Z)
    boundary = add_interval(anchor, MONTH, n, Z).date()
    assert boundary.day == anchor_on.day or boundary.day < anchor_on.day
    if boundary.day < anchor_on.day:
        assert (boundary + timedelta(days=1)).day == 1  # clamped to the month's last day
