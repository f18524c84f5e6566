"""Native event parsing and the CloudEvents, Segment and Lago adapters (pure)."""

from __future__ import annotations

import doctest
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

import ratecard.core.events as events
from ratecard.core.errors import Problem, ValidationFailed
from ratecard.core.events import format_instant, parse_batch, parse_event, parse_timestamp
from ratecard.web.formats import cloudevents, lago, segment

NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("module", [events, cloudevents, segment, lago])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2024-03-01T12:00:00Z", "2024-03-01T12:00:00+00:00"),
        ("2024-03-01t12:00:00.5-05:30", "2024-03-01T17:30:00.500000+00:00"),
        ("2024-03-01T12:00:00.123456789+00:00", "2024-03-01T12:00:00.123456+00:00"),
    ],
)
def test_rfc3339_is_normalized_to_utc(text, iso):
    assert parse_timestamp(text).isoformat() == iso


@given(
    st.datetimes(  # wall-clock times, read with each offset below
        min_value=datetime(1000, 1, 2),  # noqa: DTZ001
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    ),
    st.integers(0, 9),
    st.sampled_from(["T", "t"]),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-11:00"]),
    st.integers(0, 999_999_999),
)
def test_every_rfc3339_form_reads_as_its_utc_instant(naive, digits, sep, offset, nanos):
    """The shortcut for UTC text (read as it is) agrees with the general way (rebuilt, cut to
    microseconds, converted)."""
    fraction = f".{nanos:09d}"[: digits + 1] if digits else ""
    text = f"{naive:%Y-%m-%d}{sep}{naive:%H:%M:%S}{fraction}{offset}"
    micros = int((fraction[1:] + "000000")[:6]) if digits else 0
    local = datetime.fromisoformat(f"{naive:%Y-%m-%dT%H:%M:%S}.{micros:06d}")
    sign, hours, minutes = offset[0], offset[1:3], offset[4:6]
    shift = timedelta(hours=int(hours or 0), minutes=int(minutes or 0))
    expected = (local - shift if sign == "+" else local + shift).replace(tzinfo=UTC)
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    ["2024-03-01", "2024-03-01T12:00:00", "20240301T120000Z", "2024-03-01 12:00:00Z", "yesterday"],
)
def test_non_rfc3339_is_refused(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_numbers_never_pass_through_float():
    [raw] = parse_batch(
        b'{"id":"1","type":"m","customer":"c","properties":'
        b'{"a":0.1,"b":1e-7,"c":12345678901234567890123,"d":true}}'
    )
    event = parse_event(raw, NOW)
    assert event.properties == {
        "a": "0.1",
        "b": "0.0000001",
        "c": "12345678901234567890123",
        "d": "true",
    }
    with pytest.raises(ValidationFailed) as err:
        parse_event({"id": "1", "type": "m", "customer": "c", "properties": {"x": 0.5}}, NOW)
    assert err.value.problems[0].field == "properties.x"


def test_every_problem_of_an_event_at_once():
    with pytest.raises(ValidationFailed) as err:
        parse_event({"type": 5, "timestamp": "nope", "extra": 1}, NOW)
    assert {p.field for p in err.value.problems} == {"extra", "id", "type", "customer", "timestamp"}


def test_cloudevents_batch_and_bad_items():
    body = json.loads(
        json.dumps(
            [
                {
                    "specversion": "1.0",
                    "id": "a",
                    "source": "s",
                    "type": "m",
                    "subject": "c",
                    "data": {"n": "1"},
                },
                {"specversion": "0.3", "id": "b", "source": "s", "type": "m", "subject": "c"},
            ]
        ),
        parse_float=Decimal,
    )
    first, second = cloudevents.from_cloudevents(body)
    assert first == {"id": "a", "type": "m", "customer": "c", "properties": {"n": "1"}}
    assert isinstance(second, Problem) and second.field == "specversion"


def test_segment_batch_and_non_track_calls():
    out = segment.from_segment(
        {
            "batch": [
                {"type": "track", "event": "m", "anonymousId": "anon", "messageId": "x"},
                {"type": "identify", "userId": "u", "messageId": "y"},
            ]
        }
    )
    assert out[0] == {"id": "x", "type": "m", "customer": "anon"}
    assert isinstance(out[1], Problem) and out[1].field == "type"


def test_lago_timestamps_and_customers():
    out = lago.from_lago(
        {
            "events": [
                {
                    "transaction_id": "1",
                    "external_customer_id": "c",
                    "code": "m",
                    "timestamp": "1704067200.123456",
                },
                {
                    "transaction_id": "2",
                    "external_subscription_id": "s",
                    "code": "m",
                    "timestamp": Decimal("1704067200.5"),
                    "precise_total_amount_cents": "12.5",
                },
            ]
        }
    )
    assert out[0]["timestamp"] == "2024-01-01T00:00:00.123456Z" and out[0]["customer"] == "c"
    assert out[1]["subscription"] == "s"
    assert out[1]["properties"] == {"precise_total_amount_cents": "12.5"}
    with pytest.raises(ValidationFailed):
        lago.from_lago({"nope": 1})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"n": 1e400}', "a number with an exponent within \u00b1100"),
        (b'{"n": 1e-101}', "a number with an exponent within \u00b1100"),
        (b'{"s": "' + b"x" * 1001 + b'"}', "at most 1000 characters"),
        (b'{"nested": {"a": 1}}', "a string, number or boolean (nested values are not kept)"),
        (b'{"list": [1]}', "a string, number or boolean (nested values are not kept)"),
        (b'{"' + b"k" * 201 + b'": 1}', "a property's name is 1 to 200 characters"),
    ],
)
def test_a_refused_property_says_why(body, message):
    properties = events.parse_batch(
        b'{"id": "e", "type": "m", "customer": "c", "properties": ' + body + b"}"
    )
    with pytest.raises(ValidationFailed) as refused:
        parse_event(properties[0], NOW)
    (problem,) = refused.value.problems
    assert (problem.code, problem.message) == ("invalid_value", message)
    assert problem.field is not None and problem.field.startswith("properties.")


class _Instant(BaseModel):
    at: datetime


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_webhook_instants_are_written_as_the_rest_api_writes_them(at):
    written = format_instant(at)
    assert written == json.loads(_Instant(at=at.astimezone(UTC)).model_dump_json())["at"]
    assert written.endswith("Z")
    assert datetime.fromisoformat(written) == at


def test_a_whole_second_has_no_fraction_and_a_fraction_has_six_digits():
    assert format_instant(datetime(2024, 2, 1, tzinfo=UTC)) == "2024-02-01T00:00:00Z"
    assert format_instant(datetime(2024, 2, 1, 0, 0, 0, 250_000, tzinfo=UTC)) == (
        "2024-02-01T00:00:00.250000Z"
    )
