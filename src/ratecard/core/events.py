"""Usage events in their native shape: validated one by one, every problem named by its field.

The native shape (what `POST /v1/events` takes, and what the CloudEvents, Segment and Lago
adapters in `web/formats/` produce)::

    {"id": "evt_01", "type": "api_calls", "customer": "acme-42",
     "timestamp": "2024-03-01T12:00:00.250+01:00",
     "properties": {"tokens": 1250, "model": "gpt-x", "cost": "0.000125"}}

    >>> from datetime import UTC, datetime
    >>> now = datetime(2024, 3, 1, 12, tzinfo=UTC)
    >>> event = parse_event({"id": "evt_01", "type": "api_calls", "customer": "acme-42",
    ...                      "timestamp": "2024-03-01T12:00:00.25+01:00",
    ...                      "properties": {"tokens": 1250}}, now)
    >>> event.occurred_at.isoformat(), event.properties
    ('2024-03-01T11:00:00.250000+00:00', {'tokens': '1250'})

- `type` names the meter (its code); `customer` is the customer's external id, or give
  `subscription` (a subscription id) instead;
- `timestamp` is RFC 3339 with an offset (normalized to UTC; digits beyond microseconds are cut);
  absent, it is the time of receipt;
- property values are kept as text: numbers (parsed as `Decimal` by the caller, never float)
  as their exact decimal text, booleans as ``true``/``false``; nulls are dropped and nested
  values are refused.

`parse_event` raises `ValidationFailed` with every problem of the event at once; `parse_batch`
reads a request body (one event or a list of at most 10,000) exactly, or refuses all of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeGuard

from ratecard.core.errors import ErrorCode, Problem, ValidationFailed

MAX_BATCH = 10_000
MAX_ID = 255
MAX_METER = 100  # a meter code (`type`)
MAX_PROPERTIES = 100
MAX_TEXT = 1000
MAX_EXPONENT = 100  # a number property lies within 1e-100 .. 1e100 (magnitude)
FIELDS = frozenset({"id", "type", "customer", "subscription", "timestamp", "properties"})
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
# UTC with at most microseconds, as live traffic sends it: `datetime.fromisoformat` reads it as is
UTC_AS_IS = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|\+00:00)"
).fullmatch


class IncomingEvent(NamedTuple):
    """A valid event, before the store has looked at its customer, meter and id.

    ``occurred_at`` is aware UTC; at least one of ``customer_ref`` and ``subscription_ref`` is
    set (`parse_event` makes sure). A named tuple: one is made per event on the hot path.
    """

    event_id: str
    meter_code: str
    customer_ref: str | None
    subscription_ref: str | None
    occurred_at: datetime
    properties: dict[str, str]


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 instant in aware UTC; ValueError for anything else."""
    if UTC_AS_IS(text) is not None:
        return datetime.fromisoformat(text)
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError("not an RFC 3339 timestamp with an offset")
    day, clock, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]  # microseconds: '.' and six digits
    if offset in ("Z", "z", "+00:00"):  # already UTC: no conversion
        return datetime.fromisoformat(f"{day}T{clock}{fraction}").replace(tzinfo=UTC)
    return datetime.fromisoformat(f"{day}T{clock}{fraction}{offset}").astimezone(UTC)


def format_timestamp(at: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. ``2024-03-01T11:00:00.250000Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_instant(at: datetime) -> str:
    """An aware instant in UTC as the REST API writes a UTC instant (pydantic's form): ``Z``,
    and a fraction only when there is one, e.g. ``2024-03-01T00:00:00Z``,
    ``2024-03-01T11:00:00.250000Z``. Webhook payloads write their instants so too."""
    assert at.tzinfo is not None, "an aware instant (clock.py)"
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def decimal_text(value: Decimal) -> str:
    """The exact decimal text of a number (never exponent notation)."""
    return format(value, "f")


def _text(value: Any, field: str, problems: list[Problem], *, limit: int = MAX_ID) -> str | None:
    if not isinstance(value, str):
        problems.append(Problem(ErrorCode.INVALID_TYPE, "must be a string", field))
        return None
    if not 0 < len(value) <= limit or not value.isprintable():
        problems.append(Problem(ErrorCode.INVALID_VALUE, f"1-{limit} printable characters", field))
        return None
    return value


def property_text(value: Any) -> str | None:
    """A property value as stored text; None when it cannot be one."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        # a bounded exponent: ``1e999999999`` would otherwise print as a billion digits
        if not value.is_finite() or not -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT:
            return None
        return decimal_text(value)
    return None


def _properties(raw: Any, problems: list[Problem]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(Problem(ErrorCode.INVALID_TYPE, "must be an object", "properties"))
        return {}
    if len(raw) > MAX_PROPERTIES:
        problems.append(
            Problem(ErrorCode.INVALID_VALUE, f"at most {MAX_PROPERTIES} properties", "properties")
        )
        return {}
    out: dict[str, str] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if isinstance(value, float):
            problems.append(
                Problem(ErrorCode.FLOAT_NOT_ALLOWED, "parsed as float", f"properties.{name}")
            )
            continue
        text = property_text(value)
        if text is None or not isinstance(name, str) or not 0 < len(name) <= 200:
            problems.append(
                Problem(
                    ErrorCode.INVALID_VALUE, _property_refusal(name, value), f"properties.{name}"
                )
            )
            continue
        out[name] = text
    return out


def _property_refusal(name: Any, value: Any) -> str:
    """Why a property cannot be kept, as precisely as its value says."""
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        return "a property's name is 1 to 200 characters"
    if isinstance(value, str):
        return f"at most {MAX_TEXT} characters"
    if isinstance(value, Decimal):
        if not value.is_finite():
            return "a finite number"
        return f"a number with an exponent within ±{MAX_EXPONENT}"
    return "a string, number or boolean (nested values are not kept)"


def _short_text(value: Any, limit: int) -> TypeGuard[str]:
    return type(value) is str and 0 < len(value) <= limit and value.isprintable()


def plain_properties(raw: Any) -> dict[str, str] | None:
    """`_properties` of a map with nothing to complain about; None when there is (or may be)."""
    if raw is None:
        return {}
    if type(raw) is not dict or len(raw) > MAX_PROPERTIES:
        return None
    out: dict[str, str] = {}
    for name, value in raw.items():
        if type(name) is not str or not 0 < len(name) <= 200:
            return None
        kind = type(value)
        if kind is str:
            if len(value) > MAX_TEXT:
                return None
            out[name] = value
        elif kind is int:
            out[name] = str(value)
        elif value is None:
            continue
        elif kind is bool or kind is Decimal:
            text = property_text(value)
            if text is None:
                return None
            out[name] = text
        else:
            return None
    return out


def _parse_fast(raw: Any, received_at: datetime) -> IncomingEvent | None:
    """The common case: a valid event of plain types. None sends it the slow, thorough way,
    which names every problem (and gives the same event when there is none)."""
    if type(raw) is not dict or not FIELDS.issuperset(raw):
        return None
    event_id, meter = raw.get("id"), raw.get("type")
    customer, subscription = raw.get("customer"), raw.get("subscription")
    if not _short_text(event_id, MAX_ID) or not _short_text(meter, MAX_METER):
        return None
    if customer is None:
        if not _short_text(subscription, MAX_ID):
            return None
    elif not _short_text(customer, MAX_ID) or (
        subscription is not None and not _short_text(subscription, MAX_ID)
    ):
        return None
    stamp = raw.get("timestamp")
    occurred_at = received_at
    if stamp is not None:
        if type(stamp) is not str:
            return None
        try:
            occurred_at = parse_timestamp(stamp)
        except ValueError:
            return None
    properties = plain_properties(raw.get("properties"))
    if properties is None:
        return None
    return IncomingEvent(event_id, meter, customer, subscription, occurred_at, properties)


def parse_event(raw: Any, received_at: datetime) -> IncomingEvent:
    """Validate one native event; every problem at once in `ValidationFailed`."""
    fast = _parse_fast(raw, received_at)
    if fast is not None:
        return fast
    if not isinstance(raw, Mapping):
        raise ValidationFailed([Problem(ErrorCode.INVALID_TYPE, "an event is an object")])
    problems: list[Problem] = []
    for name in raw:
        if name not in FIELDS:
            problems.append(Problem(ErrorCode.UNKNOWN_FIELD, "unknown field", str(name)))
    event_id = meter = customer = subscription = None
    for name in ("id", "type"):
        if raw.get(name) is None:
            problems.append(Problem(ErrorCode.MISSING_FIELD, "required", name))
    if raw.get("id") is not None:
        event_id = _text(raw["id"], "id", problems)
    if raw.get("type") is not None:
        meter = _text(raw["type"], "type", problems, limit=MAX_METER)
    if raw.get("customer") is not None:
        customer = _text(raw["customer"], "customer", problems)
    if raw.get("subscription") is not None:
        subscription = _text(raw["subscription"], "subscription", problems)
    if raw.get("customer") is None and raw.get("subscription") is None:
        problems.append(Problem(ErrorCode.MISSING_FIELD, "customer or subscription", "customer"))
    occurred_at = received_at
    stamp = raw.get("timestamp")
    if stamp is not None:
        try:
            if not isinstance(stamp, str):
                raise ValueError("must be an RFC 3339 string")
            occurred_at = parse_timestamp(stamp)
        except ValueError as exc:
            problems.append(Problem(ErrorCode.INVALID_VALUE, str(exc), "timestamp"))
    properties = _properties(raw.get("properties"), problems)
    if problems:
        raise ValidationFailed(problems)
    assert event_id is not None and meter is not None
    return IncomingEvent(event_id, meter, customer, subscription, occurred_at, properties)


def refuse_constant(name: str) -> Any:
    """``parse_constant`` for `json.loads`: ``NaN`` and ``Infinity`` are not numbers here."""
    raise ValueError(f"{name} is not a number")


def parse_batch(body: bytes | str) -> list[Any]:
    """The events of a body: one object or a list of them. Numbers are parsed as Decimal.

    A body that is not JSON, not an object or a list, or holds more than `MAX_BATCH` events
    raises `ValidationFailed`: nothing of it is written.
    """
    try:
        data = json.loads(body, parse_float=Decimal, parse_constant=refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            [Problem(ErrorCode.MALFORMED_BODY, f"not valid JSON: {exc}")]
        ) from None
    return batch_items(data)


def batch_items(data: Any) -> list[Any]:
    """One event object or a list of them, at most `MAX_BATCH`."""
    if isinstance(data, Mapping):
        return [data]
    if not isinstance(data, list):
        raise ValidationFailed(
            [Problem(ErrorCode.MALFORMED_BODY, "expected an event object or a list of them")]
        )
    if not data:
        raise ValidationFailed([Problem(ErrorCode.MALFORMED_BODY, "the batch is empty")])
    if len(data) > MAX_BATCH:
        raise ValidationFailed(
            [Problem(ErrorCode.BATCH_TOO_LARGE, f"at most {MAX_BATCH} events per batch")]
        )
    return data
