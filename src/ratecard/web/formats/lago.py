"""Lago's event API (``{"event": {...}}`` and ``{"events": [...]}``) into native events.

    >>> [event] = from_lago({"event": {"transaction_id": "t1", "external_subscription_id": "s1",
    ...     "code": "api_calls", "timestamp": 1704067200, "properties": {"tokens": "5"}}})
    >>> event["id"], event["subscription"], event["timestamp"]
    ('t1', 's1', '2024-01-01T00:00:00.000000Z')

Lago timestamps are Unix seconds, integers or decimal strings/numbers with a fraction (read
exactly, to the microsecond); RFC 3339 strings are passed through.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.core.events import MAX_BATCH, format_timestamp

FIELD_NAMES = {
    "id": "transaction_id",
    "type": "code",
    "customer": "external_customer_id",
    "subscription": "external_subscription_id",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SECONDS = 253_402_300_799  # the last second of 9999


def lago_timestamp(value: Any) -> Any:
    """Unix seconds (int, Decimal or numeric text) as RFC 3339; anything else unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = Decimal(value)
        except InvalidOperation:
            return value
    if isinstance(value, int | Decimal) and Decimal(value).is_finite():
        if not 0 <= value < _MAX_SECONDS:
            return value  # not a time we can represent: refused as not a timestamp
        micros = int(Decimal(value).scaleb(6).to_integral_value())
        return format_timestamp(_EPOCH + timedelta(microseconds=micros))
    return value


def from_lago_event(item: Any) -> dict[str, Any] | Problem:
    if not isinstance(item, Mapping):
        return Problem(ErrorCode.INVALID_TYPE, "an event is an object")
    native: dict[str, Any] = {"id": item.get("transaction_id"), "type": item.get("code")}
    if item.get("external_customer_id") is not None:
        native["customer"] = item["external_customer_id"]
    elif item.get("external_subscription_id") is not None:
        native["subscription"] = item["external_subscription_id"]
    if item.get("timestamp") is not None:
        native["timestamp"] = lago_timestamp(item["timestamp"])
    properties = dict(item.get("properties") or {})
    if item.get("precise_total_amount_cents") is not None:
        properties["precise_total_amount_cents"] = item["precise_total_amount_cents"]
    if properties:
        native["properties"] = properties
    return native


def from_lago(body: Any) -> list[dict[str, Any] | Problem]:
    if isinstance(body, Mapping) and isinstance(body.get("event"), Mapping):
        return [from_lago_event(body["event"])]
    if isinstance(body, Mapping) and isinstance(body.get("events"), list):
        events = body["events"]
        if not events:  # as the native and Segment batches answer it
            raise ValidationFailed(
                [Problem(ErrorCode.MALFORMED_BODY, "the batch is empty", "events")]
            )
        if len(events) > MAX_BATCH:
            raise ValidationFailed(
                [Problem(ErrorCode.BATCH_TOO_LARGE, f"at most {MAX_BATCH} events", "events")]
            )
        return [from_lago_event(item) for item in events]
    raise ValidationFailed(
        [Problem(ErrorCode.MALFORMED_BODY, "expected {'event': {...}} or {'events': [...]}")]
    )
