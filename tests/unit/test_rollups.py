"""Rollups merge into exactly what `aggregate()` computes from the raw events."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

import ratecard.core.rollups as rollups
from ratecard.adapters.db.event_store import stored_instant, stored_instant_text
from ratecard.core.aggregation import (
    Aggregation,
    Event,
    MeterReset,
    MeterSpec,
    PropertyFilter,
    aggregate,
    group_key,
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


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # the caller's key (e.g. customer and hour)
            st.integers(0, 5),  # few instants: ties in time are common
            st.one_of(st.none(), st.sampled_from(["2", "2.0", "-1.50", "7", "0.001", "1E+1"])),
            st.sampled_from(["eu", "us", None]),
        ),
        max_size=40,
    ),
    st.sampled_from(list(Aggregation)),
    st.booleans(),
    st.booleans(),
)
def test_keyed_partials_fold_exactly_as_merging_one_event_partials(raw, kind, grouped, filtered):
    """The hot-path fold gives the very partials (values and their representation) that
    merging each event's own partial left to right does."""
    spec = MeterSpec(
        kind,
        value_property=None if kind is Aggregation.COUNT else "v",
        group_by=("region",) if grouped else (),
        filters=(PropertyFilter("region", ("eu", "us")),) if filtered else (),
    )
    rows = []
    for seq, (key, seconds, value, region) in enumerate(raw):
        props: dict[str, str | Decimal] = {}
        if value is not None:
            props["v"] = value
        if region is not None:
            props["region"] = region
        rows.append((key, START + timedelta(seconds=seconds), props, seq))
    expected: dict[tuple[int, tuple[str | None, ...]], rollups.Partial] = {}
    for key, at, props, seq in rows:
        event = Event(at, props)
        if not all(f.matches(event) for f in spec.filters):
            continue
        cell = (key, group_key(spec, event))
        one = rollups.partial_of_event(spec, event, seq)
        expected[cell] = one if cell not in expected else expected[cell].merge(one)
    got = rollups.keyed_partials(spec, rows)
    assert got == expected
    # ingestion passes the stored instant texts of each hourly key, read back at the end
    texts = [(key, stored_instant_text(at), props, seq) for key, at, props, seq in rows]
    assert rollups.keyed_partials(spec, texts, stored_instant) == expected
    for cell, partial in got.items():  # the same Decimal representations, not only values
        assert str(partial.value_sum) == str(expected[cell].value_sum)
        assert str(partial.value_min) == str(expected[cell].value_min)
        assert str(partial.value_max) == str(expected[cell].value_max)
        assert str(partial.latest_value) == str(expected[cell].latest_value)
