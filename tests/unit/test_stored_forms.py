"""The forms an event is stored in (`event_store.encode`), made once per event on the hot path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ratecard.adapters.db import event_ids, event_store
from ratecard.adapters.db.event_store import encode, hour_number, hour_start, stored_instant_text
from ratecard.adapters.db.types import sqlite_instant_text
from ratecard.core.events import parse_timestamp

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


@given(
    _INSTANTS,
    st.integers(0, 9),
    st.sampled_from(["T", "t"]),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30"]),
)
def test_the_stored_text_is_taken_from_the_timestamp_only_when_it_is_the_stored_form(
    at, digits, sep, offset
):
    """Whatever form the timestamp came in, the stored text is the instant's own."""
    fraction = f".{at.microsecond:06d}000"[: digits + 1] if digits else ""
    stamp = f"{at:%Y-%m-%d}{sep}{at:%H:%M:%S}{fraction}{offset}"
    try:
        parsed = parse_timestamp(stamp)
    except ValueError:  # years before 1000 are not RFC 3339 here
        return
    assert stored_instant_text(parsed, stamp) == sqlite_instant_text(parsed)
    assert encode(parsed, {}, stamp).occurred_text == sqlite_instant_text(parsed)


def test_the_stored_text_of_live_traffic_is_its_timestamp_as_sent():
    stamp = "2026-11-25T12:34:56.123456+00:00"
    at = parse_timestamp(stamp)
    assert stored_instant_text(at, stamp) is stamp  # no formatting at all
    assert stored_instant_text(at, None) == stamp
    assert stored_instant_text(at, 1732538096) == stamp  # a Lago number: formatted


@given(st.text(min_size=1, max_size=40), st.lists(st.text(min_size=1, max_size=60), max_size=20))
def test_the_id_hashes_of_a_batch_are_each_ids_own(tenant_id, ids):
    """The batch form (the scope hashed once) gives what `id_hash` gives for each id alone,
    the key stored rows were written under."""
    prefix = event_ids.scope_prefix(tenant_id, "live")
    assert event_ids.id_hashes(prefix, ids) == [
        event_ids.id_hash(tenant_id, "live", event_id) for event_id in ids
    ]


@given(_INSTANTS)
def test_the_stored_text_reads_back_as_its_instant(at):
    """`stored_instant` inverts `stored_instant_text`, years before 1000 included."""
    assert event_store.stored_instant(stored_instant_text(at)) == at


@given(_INSTANTS, st.lists(st.integers(0, 3_599_999_999), min_size=2, max_size=20))
def test_stored_texts_within_one_hour_sort_as_their_instants(at, offsets):
    """Ingestion compares the stored texts of one hourly key (`rollups.keyed_partials`)."""
    start = hour_start(hour_number(at))
    instants = [start + timedelta(microseconds=offset) for offset in offsets]
    texts = [stored_instant_text(instant) for instant in instants]
    assert sorted(range(len(texts)), key=texts.__getitem__) == sorted(
        range(len(instants)), key=instants.__getitem__
    )
