"""The forms an event is stored in (`event_store.encode`), made once per event on the hot path."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from ratecard.adapters.db.event_store import encode, hour_number, hour_start
from ratecard.adapters.db.types import sqlite_instant_text

# hypothesis takes naive bounds and attaches the zone itself
_INSTANTS = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(_INSTANTS)
def test_the_hour_start_is_the_instant_with_minutes_seconds_and_microseconds_cleared(at):
    start = hour_start(hour_number(at))
    assert start == at.replace(minute=0, second=0, microsecond=0)
    assert start.tzinfo is UTC
    assert hour_number(start) == hour_number(at)


@given(_INSTANTS)
def test_encode_gives_the_stored_text_the_hour_and_its_start(at):
    encoded = encode(at, {"b": "2", "a": "1"})
    assert encoded.occurred_text == sqlite_instant_text(at)
    assert encoded.occurred_hour == hour_number(at)
    assert encoded.hour_at == at.replace(minute=0, second=0, microsecond=0)
    assert encoded.properties_json == '{"a":"1","b":"2"}'
