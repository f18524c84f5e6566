"""Usage events over HTTP: the native API, CloudEvents, Segment and Lago, on one pipeline.

    POST /v1/events            {"id": "e1", "type": "api_calls", "customer": "acme", ...}
                               or a JSON list of up to 10,000 of them
    POST /v1/events            Content-Type: application/cloudevents+json        (one CloudEvent)
                               Content-Type: application/cloudevents-batch+json  (a list)
                               or binary mode: ``ce-*`` headers, the data as the body
    POST /v1/track, /v1/batch  the Segment tracking API; the write key is an API key
                               (HTTP Basic: the key as user name, empty password)
    POST /api/v1/events        Lago's ``{"event": {...}}``; /api/v1/events/batch ``{"events": []}``

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
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import unquote

import anyio.to_thread
from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel

from ratecard.adapters.event_bus import BufferUnavailable
from ratecard.core.errors import ErrorCode, Problem, RatecardError, ValidationFailed
from ratecard.core.events import MAX_BATCH, batch_items, format_timestamp
from ratecard.services.metering.batches import EventResult, EventStatus, IngestResult
from ratecard.services.tenancy import Action
from ratecard.web import exact_json
from ratecard.web.deps import Ctx, Ingester, bearer, caller, wiring
from ratecard.web.formats import cloudevents, lago, segment
from ratecard.web.routing import Router

router = Router(tags=["events"])

_JSON = "application/json"
_quote_json: Callable[[str], str] = json.encoder.encode_basestring
CLOUDEVENT = "application/cloudevents+json"
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"

basic = HTTPBasic(
    auto_error=False, description="Segment: an API key as the write key (user name, no password)"
)


class EventOutcome(BaseModel):
    index: int
    id: str | None
    status: str  # accepted, duplicate, rejected, held; queued (the buffer is on)
    code: str | None = None
    reason: str | None = None
    field: str | None = None
    problems: list[dict[str, str | None]] | None = None


class IngestResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    held: int
    queued: int = 0
    results: list[EventOutcome]


# --- request bodies, documented (the route reads the bytes itself) -----------------------------

_VALUE = {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
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
            "additionalProperties": _VALUE,
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
        "data": {"type": "object", "additionalProperties": _VALUE},
    },
}


def _one_or_many(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "array", "items": schema, "maxItems": MAX_BATCH}]}


def _body(content: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": schema} for media, schema in content.items()},
        }
    }


def _buffered(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        202: {"model": model, "description": "Queued in the JetStream buffer (buffer on)"},
        503: {"description": "The event buffer did not store the events: retry the request"},
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


# --- the pipeline ------------------------------------------------------------------------------


def _json(body: bytes) -> Any:
    """The body as JSON, numbers as Decimal; a problem naming ``body`` if it is not JSON."""
    if not body.strip():
        raise _malformed("the body is empty")
    try:
        return exact_json.loads(body)
    except RecursionError:
        raise _malformed("nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed(f"not valid JSON: {exc}") from None


def _malformed(message: str) -> ValidationFailed:
    return ValidationFailed([Problem(ErrorCode.MALFORMED_BODY, message, "body")])


def _named(failed: ValidationFailed) -> ValidationFailed:
    """Whole-body problems name ``body`` (or ``body.<field>``)."""
    return ValidationFailed(
        [
            Problem(p.code, p.message, "body" if p.field is None else f"body.{p.field}")
            for p in failed.problems
        ]
    )


def _parsed(convert: Callable[[Any], list[Any]], data: Any) -> list[Any]:
    try:
        return convert(data)
    except ValidationFailed as failed:
        raise _named(failed) from None


def _field(name: str | None, names: Mapping[str, str]) -> str | None:
    if name is None:
        return None
    head, dot, rest = name.partition(".")
    return names.get(head, head) + dot + rest


def _renamed(result: IngestResult, names: Mapping[str, str]) -> IngestResponse:
    """The results, their fields named as the caller's format names them."""

    def field(name: str | None) -> str | None:
        return _field(name, names)

    def outcome(r: EventResult) -> EventOutcome:
        problems = [
            {"code": str(p.code), "reason": p.message, "field": field(p.field)} for p in r.problems
        ]
        first = problems[0] if problems else {}
        return EventOutcome(
            index=r.index,
            id=r.event_id,
            status=str(r.status),
            code=first.get("code"),
            reason=first.get("reason"),
            field=first.get("field"),
            problems=problems if len(problems) > 1 else None,
        )

    return IngestResponse(
        accepted=result.count(EventStatus.ACCEPTED),
        duplicates=result.count(EventStatus.DUPLICATE),
        rejected=result.count(EventStatus.REJECTED),
        held=result.count(EventStatus.HELD),
        queued=result.count(EventStatus.QUEUED),
        results=[outcome(r) for r in result.results],
    )


_PLAIN_OUTCOME = (
    '{"index":%d,"id":%s,"status":"%s","code":null,"reason":null,"field":null,"problems":null}'
)
_COUNTED = {
    EventStatus.ACCEPTED: "accepted",
    EventStatus.DUPLICATE: "duplicates",
    EventStatus.REJECTED: "rejected",
    EventStatus.HELD: "held",
    EventStatus.QUEUED: "queued",
}


def _respond(result: IngestResult, names: Mapping[str, str], response: Response) -> Response:
    """`_renamed(result, names)` as JSON, written straight: the same document as the
    `IngestResponse` model gives, at a fraction of the cost for 10,000 results."""
    counts = dict.fromkeys(_COUNTED.values(), 0)
    parts = []
    quote = _quote_json
    for r in result.results:
        counts[_COUNTED[r.status]] += 1
        if r.problems:
            outcome = _renamed(IngestResult((r,)), names).results[0]
            parts.append(outcome.model_dump_json())
        else:
            event_id = "null" if r.event_id is None else quote(r.event_id)
            parts.append(_PLAIN_OUTCOME % (r.index, event_id, r.status))
    head = json.dumps(counts, separators=(",", ":"))[:-1]
    body = f'{head},"results":[{",".join(parts)}]}}'
    return Response(body.encode(), status_code=response.status_code or 200, media_type=_JSON)


def _refused(result: EventResult, names: Mapping[str, str], prefix: str) -> ValidationFailed:
    """A single event's rejection as a problem, its fields named as the caller's format names
    them, under `prefix` (``body``: the request's body)."""
    return ValidationFailed(
        [
            Problem(p.code, p.message, ".".join(filter(None, (prefix, _field(p.field, names)))))
            for p in result.problems
        ]
    )


def _single(
    result: IngestResult,
    names: Mapping[str, str],
    response: Response,
    *,
    where: tuple[Mapping[str, str], str] | None = None,
) -> Response:
    """The answer to a request of one event: its result, or, when it is rejected, a 422
    problem naming its fields (as any bad request is answered; a batch answers per event):
    in the body by default, else as `where` (names, prefix) says."""
    (only,) = result.results
    if only.status is EventStatus.REJECTED:
        raise _refused(only, *(where or (names, "body")))
    return _respond(result, names, response)


async def _ingest(ctx: Ctx, items: Sequence[Any], response: Response) -> IngestResult:
    """Validate the batch in a worker thread, hand it to the group committer, and return after
    the commit that stored it (a 503 ``ingestion_busy`` problem, with Retry-After, when the
    writer's queue is full: nothing of the batch is stored).

    With the buffer on: publish it, 202, returns after JetStream's PubAck."""
    buffer = ctx.wiring.buffer
    if buffer is not None:
        try:
            result = await buffer.ingest(ctx.principal.scope, items)
        except BufferUnavailable as exc:
            raise RatecardError(str(exc), code=ErrorCode.EVENT_BUFFER_UNAVAILABLE) from None
        response.status_code = 202
        return result
    metering = ctx.metering
    prepared = await anyio.to_thread.run_sync(metering.ingestion.prepare, items)
    stored = metering.committer.submit(ctx.principal.scope, ctx.principal.actor, prepared)
    return await asyncio.wrap_future(stored)


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
    responses=_buffered(IngestResponse),
    openapi_extra=_body(
        {
            "application/json": _one_or_many(_NATIVE),
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
        data = _json(body) if body.strip() else None
        items: list[Any] = [cloudevents.from_cloudevent(_binary_cloudevent(request, data))]
        return _single(
            await _ingest(ctx, items, response),
            cloudevents.FIELD_NAMES,
            response,
            where=(cloudevents.BINARY_FIELD_NAMES, ""),
        )
    if media == CLOUDEVENT:
        data = _json(body)
        if not isinstance(data, Mapping):
            raise _malformed("a structured CloudEvent is a JSON object")
        item = cloudevents.from_cloudevent(data)
        return _single(await _ingest(ctx, [item], response), cloudevents.FIELD_NAMES, response)
    if media == CLOUDEVENTS_BATCH:
        data = _json(body)
        if not isinstance(data, list):
            raise _malformed("a CloudEvents batch is a JSON array")
        items, names = _parsed(cloudevents.from_cloudevents, data), cloudevents.FIELD_NAMES
    else:
        data = _json(body)
        events = _parsed(batch_items, data)
        if all(isinstance(e, Mapping) and "specversion" in e for e in events):
            items, names = [cloudevents.from_cloudevent(e) for e in events], cloudevents.FIELD_NAMES
        else:
            items, names = events, {}
        if isinstance(data, Mapping):  # one event, not a list of them
            return _single(await _ingest(ctx, items, response), names, response)
    return _respond(await _ingest(ctx, items, response), names, response)


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
        "properties": {"type": "object", "additionalProperties": _VALUE},
    },
}


@router.post(
    "/v1/track",
    response_model=IngestResponse,
    responses=_buffered(IngestResponse),
    openapi_extra=_body({"application/json": _TRACK}),
)
async def segment_track(request: Request, response: Response, ctx: SegmentIngester) -> Response:
    """Segment's ``track`` call (the HTTP tracking API); the write key is an ingest API key."""
    data = _json(await request.body())
    if not isinstance(data, Mapping) or "batch" in data:
        raise _malformed("a track call is a JSON object")
    items = _parsed(segment.from_segment, data)
    return _single(await _ingest(ctx, items, response), segment.FIELD_NAMES, response)


@router.post(
    "/v1/batch",
    response_model=IngestResponse,
    responses=_buffered(IngestResponse),
    openapi_extra=_body(
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
    data = _json(await request.body())
    if not isinstance(data, Mapping) or not isinstance(data.get("batch"), list):
        raise _malformed("expected {'batch': [...]}")
    items = _parsed(segment.from_segment, data)
    return _respond(await _ingest(ctx, items, response), segment.FIELD_NAMES, response)


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
        "properties": {"type": "object", "additionalProperties": _VALUE},
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
    responses=_buffered(LagoEventEnvelope),
    openapi_extra=_body(
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
    data = _json(await request.body())
    if not isinstance(data, Mapping) or not isinstance(data.get("event"), Mapping):
        raise _malformed("expected {'event': {...}}")
    items = _parsed(lago.from_lago, data)
    result = await _ingest(ctx, items, response)
    (only,) = result.results
    if only.status is EventStatus.REJECTED:
        raise _refused(only, lago.FIELD_NAMES, "event")
    outcome = _renamed(result, lago.FIELD_NAMES).results[0]
    return LagoEventEnvelope(event=_lago_echo(data["event"], outcome, _received(ctx)))


@router.post(
    "/api/v1/events/batch",
    response_model=LagoBatchEnvelope,
    responses=_buffered(LagoBatchEnvelope),
    openapi_extra=_body(
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
    data = _json(await request.body())
    if not isinstance(data, Mapping) or not isinstance(data.get("events"), list):
        raise _malformed("expected {'events': [...]}")
    items = _parsed(lago.from_lago, data)
    renamed = _renamed(await _ingest(ctx, items, response), lago.FIELD_NAMES)
    received = _received(ctx)
    return LagoBatchEnvelope(
        events=[
            _lago_echo(raw, outcome, received)
            for raw, outcome in zip(data["events"], renamed.results, strict=True)
        ]
    )
