"""Meter rounding: the period's quantity (total and each group) rounded once, mode named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratecard.core.aggregation import (
    MAX_ROUNDING_PRECISION,
    Aggregation,
    Event,
    MeterRounding,
    MeterSpec,
    aggregate,
)
from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.core.money import RoundingMode
from ratecard.core.rollups import finish, hour_of, merge_groups, partials

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=6)
M = RoundingMode


@pytest.mark.parametrize(
    ("value", "mode", "precision", "expected"),
    [
        ("2.1", M.UP, 0, "3"),
        ("2.1", M.DOWN, 0, "2"),
        ("2.5", M.HALF_UP, 0, "3"),
        ("2.5", M.HALF_EVEN, 0, "2"),
        ("3.5", M.HALF_EVEN, 0, "4"),
        ("2.5", M.HALF_DOWN, 0, "2"),
        ("-2.5", M.HALF_UP, 0, "-3"),  # ties away from zero
        ("-2.1", M.UP, 0, "-3"),  # away from zero
        ("-2.1", M.CEILING, 0, "-2"),
        ("-2.1", M.FLOOR, 0, "-3"),
        ("1.005", M.HALF_UP, 2, "1.01"),
        ("1.005", M.HALF_EVEN, 2, "1"),
        ("0.0000001", M.UP, 6, "0.000001"),
        ("7", M.UP, 0, "7"),  # already whole: unchanged
        ("0", M.UP, 3, "0"),
    ],
)
def test_modes_and_precision(value: str, mode: RoundingMode, precision: int, expected: str) -> None:
    rounded = MeterRounding(mode, precision).round(Fraction(Decimal(value)))
    assert rounded == Fraction(Decimal(expected))


def test_fractions_round_exactly_without_an_intermediate_decimal() -> None:
    third = Fraction(1, 3)
    assert MeterRounding(M.UP, 2).round(third) == Fraction(34, 100)
    assert MeterRounding(M.DOWN, 2).round(2 * third) == Fraction(66, 100)
    assert MeterRounding(M.HALF_UP, 0).round(Fraction(1, 2)) == 1


@pytest.mark.parametrize("precision", [-1, MAX_ROUNDING_PRECISION + 1, True, "2"])
def test_precision_out_of_range_names_the_field(precision: object) -> None:
    with pytest.raises(RatecardError) as refused:
        MeterRounding(M.UP, precision)  # type: ignore[arg-type]
    (problem,) = refused.value.problems
    assert (problem.code, problem.field) == (ErrorCode.INVALID_VALUE, "rounding.precision")


def _at(minutes: int) -> datetime:
    return START + timedelta(minutes=minutes)


def test_total_and_each_group_round_from_their_own_exact_values() -> None:
    spec = MeterSpec(
        Aggregation.SUM,
        value_property="gb",
        group_by=("region",),
        rounding=MeterRounding(M.UP, 0),
    )
    events = [
        Event(_at(1), {"gb": Decimal("1.2"), "region": "eu"}),
        Event(_at(2), {"gb": Decimal("1.2"), "region": "us"}),
    ]
    result = aggregate(spec, events, START, END)
    assert (result.total.value, result.total.unrounded) == (Decimal(3), Fraction(12, 5))
    assert [(key, v.value, v.unrounded, v.event_count) for key, v in result.groups] == [
        (("eu",), Decimal(2), Fraction(6, 5), 1),
        (("us",), Decimal(2), Fraction(6, 5), 1),
    ]  # 2 + 2 is not 3: each group is rounded on its own
    assert result.group("asia").value == 0


def test_an_average_rounds_its_exact_fraction() -> None:
    spec = MeterSpec(Aggregation.AVERAGE, value_property="v", rounding=MeterRounding(M.HALF_UP, 2))
    events = [Event(_at(i), {"v": Decimal(v)}) for i, v in enumerate((1, 0, 0))]
    result = aggregate(spec, events, START, END)
    assert (result.total.value, result.total.unrounded) == (Decimal("0.33"), Fraction(1, 3))


def test_without_rounding_nothing_changes() -> None:
    spec = MeterSpec(Aggregation.SUM, value_property="v")
    result = aggregate(spec, [Event(_at(1), {"v": Decimal("1.25")})], START, END)
    assert (result.total.value, result.total.unrounded) == (Decimal("1.25"), None)


exact_values = st.fractions(
    min_value=Fraction(-(10**9)), max_value=Fraction(10**9), max_denominator=10**12
)
modes = st.sampled_from(list(RoundingMode))
precisions = st.integers(0, 8)


@given(exact_values, modes, precisions)
def test_rounding_is_close_has_the_places_and_is_idempotent(
    exact: Fraction, mode: RoundingMode, precision: int
) -> None:
    rounding = MeterRounding(mode, precision)
    rounded = rounding.round(exact)
    unit = Fraction(1, 10**precision)
    assert abs(rounded - exact) < unit
    assert (rounded / unit).denominator == 1  # at most `precision` decimal places
    assert rounding.round(rounded) == rounded
    if mode is RoundingMode.CEILING:
        assert rounded >= exact
    if mode is RoundingMode.FLOOR:
        assert rounded <= exact
    if mode is RoundingMode.UP:
        assert abs(rounded) >= abs(exact)
    if mode is RoundingMode.DOWN:
        assert abs(rounded) <= abs(exact)
    if mode in (RoundingMode.HALF_UP, RoundingMode.HALF_EVEN, RoundingMode.HALF_DOWN):
        assert abs(rounded - exact) <= unit / 2


events_st = st.lists(
    st.tuples(
        st.integers(0, 6 * 3600 - 1),
        st.decimals(-1000, 1000, places=3),
        st.sampled_from(["eu", "us"]),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(
    events_st,
    st.sampled_from(
        [a for a in Aggregation if a not in (Aggregation.UNIQUE_COUNT, Aggregation.WEIGHTED_SUM)]
    ),
    modes,
    st.integers(0, 3),
)
def test_rollups_round_exactly_as_aggregate_does(
    raw: list[tuple[int, Decimal, str]], kind: Aggregation, mode: RoundingMode, precision: int
) -> None:
    rounding = MeterRounding(mode, precision)
    spec = MeterSpec(
        kind,
        value_property=None if kind is Aggregation.COUNT else "v",
        group_by=("region",),
        rounding=rounding,
    )
    events = [
        (Event(START + timedelta(seconds=s), {"v": v, "region": r}), seq)
        for seq, (s, v, r) in enumerate(raw)
    ]
    by_hour: dict[datetime, list[tuple[Event, int]]] = {}
    for event, seq in events:
        by_hour.setdefault(hour_of(event.timestamp), []).append((event, seq))
    rolled = finish(spec, merge_groups(partials(spec, bucket) for bucket in by_hour.values()))
    direct = aggregate(spec, [e for e, _ in events], START, END)
    assert rolled == direct
    unrounded = aggregate(
        MeterSpec(kind, spec.value_property, group_by=("region",)),
        [e for e, _ in events],
        START,
        END,
    )
    assert direct.total.unrounded == unrounded.total.exact
    assert direct.total.exact == rounding.round(unrounded.total.exact)
    for (key, value), (same_key, raw_value) in zip(direct.groups, unrounded.groups, strict=True):
        assert key == same_key
        assert value.exact == rounding.round(raw_value.exact)
