"""An event's row: the values `batches.Columns` holds for it, made where a batch is validated.

`event_row` reads any one event: it validates it (`core.events.parse_event`, every problem
named) and makes its stored forms (`event_store.encode`). That is a dozen calls per event: a
named tuple for the event, another for its stored forms, a call per text field checked, one per
stored form. At 50,000 events a second each call shows. `valid_rows` does the same work for the
events that live traffic sends (every field of plain type, the timestamp UTC as RFC 3339 with at
most microseconds, or absent) in one loop, without those calls, and gives a row per such event.
Any other event (a problem to name, a timestamp with an offset, a property that is not plain)
gets None, and `event_row` reads it. For every event it takes, `valid_rows` makes exactly the
row `event_row` makes (`tests/unit/test_event_rows.py` checks that with hypothesis).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import orjson

from ratecard.adapters.db.event_store import encode, hour_number, stored_instant_text
from ratecard.core.events import (
    FIELDS,
    MAX_ID,
    MAX_METER,
    UTC_AS_IS,
    parse_event,
    plain_properties,
)

# (index, id, meter, customer or subscription, by subscription, stored instant, hour,
#  properties, properties as stored JSON): the fields of `batches.Columns`, in its order
Row = tuple[int, str, str, str, bool, str, int, dict[str, str], str]

_SORT_KEYS = orjson.OPT_SORT_KEYS


def valid_rows(items: Sequence[Any], received_at: datetime) -> list[Row | None]:
    """A row per item of `items` that is a plain valid event; None for each other item."""
    rows: list[Row | None] = []
    append = rows.append
    fields = FIELDS.issuperset
    read_instant = datetime.fromisoformat
    received = (stored_instant_text(received_at), hour_number(received_at))
    for index, raw in enumerate(items):
        if type(raw) is not dict or not fields(raw):
            append(None)
            continue
        get = raw.get
        event_id, meter = get("id"), get("type")
        ref, subscription = get("customer"), get("subscription")
        by_subscription = ref is None
        if by_subscription:
            ref = subscription
        elif subscription is not None and not (
            type(subscription) is str
            and 0 < len(subscription) <= MAX_ID
            and subscription.isprintable()
        ):
            append(None)
            continue
        if not (
            type(event_id) is str
            and 0 < len(event_id) <= MAX_ID
            and event_id.isprintable()
            and type(meter) is str
            and 0 < len(meter) <= MAX_METER
            and meter.isprintable()
            and type(ref) is str
            and 0 < len(ref) <= MAX_ID
            and ref.isprintable()
        ):
            append(None)
            continue
        stamp = get("timestamp")
        if stamp is None:
            occurred, hour = received
        elif type(stamp) is str and UTC_AS_IS(stamp) is not None:
            try:
                at = read_instant(stamp)
            except ValueError:  # e.g. the 30th of February: a problem to name
                append(None)
                continue
            occurred, hour = stored_instant_text(at, stamp), hour_number(at)
        else:
            append(None)
            continue
        properties = plain_properties(get("properties"))
        if properties is None:
            append(None)
            continue
        try:
            stored = orjson.dumps(properties, option=_SORT_KEYS).decode()
        except orjson.JSONEncodeError:  # a lone surrogate: the thorough path encodes it
            append(None)
            continue
        append((index, event_id, meter, ref, by_subscription, occurred, hour, properties, stored))
    return rows


def event_row(index: int, raw: Any, received_at: datetime) -> Row:
    """The row of any one event; `ValidationFailed` with every problem it has."""
    event = parse_event(raw, received_at)
    stamp = raw.get("timestamp") if type(raw) is dict else None
    stored = encode(event.occurred_at, event.properties, stamp)
    customer = event.customer_ref
    return (
        index,
        event.event_id,
        event.meter_code,
        customer if customer is not None else cast(str, event.subscription_ref),
        customer is None,
        stored.occurred_text,
        stored.occurred_hour,
        event.properties,
        stored.properties_json,
    )
