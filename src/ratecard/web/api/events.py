"""Usage events over HTTP: the native API, CloudEvents, Segment and Lago, on one pipeline.

    POST /v1/events            {"id": "e1", "type": "api_calls", "customer": "acme", ...}
                               or a JSON list of up to 10,000 of them
    POST /v1/events            Content-Type: application/cloudevents+json        (one CloudEvent)
                               Content-Type: application/cloudevents-batch+json  (a list)
                               or binary mode: ``ce-*`` headers, the data as the body
    POST /v1/track, /v1/batch  the Segment tracking API; the write key is an API key
                               (HTTP Basic: the key as user name, empty password)
    POST /api/v1/events        Lago's ``{"event": {...}}``; /api/v1/events/batch ``{"events": []}``
                               (`lago_events`)

    HTTP/1.1 200 OK
    {"accepted": 1, "duplicates": 1, "rejected": 1, "held": 0, "results": [
      {"index": 0, "id": "e1", "status": "accepted"},
      {"index": 1, "id": "e1", "status": "duplicate"},
      {"index": 2, "id": "e2", "status": "rejected", "code": "unknown_meter",
       "reason": "no such meter", "field": "type"}]}

The body is read here as JSON with numbers as `Decimal` (`exact_json`): never through float.
A body that is not JSON, not an event or list, or longer than 10,000 events is refused whole
(a problem naming ``body``) and nothing is written. Otherwise every event gets a result, and the
response is sent only after the batch is committed: an ``accepted`` event is stored, and a retry
of it answers ``duplicate`` (dedup per tenant and event id, for as long as events are kept).
Error fields are named as the format names them (``subject`` for CloudEvents, ``userId`` for
Segment, ``external_subscription_id`` for Lago).

With the JetStream buffer on (``RATECARD_EVENT_BUFFER=nats``) every route checks the body the
same way (a malformed body is still a problem and publishes nothing), rejects at once what can
never be stored, publishes the rest and answers **202** once JetStream stored them, each such
event ``queued``; whether it is then accepted or a duplicate is decided by
``ratecard worker --consume nats`` with the same dedup (see `services.metering.buffered`). When
NATS does not confirm, the answer is a 503 problem and the client retries the request.

The steps every route shares (exact JSON, validation, the group commit, the answer) are in
`event_pipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials

from ratecard.core.events import MAX_BATCH, batch_items
from ratecard.services.tenancy import Action
from ratecard.web.api.event_pipeline import (
    VALUE,
    IngestResponse,
    buffered_responses,
    ingest,
    malformed,
    one_or_many,
    parsed,
    read_json,
    request_body,
    respond,
    single,
)
from ratecard.web.deps import Ctx, Ingester, bearer, caller, wiring
from ratecard.web.formats import cloudevents, segment
from ratecard.web.routing import Router

router = Router(tags=["events"])

CLOUDEVENT = "application/cloudevents+json"
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"

basic = HTTPBasic(
    auto_error=False, description="Segment: an API key as the write key (user name, no password)"
)


_NATIVE = {
    "type": "object",
    "required": ["id", "type"],
    "properties": {
        "id": {"type": "string", "maxLength": 255, "description": "Unique per tenant"},
        "type": {"type": "string", "maxLength": 100, "description": "The meter's code"},
        "customer": {"type": "string", "description": "The customer's external id"},
        "subscription": {"type": "string", "description": "Or a subscription id"},
        "timestamp": {"type": "string", "format": "date-time", "description": "RFC 3339"},
        "properties": {
            "type": "object",
            "additionalProperties": VALUE,
            "description": "Numbers are read exactly (as decimals, never floats)",
        },
    },
}
_CLOUDEVENT = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "subject"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string"},
        "source": {"type": "string"},
        "type": {"type": "string", "description": "The meter's code"},
        "subject": {"type": "string", "description": "The customer's external id"},
        "time": {"type": "string", "format": "date-time"},
        "data": {"type": "object", "additionalProperties": VALUE},
    },
}


# --- authentication: Bearer everywhere, HTTP Basic for Segment's write key ----------------------


async def segment_ingester(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    write_key: Annotated[HTTPBasicCredentials | None, Depends(basic)],
) -> Ctx:
    """The caller of a Segment route: the write key (Basic) or a Bearer key; role ingest."""
    secret = credentials.credentials if credentials is not None else None
    if secret is None and write_key is not None:
        secret = write_key.username or None
    return await caller(wiring(request), request, secret, Action.INGEST)


SegmentIngester = Annotated[Ctx, Depends(segment_ingester)]


# --- native and CloudEvents --------------------------------------------------------------------


def _binary_cloudevent(request: Request, data: Any) -> dict[str, Any]:
    """CloudEvents binary mode: the attributes in ``ce-*`` headers, the data as the body."""
    event: dict[str, Any] = {
        name.removeprefix("ce-"): unquote(value)  # header values are percent-encoded
        for name, value in request.headers.items()
        if name.startswith("ce-")
    }
    if data is not None:
        event["data"] = data
    return event


@router.post(
    "/v1/events",
    response_model=IngestResponse,
    responses=buffered_responses(IngestResponse),
    openapi_extra=request_body(
        {
            "application/json": one_or_many(_NATIVE),
            CLOUDEVENT: _CLOUDEVENT,
            CLOUDEVENTS_BATCH: {"type": "array", "items": _CLOUDEVENT, "maxItems": MAX_BATCH},
        }
    ),
)
async def ingest_events(request: Request, response: Response, ctx: Ingester) -> Response:
    """Ingest one event or a batch of up to 10,000: native, or CloudEvents 1.0 (structured,
    batch or binary mode). A result per event; sent after the batch is committed. One event
    alone that is rejected is a 422 problem naming its fields, as any bad request is."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if "ce-specversion" in request.headers:
        data = read_json(body) if body.strip() else None
        items: list[Any] = [cloudevents.from_cloudevent(_binary_cloudevent(request, data))]
        return single(
            await ingest(ctx, items, response),
            cloudevents.FIELD_NAMES,
            response,
            where=(cloudevents.BINARY_FIELD_NAMES, ""),
        )
    if media == CLOUDEVENT:
        data = read_json(body)
        if not isinstance(data, Mapping):
            raise malformed("a structured CloudEvent is a JSON object")
        item = cloudevents.from_cloudevent(data)
        return single(await ingest(ctx, [item], response), cloudevents.FIELD_NAMES, response)
    if media == CLOUDEVENTS_BATCH:
        data = read_json(body)
        if not isinstance(data, list):
            raise malformed("a CloudEvents batch is a JSON array")
        items, names = parsed(cloudevents.from_cloudevents, data), cloudevents.FIELD_NAMES
    else:
        data = read_json(body)
        events = parsed(batch_items, data)
        if all(isinstance(e, Mapping) and "specversion" in e for e in events):
            items, names = [cloudevents.from_cloudevent(e) for e in events], cloudevents.FIELD_NAMES
        else:
            items, names = events, {}
        if isinstance(data, Mapping):  # one event, not a list of them
            return single(await ingest(ctx, items, response), names, response)
    return respond(await ingest(ctx, items, response), names, response)


# --- Segment -----------------------------------------------------------------------------------

_TRACK = {
    "type": "object",
    "required": ["event"],
    "properties": {
        "type": {"type": "string", "enum": ["track"]},
        "event": {"type": "string", "description": "The meter's code"},
        "userId": {"type": "string", "description": "The customer's external id"},
        "anonymousId": {"type": "string"},
        "messageId": {"type": "string", "description": "The event id (dedup)"},
        "timestamp": {"type": "string", "format": "date-time"},
        "properties": {"type": "object", "additionalProperties": VALUE},
    },
}


@router.post(
    "/v1/track",
    response_model=IngestResponse,
    responses=buffered_responses(IngestResponse),
    openapi_extra=request_body({"application/json": _TRACK}),
)
async def segment_track(request: Request, response: Response, ctx: SegmentIngester) -> Response:
    """Segment's ``track`` call (the HTTP tracking API); the write key is an ingest API key."""
    data = read_json(await request.body())
    if not isinstance(data, Mapping) or "batch" in data:
        raise malformed("a track call is a JSON object")
    items = parsed(segment.from_segment, data)
    return single(await ingest(ctx, items, response), segment.FIELD_NAMES, response)


@router.post(
    "/v1/batch",
    response_model=IngestResponse,
    responses=buffered_responses(IngestResponse),
    openapi_extra=request_body(
        {
            "application/json": {
                "type": "object",
                "required": ["batch"],
                "properties": {
                    "batch": {"type": "array", "items": _TRACK, "maxItems": MAX_BATCH},
                    "sentAt": {"type": "string"},
                },
            }
        }
    ),
)
async def segment_batch(request: Request, response: Response, ctx: SegmentIngester) -> Response:
    """Segment's ``batch`` (what the Segment libraries send); only ``track`` calls are usage."""
    data = read_json(await request.body())
    if not isinstance(data, Mapping) or not isinstance(data.get("batch"), list):
        raise malformed("expected {'batch': [...]}")
    items = parsed(segment.from_segment, data)
    return respond(await ingest(ctx, items, response), segment.FIELD_NAMES, response)
