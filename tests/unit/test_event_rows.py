"""An event's row (`event_rows`): the one-loop common case makes exactly the thorough path's row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ratecard.core.errors import ValidationFailed
from ratecard.services.metering.event_rows import event_row, valid_rows

NOW = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)

# around each limit: ids 255, meter codes 100, property names 200, property texts 1,000
_LONG = st.sampled_from(
    [c * n for c in "x\u00e9" for n in (100, 101, 200, 201, 255, 256, 1000, 1001)]
)
_TEXT = st.one_of(
    st.text(max_size=6),
    _LONG,
    st.sampled_from(["c1", "evt_1", "tokens", "a\nb", "\u00e9t\u00e9", "\ud800", ""]),
)
_INSTANTS = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@st.composite
def _stamps(draw: st.DrawFn) -> object:
    at = draw(_INSTANTS)
    digits = draw(st.integers(0, 9))
    fraction = f".{at.microsecond:06d}000"[: digits + 1] if digits else ""
    offset = draw(st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", ""]))
    sep = draw(st.sampled_from(["T", "t", " "]))
    return draw(
        st.one_of(
            st.just(f"{at:%Y-%m-%d}{sep}{at:%H:%M:%S}{fraction}{offset}"),
            st.just(at.isoformat()),
            st.sampled_from(["2024-02-30T10:00:00Z", "2024-03-01T25:00:00Z", "yesterday", 17]),
        )
    )


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("1E+999"), Decimal("0.000125"), Decimal("-0")]),
    _TEXT,
    st.floats(),
    st.lists(st.integers(), max_size=2),
)
_NAMES = st.one_of(st.text(max_size=4), _LONG, st.integers())
_MANY = {f"p{n}": n for n in range(101)}  # one property more than allowed


_PLAIN = st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1, max_size=8)
_VALID_STAMPS = st.builds(
    lambda at, digits, zone: at.isoformat(timespec=digits).replace("+00:00", zone),
    _INSTANTS.filter(lambda at: at.year >= 1000),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
    st.sampled_from(["+00:00", "Z"]),
)


@st.composite
def _events(draw: st.DrawFn) -> object:
    """Mostly valid events of the common case, each field now and then anything at all."""
    plain = {
        "id": _PLAIN,
        "type": _PLAIN,
        "customer": _PLAIN,
        "subscription": st.one_of(st.none(), _PLAIN),
        "timestamp": st.one_of(st.none(), _VALID_STAMPS),
        "properties": st.one_of(
            st.none(), st.dictionaries(_PLAIN, st.one_of(_PLAIN, st.integers()), max_size=3)
        ),
    }
    wild = {
        "id": _TEXT,
        "type": _TEXT,
        "customer": st.one_of(st.none(), _TEXT, st.integers()),
        "subscription": st.one_of(st.none(), _TEXT),
        "timestamp": st.one_of(st.none(), _stamps()),
        "properties": st.one_of(
            st.none(),
            st.dictionaries(_NAMES, _VALUES, max_size=4),
            st.sampled_from([_MANY, dict(list(_MANY.items())[:100])]),
            st.lists(st.integers(), max_size=2),
        ),
    }
    event = {}
    for name, values in plain.items():
        if draw(st.integers(0, 9)) == 0:  # now and then absent, or anything
            if draw(st.booleans()):
                event[name] = draw(wild[name])
        else:
            event[name] = draw(values)
    if draw(st.integers(0, 19)) == 0:
        event["colour"] = "red"  # an unknown field
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([None, [], "event", 3]))  # not an event at all
    return event


def _thorough(index: int, raw: object) -> object:
    try:
        return event_row(index, raw, NOW)
    except ValidationFailed as failed:
        return failed.problems


@given(st.lists(_events(), max_size=3))
@example([{"id": "e1", "type": "calls", "customer": "c1"}])
@example([{"id": "e", "type": "t" * n, "customer": "c"} for n in (100, 101)])
@example([{"id": "e" * n, "type": "t", "customer": "c"} for n in (255, 256)])
@example([{"id": "e", "type": "t", "customer": "c" * n} for n in (255, 256)])
@example([{"id": "e", "type": "t", "subscription": "s" * n} for n in (255, 256)])
@example([{"id": "e", "type": "t", "customer": "c", "subscription": "s" * 256}])
@example(
    [{"id": "e", "type": "t", "customer": "c", "properties": {"p" * n: 1}} for n in (200, 201)]
)
@example(
    [{"id": "e", "type": "t", "customer": "c", "properties": {"p": "v" * n}} for n in (1000, 1001)]
)
@example(
    [
        {"id": "e", "type": "t", "customer": "c", "properties": dict(list(_MANY.items())[:n])}
        for n in (100, 101)
    ]
)
@example([{"id": "e1", "type": "t", "customer": "c", "timestamp": "2024-02-30T10:00:00Z"}])
@example([{"id": "e1", "type": "t", "customer": "c", "properties": {"a": "\ud800"}}])
def test_a_row_of_the_common_case_is_the_thorough_row(items):
    for index, (raw, fast) in enumerate(zip(items, valid_rows(items, NOW), strict=True)):
        if fast is not None:
            assert fast == _thorough(index, raw)


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-03-01T11:59:58.125000+00:00",  # as Ratecard stores it
        "2024-03-01T11:59:58.125Z",  # as Segment's libraries send it
        "2024-03-01T11:59:58Z",
        None,  # the time of receipt
    ],
)
def test_live_traffic_takes_the_common_case(stamp):
    """The forms that clients send most read in the one loop (the thorough path costs twice)."""
    raw = {
        "id": "evt_1",
        "type": "tokens",
        "customer": "c1",
        "properties": {"tokens": 1250, "model": "gpt", "ok": True, "cost": Decimal("0.5")},
    }
    if stamp is not None:
        raw["timestamp"] = stamp
    (row,) = valid_rows([raw], NOW)
    assert row is not None
    assert row == event_row(0, raw, NOW)
    assert row[7] == {"tokens": "1250", "model": "gpt", "ok": "true", "cost": "0.5"}
    assert row[8] == '{"cost":"0.5","model":"gpt","ok":"true","tokens":"1250"}'
    at = NOW if stamp is None else datetime(2024, 3, 1, 11, 59, 58, 125000 * ("." in stamp), UTC)
    assert row[5] == at.isoformat(timespec="microseconds")
    assert row[6] == (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(hours=1)


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "e", "type": "t", "customer": "c", "timestamp": "2024-03-01T12:59:58+01:00"},
        {"id": "e", "type": "t", "customer": "c", "timestamp": "2024-02-30T10:00:00Z"},
        {"id": "e", "type": "t", "customer": "c", "properties": {"a": 1.5}},
        {"id": "e", "type": "t"},
        {"id": "e", "type": "t", "customer": "c", "colour": "red"},
    ],
)
def test_anything_else_is_left_to_the_thorough_path(raw):
    assert valid_rows([raw], NOW) == [None]
