"""Lago's event API on Ratecard's ingestion pipeline: ``POST /api/v1/events`` (one event, a
rejected one a 422 problem) and ``POST /api/v1/events/batch`` (each event echoed, as Lago echoes
it, with its result), so a team's Lago client can send usage here unchanged.

    POST /api/v1/events        {"event": {"transaction_id": "t1", "code": "api_calls", ...}}
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel

from ratecard.core.events import MAX_BATCH, format_timestamp
from ratecard.services.metering.batches import EventStatus
from ratecard.web.api.event_pipeline import (
    VALUE,
    EventOutcome,
    buffered_responses,
    ingest,
    malformed,
    parsed,
    read_json,
    refused,
    renamed,
    request_body,
)
from ratecard.web.deps import Ctx, Ingester
from ratecard.web.formats import lago
from ratecard.web.routing import Router

router = Router(tags=["events"])

# --- Lago --------------------------------------------------------------------------------------

_LAGO_EVENT = {
    "type": "object",
    "required": ["transaction_id", "code"],
    "properties": {
        "transaction_id": {"type": "string", "description": "The event id (dedup)"},
        "external_subscription_id": {"type": "string"},
        "external_customer_id": {"type": "string"},
        "code": {"type": "string", "description": "The meter's code"},
        "timestamp": {
            "oneOf": [{"type": "integer"}, {"type": "string"}],
            "description": "Unix seconds (a fraction allowed) or RFC 3339",
        },
        "precise_total_amount_cents": {"type": "string"},
        "properties": {"type": "object", "additionalProperties": VALUE},
    },
}


class LagoEvent(BaseModel):
    """An event as Lago echoes it, with Ratecard's result."""

    lago_id: str | None
    transaction_id: str | None
    lago_customer_id: str | None = None
    lago_subscription_id: str | None = None
    external_customer_id: str | None = None
    external_subscription_id: str | None = None
    code: str | None
    timestamp: str | None
    precise_total_amount_cents: str | None = None
    properties: dict[str, Any] | None = None
    created_at: str | None = None
    status: str
    error: str | None = None
    field: str | None = None


class LagoEventEnvelope(BaseModel):
    event: LagoEvent


class LagoBatchEnvelope(BaseModel):
    events: list[LagoEvent]


def _lago_echo(item: Any, outcome: EventOutcome, received: str) -> LagoEvent:
    raw: Mapping[str, Any] = item if isinstance(item, Mapping) else {}

    def text(name: str) -> str | None:
        value = raw.get(name)
        return None if value is None else str(value)

    properties = raw.get("properties")
    return LagoEvent(
        lago_id=None,
        transaction_id=text("transaction_id"),
        external_customer_id=text("external_customer_id"),
        external_subscription_id=text("external_subscription_id"),
        code=text("code"),
        timestamp=text("timestamp"),
        precise_total_amount_cents=text("precise_total_amount_cents"),
        properties={str(k): _plain(v) for k, v in properties.items()}
        if isinstance(properties, Mapping)
        else None,
        created_at=received,
        status=outcome.status,
        error=outcome.reason,
        field=outcome.field,
    )


def _plain(value: Any) -> Any:
    return format(value, "f") if isinstance(value, Decimal) else value


def _received(ctx: Ctx) -> str:
    return format_timestamp(ctx.now())


@router.post(
    "/api/v1/events",
    response_model=LagoEventEnvelope,
    responses=buffered_responses(LagoEventEnvelope),
    openapi_extra=request_body(
        {
            "application/json": {
                "type": "object",
                "required": ["event"],
                "properties": {"event": _LAGO_EVENT},
            }
        }
    ),
)
async def lago_event(request: Request, response: Response, ctx: Ingester) -> LagoEventEnvelope:
    """Lago's ``POST /api/v1/events``: one event; a rejected event is a 422 problem."""
    data = read_json(await request.body())
    if not isinstance(data, Mapping) or not isinstance(data.get("event"), Mapping):
        raise malformed("expected {'event': {...}}")
    items = parsed(lago.from_lago, data)
    result = await ingest(ctx, items, response)
    (only,) = result.results
    if only.status is EventStatus.REJECTED:
        raise refused(only, lago.FIELD_NAMES, "event")
    outcome = renamed(result, lago.FIELD_NAMES).results[0]
    return LagoEventEnvelope(event=_lago_echo(data["event"], outcome, _received(ctx)))


@router.post(
    "/api/v1/events/batch",
    response_model=LagoBatchEnvelope,
    responses=buffered_responses(LagoBatchEnvelope),
    openapi_extra=request_body(
        {
            "application/json": {
                "type": "object",
                "required": ["events"],
                "properties": {
                    "events": {"type": "array", "items": _LAGO_EVENT, "maxItems": MAX_BATCH}
                },
            }
        }
    ),
)
async def lago_batch(request: Request, response: Response, ctx: Ingester) -> LagoBatchEnvelope:
    """Lago's ``POST /api/v1/events/batch``: every event echoed with its result."""
    data = read_json(await request.body())
    if not isinstance(data, Mapping) or not isinstance(data.get("events"), list):
        raise malformed("expected {'events': [...]}")
    items = parsed(lago.from_lago, data)
    answered = renamed(await ingest(ctx, items, response), lago.FIELD_NAMES)
    received = _received(ctx)
    return LagoBatchEnvelope(
        events=[
            _lago_echo(raw, outcome, received)
            for raw, outcome in zip(data["events"], answered.results, strict=True)
        ]
    )
