"""The Segment HTTP tracking API (``track`` and ``batch``) into native events.

    >>> [event] = from_segment({"type": "track", "event": "api_calls", "userId": "acme",
    ...     "messageId": "m1", "timestamp": "2024-01-01T00:00:00.000+00:00",
    ...     "properties": {"tokens": 5}})
    >>> event["id"], event["type"], event["customer"]
    ('m1', 'api_calls', 'acme')

Only ``track`` calls carry usage; other calls in a batch (identify, page...) are rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.core.events import batch_items

FIELD_NAMES = {"id": "messageId", "type": "event", "customer": "userId"}


def from_track(item: Any) -> dict[str, Any] | Problem:
    if not isinstance(item, Mapping):
        return Problem(ErrorCode.INVALID_TYPE, "a call is an object")
    if item.get("type", "track") != "track":
        return Problem(ErrorCode.INVALID_VALUE, "only track calls carry usage", "type")
    native: dict[str, Any] = {
        "id": item.get("messageId"),
        "type": item.get("event"),
        "customer": item.get("userId") or item.get("anonymousId"),
    }
    if item.get("timestamp") is not None:
        native["timestamp"] = item["timestamp"]
    if item.get("properties") is not None:
        native["properties"] = item["properties"]
    return native


def from_segment(body: Any) -> list[dict[str, Any] | Problem]:
    """A single track call, or ``{"batch": [...]}``."""
    if isinstance(body, Mapping) and "batch" in body:
        return [from_track(item) for item in batch_items(body["batch"])]
    if isinstance(body, Mapping):
        return [from_track(body)]
    raise ValidationFailed([Problem(ErrorCode.MALFORMED_BODY, "expected a track call or a batch")])
