"""CloudEvents 1.0 (structured JSON, single or batch) into native events.

>>> [event] = from_cloudevents({"specversion": "1.0", "id": "e1", "source": "svc",
...     "type": "api_calls", "subject": "acme", "time": "2024-01-01T00:00:00Z",
...     "data": {"tokens": 5}})
>>> event["type"], event["customer"], event["timestamp"], event["properties"]
('api_calls', 'acme', '2024-01-01T00:00:00Z', {'tokens': 5})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ratecard.core.errors import ErrorCode, Problem
from ratecard.core.events import batch_items

FIELD_NAMES = {"customer": "subject", "timestamp": "time", "properties": "data"}
#: The same fields as binary mode carries them: attributes in ``ce-*`` headers, data as body.
BINARY_FIELD_NAMES = {
    name: f"header.ce-{FIELD_NAMES.get(name, name)}"
    for name in ("id", "type", "customer", "timestamp", "specversion", "source")
} | {"properties": "body"}
_KNOWN = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "data",
        "datacontenttype",
        "dataschema",
    }
)


def from_cloudevent(item: Any) -> dict[str, Any] | Problem:
    if not isinstance(item, Mapping):
        return Problem(ErrorCode.INVALID_TYPE, "a CloudEvent is an object")
    if item.get("specversion") != "1.0":
        return Problem(ErrorCode.INVALID_VALUE, "specversion must be '1.0'", "specversion")
    if not item.get("source"):
        return Problem(ErrorCode.MISSING_FIELD, "required", "source")
    native: dict[str, Any] = {
        "id": item.get("id"),
        "type": item.get("type"),
        "customer": item.get("subject"),
    }
    if item.get("time") is not None:
        native["timestamp"] = item["time"]
    data = item.get("data")
    if data is not None:
        native["properties"] = data
    return native


def from_cloudevents(body: Any) -> list[dict[str, Any] | Problem]:
    """One structured CloudEvent or a batch (a JSON array) of them."""
    return [from_cloudevent(item) for item in batch_items(body)]
