"""Rollups merge into exactly what `aggregate()` computes from the raw events."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

import ratecard.core.rollups as rollups
from ratecard.core.aggregation import (
    Aggregation,
    Event,
    MeterReset,
    MeterSpec,
    PropertyFilter,
    aggregate,
)
from ratecard.core.rollups import decomposable, finish, hour_of, merge_groups, partials

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=6)

events_st = st.lists(
    st.tuples(
        st.integers(0, 6 * 3600 - 1),
        st.one_of(st.none(), st.decimals(-1000, 1000, places=3).map(str)),
        st.sampled_from(["eu", "us", None]),
    ),
    max_size=40,
)


def test_doctest():
    assert doctest.testmod(rollups).failed == 0


@settings(max_examples=60, deadline=None)
@given(
    events_st,
    st.sampled_from(
        [a for a in Aggregation if a not in (Aggregation.UNIQUE_COUNT, Aggregation.WEIGHTED_SUM)]
    ),
    st.booleans(),
    st.booleans(),
)
def test_hourly_partials_merge_to_the_exact_aggregate(raw, kind, grouped, filtered):
    spec = MeterSpec(
        kind,
        value_property=None if kind is Aggregation.COUNT else "v",
        group_by=("region",) if grouped else (),
        filters=(PropertyFilter("region", ("eu", "us")),) if filtered else (),
    )
    events = []
    for seconds, value, region in raw:
        props: dict[str, str | Decimal] = {}
        if value is not None:
            props["v"] = value
        if region is not None:
            props["region"] = region
        events.append(Event(START + timedelta(seconds=seconds), props))
    by_hour: dict[datetime, list[tuple[Event, int]]] = {}
    for seq, event in enumerate(events):
        by_hour.setdefault(hour_of(event.timestamp), []).append((event, seq))
    # hours arrive in any order; merging is associative and commutative
    merged = merge_groups(partials(spec, hour) for hour in reversed(list(by_hour.values())))
    ordered = sorted(events, key=lambda e: e.timestamp)
    seqs = {id(e): i for i, e in enumerate(events)}
    ordered = sorted(events, key=lambda e: (e.timestamp, seqs[id(e)]))
    assert finish(spec, merged) == aggregate(spec, ordered, START, END)


def test_unique_count_and_weighted_sum_do_not_roll_up():
    assert not decomposable(MeterSpec(Aggregation.UNIQUE_COUNT, value_property="u"))
    assert not decomposable(MeterSpec(Aggregation.WEIGHTED_SUM, value_property="u"))
    assert decomposable(MeterSpec(Aggregation.LATEST, "v", reset=MeterReset.NEVER))
