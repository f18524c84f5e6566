"""Meter aggregation: kinds, filters, groups, resets, half-open periods, exact weighted sums."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta
from decimal import Decimal as Dec
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ratecard.core.aggregation as aggregation
from ratecard.core.aggregation import (
    Aggregation,
    Event,
    MeterReset,
    MeterSpec,
    PropertyFilter,
    aggregate,
    stripe_meter,
)
from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.core.money import D

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 2, 1, tzinfo=UTC)


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


EVENTS = [
    Event(at(3), {"gb": Dec(5), "region": "eu", "user": "a"}),
    Event(at(2), {"gb": Dec(7), "region": "us", "user": "b"}),
    Event(at(9), {"gb": "1.5", "region": "eu", "user": "a"}),
    Event(at(20), {"region": "eu", "user": "c"}),  # no value: counted, not summed
]


def value(kind: Aggregation, events: list[Event] = EVENTS, **options: object) -> Dec:
    spec = MeterSpec(kind, value_property=None if kind is Aggregation.COUNT else "gb", **options)  # type: ignore[arg-type]
    return aggregate(spec, events, START, END).total.value


def test_docstring_example() -> None:
    assert doctest.testmod(aggregation).failed == 0


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (Aggregation.COUNT, Dec(4)),
        (Aggregation.SUM, Dec("13.5")),
        (Aggregation.MAX, Dec(7)),
        (Aggregation.MIN, Dec("1.5")),
        (Aggregation.LATEST, Dec("1.5")),  # by timestamp, not arrival order
        (Aggregation.AVERAGE, Dec("4.5")),
    ],
)
def test_kinds(kind: Aggregation, expected: Dec) -> None:
    assert value(kind) == expected


def test_unique_count() -> None:
    spec = MeterSpec(Aggregation.UNIQUE_COUNT, value_property="user")
    assert aggregate(spec, EVENTS, START, END).total.value == Dec(3)


def test_periods_are_half_open() -> None:
    events = [Event(START, {"gb": Dec(1)}), Event(END, {"gb": Dec(100)})]
    assert value(Aggregation.SUM, events) == Dec(1)


def test_filters_and_groups() -> None:
    spec = MeterSpec(
        Aggregation.SUM,
        value_property="gb",
        filters=(PropertyFilter("region", ("eu",)),),
        group_by=("user",),
    )
    result = aggregate(spec, EVENTS, START, END)
    assert result.total.value == Dec("6.5")
    assert result.group("a").value == Dec("6.5")
    assert result.group("c").event_count == 1
    assert result.group("b").event_count == 0  # filtered out


def test_cumulative_meter_reads_earlier_periods() -> None:
    earlier = [*EVENTS, Event(START - timedelta(days=40), {"gb": Dec(100)})]
    assert value(Aggregation.SUM, earlier) == Dec("13.5")
    assert value(Aggregation.SUM, earlier, reset=MeterReset.NEVER) == Dec("113.5")


def test_stripe_last_ever_carries_into_an_empty_period() -> None:
    meter = stripe_meter("last_ever", "units")
    records = [Event(at(5), {"units": Dec(17)}), Event(at(25), {"units": Dec(18)})]
    feb = aggregate(meter, records, END, datetime(2024, 3, 1, tzinfo=UTC))
    assert (feb.total.value, feb.total.event_count) == (Dec(18), 2)
    during = stripe_meter("last_during_period", "units")
    assert aggregate(during, records, END, datetime(2024, 3, 1, tzinfo=UTC)).total.value == 0


def test_unknown_stripe_mode_is_an_error() -> None:
    with pytest.raises(RatecardError):
        stripe_meter("median", "units")


def test_weighted_sum_is_exact_and_carries_a_level() -> None:
    spec = MeterSpec(Aggregation.WEIGHTED_SUM, value_property="gb")
    events = [Event(at(1, 12), {"gb": Dec(2)})]
    half_day = Fraction(12 * 3600, 31 * 86400)
    result = aggregate(spec, events, START, END, initial_levels={(): Dec(1)})
    assert result.total.exact == 1 * half_day + 3 * (1 - half_day)


def test_weighted_sum_cumulative_uses_earlier_events_as_the_level() -> None:
    spec = MeterSpec(Aggregation.WEIGHTED_SUM, value_property="gb", reset=MeterReset.NEVER)
    events = [Event(START - timedelta(days=3), {"gb": Dec(4)})]
    assert aggregate(spec, events, START, END).total.exact == 4


def test_non_numeric_value_names_the_property() -> None:
    with pytest.raises(RatecardError) as info:
        value(Aggregation.SUM, [Event(at(2), {"gb": "lots"})])
    assert (info.value.code, info.value.field) == (ErrorCode.INVALID_VALUE, "properties.gb")


def test_invalid_period() -> None:
    with pytest.raises(RatecardError) as info:
        aggregate(MeterSpec(Aggregation.COUNT), [], END, START)
    assert info.value.code is ErrorCode.INVALID_PERIOD


amounts = st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False)
offsets = st.integers(min_value=0, max_value=31 * 86400 - 1)


@given(st.lists(st.tuples(offsets, amounts), max_size=12))
def test_weighted_sum_ignores_zero_length_segments(
    steps: list[tuple[int, Dec]],
) -> None:
    # A group that adds then removes the same amount at once leaves the weighted sum unchanged.
    spec = MeterSpec(Aggregation.WEIGHTED_SUM, value_property="v")
    base = [Event(START, {"v": Dec(10)})]
    noise = [
        e
        for offset, amount in steps
        for e in (
            Event(START + timedelta(seconds=offset), {"v": amount}),
            Event(START + timedelta(seconds=offset), {"v": -amount}),
        )
    ]
    assert aggregate(spec, base + noise, START, END).total.exact == 10


@given(st.lists(st.tuples(offsets, amounts), max_size=12))
def test_groups_partition_sums(steps: list[tuple[int, Dec]]) -> None:
    events = [
        Event(START + timedelta(seconds=o), {"v": a, "k": "x" if i % 2 else "y"})
        for i, (o, a) in enumerate(steps)
    ]
    spec = MeterSpec(Aggregation.SUM, value_property="v", group_by=("k",))
    result = aggregate(spec, events, START, END)
    assert sum((g.exact for _, g in result.groups), Fraction(0)) == result.total.exact


@given(st.one_of(st.integers(0, 10**30).map(str), st.text(max_size=12)))
def test_a_property_value_reads_as_d_reads_it(text):
    """The whole-number shortcut of `property_value` agrees with `D` on every text."""
    try:
        expected: Dec | None = D(text)
    except RatecardError:
        expected = None
    if expected is None:
        with pytest.raises(RatecardError):
            aggregation.property_value({"v": text}, "v")
    else:
        assert aggregation.property_value({"v": text}, "v") == expected
