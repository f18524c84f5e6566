"""The ingestion routes write their JSON by hand: it must be the documented model's document."""

from __future__ import annotations

import json

from fastapi import Response

from ratecard.core.errors import ErrorCode, Problem
from ratecard.services.metering.batches import EventResult, EventStatus, IngestResult
from ratecard.web.api.event_pipeline import renamed, respond

PROBLEMS = (
    Problem(ErrorCode.MISSING_FIELD, "required", "type"),
    Problem(ErrorCode.INVALID_VALUE, "not a number", "properties.tokens"),
)


def test_the_hand_written_response_is_the_models_document() -> None:
    result = IngestResult(
        (
            EventResult(0, "e1", EventStatus.ACCEPTED),
            EventResult(1, 'quo"te\\ünï', EventStatus.DUPLICATE),
            EventResult(2, None, EventStatus.REJECTED, PROBLEMS),
            EventResult(3, "e3", EventStatus.REJECTED, PROBLEMS[:1]),
            EventResult(4, "e4", EventStatus.HELD),
            EventResult(5, "e5", EventStatus.QUEUED),
        )
    )
    names = {"type": "code", "properties": "props"}
    response = respond(result, names, Response())
    written = json.loads(bytes(response.body))
    assert written == json.loads(renamed(result, names).model_dump_json())
    assert list(written) == ["accepted", "duplicates", "rejected", "held", "queued", "results"]
    assert written["results"][2]["field"] == "code"
    assert written["results"][2]["problems"][1]["field"] == "props.tokens"
    assert response.status_code == 200
    assert response.media_type == "application/json"


def test_the_status_set_by_the_route_is_kept() -> None:
    buffered = Response()
    buffered.status_code = 202
    result = IngestResult((EventResult(0, "e1", EventStatus.QUEUED),))
    assert respond(result, {}, buffered).status_code == 202
