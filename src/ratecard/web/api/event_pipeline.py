"""What the ingestion routes share (`events`, `lago_events`): the body read as exact JSON, the
batch validated and handed to the group committer, and the answer, a result per event with its
fields named as the caller's format names them.

    >>> items = parsed(batch_items, read_json(await request.body()))        # doctest: +SKIP
    >>> return respond(await ingest(ctx, items, response), {}, response)    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio.to_thread
from fastapi import Response
from pydantic import BaseModel

from ratecard.adapters.event_bus import BufferUnavailable
from ratecard.core.errors import ErrorCode, Problem, RatecardError, ValidationFailed
from ratecard.core.events import MAX_BATCH
from ratecard.services.metering.batches import EventResult, EventStatus, IngestResult
from ratecard.web import exact_json
from ratecard.web.deps import Ctx

_JSON = "application/json"
_quote_json: Callable[[str], str] = json.encoder.encode_basestring


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


VALUE = {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}


def one_or_many(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "array", "items": schema, "maxItems": MAX_BATCH}]}


def request_body(content: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": schema} for media, schema in content.items()},
        }
    }


def buffered_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        202: {"model": model, "description": "Queued in the JetStream buffer (buffer on)"},
        503: {"description": "The event buffer did not store the events: retry the request"},
    }


# --- the pipeline ------------------------------------------------------------------------------


def read_json(body: bytes) -> Any:
    """The body as JSON, numbers as Decimal; a problem naming ``body`` if it is not JSON."""
    if not body.strip():
        raise malformed("the body is empty")
    try:
        return exact_json.loads(body)
    except RecursionError:
        raise malformed("nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise malformed(f"not valid JSON: {exc}") from None


def malformed(message: str) -> ValidationFailed:
    return ValidationFailed([Problem(ErrorCode.MALFORMED_BODY, message, "body")])


def named(failed: ValidationFailed) -> ValidationFailed:
    """Whole-body problems name ``body`` (or ``body.<field>``)."""
    return ValidationFailed(
        [
            Problem(p.code, p.message, "body" if p.field is None else f"body.{p.field}")
            for p in failed.problems
        ]
    )


def parsed(convert: Callable[[Any], list[Any]], data: Any) -> list[Any]:
    try:
        return convert(data)
    except ValidationFailed as failed:
        raise named(failed) from None


def field_name(name: str | None, names: Mapping[str, str]) -> str | None:
    if name is None:
        return None
    head, dot, rest = name.partition(".")
    return names.get(head, head) + dot + rest


def renamed(result: IngestResult, names: Mapping[str, str]) -> IngestResponse:
    """The results, their fields named as the caller's format names them."""

    def field(name: str | None) -> str | None:
        return field_name(name, names)

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


def respond(result: IngestResult, names: Mapping[str, str], response: Response) -> Response:
    """`renamed(result, names)` as JSON, written straight: the same document as the
    `IngestResponse` model gives, at a fraction of the cost for 10,000 results."""
    counts = dict.fromkeys(_COUNTED.values(), 0)
    parts = []
    quote = _quote_json
    for r in result.results:
        counts[_COUNTED[r.status]] += 1
        if r.problems:
            outcome = renamed(IngestResult((r,)), names).results[0]
            parts.append(outcome.model_dump_json())
        else:
            event_id = "null" if r.event_id is None else quote(r.event_id)
            parts.append(_PLAIN_OUTCOME % (r.index, event_id, r.status))
    head = json.dumps(counts, separators=(",", ":"))[:-1]
    body = f'{head},"results":[{",".join(parts)}]}}'
    return Response(body.encode(), status_code=response.status_code or 200, media_type=_JSON)


def refused(result: EventResult, names: Mapping[str, str], prefix: str) -> ValidationFailed:
    """A single event's rejection as a problem, its fields named as the caller's format names
    them, under `prefix` (``body``: the request's body)."""
    return ValidationFailed(
        [
            Problem(p.code, p.message, ".".join(filter(None, (prefix, field_name(p.field, names)))))
            for p in result.problems
        ]
    )


def single(
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
        raise refused(only, *(where or (names, "body")))
    return respond(result, names, response)


async def ingest(ctx: Ctx, items: Sequence[Any], response: Response) -> IngestResult:
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
