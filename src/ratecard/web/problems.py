"""Errors to HTTP: every failure leaves as an RFC 9457 ``application/problem+json`` document.

    HTTP/1.1 422 Unprocessable Content
    Content-Type: application/problem+json

    {"type": "https://ratecard.dev/problems/invalid_value", "title": "Invalid value",
     "status": 422, "detail": "body.charges[0].model: ...", "code": "invalid_value",
     "request_id": "0f3a...", "errors": [{"field": "body.charges[0].model",
     "code": "invalid_value", "message": "Input should be 'flat', 'per_unit', ..."}]}

The one place that maps an `ErrorCode` to a status is `status_of`. Request validation errors of
FastAPI become the same shape, their locations written as field paths (``body.charges[0].model``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ratecard.core.errors import (
    Conflict,
    ErrorCode,
    Forbidden,
    InvalidTransition,
    NotFound,
    Problem,
    RatecardError,
)
from ratecard.services.documents import field_path

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://ratecard.dev/problems/"

log = logging.getLogger("ratecard.web")

_STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ROUTE_NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.PLAN_VERSION_IN_USE: 409,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.IDEMPOTENCY_KEY_IN_USE: 409,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.MALFORMED_BODY: 400,
    ErrorCode.EVENT_BUFFER_UNAVAILABLE: 503,
    ErrorCode.INGESTION_BUSY: 503,
    ErrorCode.STORE_DISK_FAILED: 503,
}

_STATUS_BY_CLASS: tuple[tuple[type[RatecardError], int], ...] = (
    (NotFound, 404),
    (Forbidden, 403),
    (InvalidTransition, 409),
    (Conflict, 409),
)

_FLOAT_MESSAGE = "floats are not accepted"


class ProblemItem(BaseModel):
    field: str | None
    code: str
    message: str


class ProblemDocument(BaseModel):
    """An RFC 9457 problem, with our error code and every problem found."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    errors: list[ProblemItem] = []


def status_of(error: RatecardError) -> int:
    if error.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[error.code]
    for cls, status in _STATUS_BY_CLASS:
        if isinstance(error, cls):
            return status
    return 422


def _title(code: str) -> str:
    return code.replace("_", " ").capitalize()


def problem_body(
    status: int, code: str, detail: str, problems: list[Problem], request_id: str | None
) -> dict[str, Any]:
    return ProblemDocument(
        type=PROBLEM_BASE + code,
        title=_title(code),
        status=status,
        detail=detail,
        code=code,
        request_id=request_id,
        errors=[ProblemItem(field=p.field, code=str(p.code), message=p.message) for p in problems],
    ).model_dump(mode="json")


def problem_response(
    status: int,
    code: str,
    detail: str,
    problems: list[Problem] | None = None,
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = problem_body(status, code, detail, problems or [], request_id)
    extra = dict(headers or {})
    if status == 401:
        extra.setdefault("WWW-Authenticate", 'Bearer realm="ratecard"')
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=extra)


def error_response(error: RatecardError, request_id: str | None = None) -> JSONResponse:
    headers = {}
    if error.code in (ErrorCode.RATE_LIMITED, ErrorCode.INGESTION_BUSY):
        headers["Retry-After"] = "1"
    return problem_response(
        status_of(error),
        str(error.code),
        error.message,
        list(error.problems),
        request_id=request_id,
        headers=headers,
    )


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def validation_problems(exc: RequestValidationError) -> list[Problem]:
    problems = []
    for item in exc.errors():
        kind = str(item.get("type", ""))
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "missing":
            code = ErrorCode.MISSING_FIELD
        elif kind == "extra_forbidden":
            code = ErrorCode.UNKNOWN_FIELD
        elif _FLOAT_MESSAGE in message:
            code = ErrorCode.FLOAT_NOT_ALLOWED
        elif kind.endswith("_type") or kind == "json_invalid":
            code = ErrorCode.INVALID_TYPE
        else:
            code = ErrorCode.INVALID_VALUE
        loc = [part for part in item.get("loc", ()) if isinstance(part, int | str)]
        problems.append(Problem(code, message, field_path(loc) or None))
    return problems


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into a problem document."""

    @app.exception_handler(RatecardError)
    async def _ratecard(request: Request, exc: RatecardError) -> JSONResponse:
        return error_response(exc, _request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_problems(exc)
        detail = "; ".join(str(p) for p in problems) or "invalid request"
        first = problems[0].code if problems else ErrorCode.INVALID_VALUE
        return problem_response(422, str(first), detail, problems, request_id=_request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            code, detail = ErrorCode.ROUTE_NOT_FOUND, f"no route {request.url.path}"
        elif exc.status_code == 405:
            code, detail = ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here"
        else:
            code, detail = ErrorCode.INVALID_VALUE, str(exc.detail)
        return problem_response(
            exc.status_code,
            str(code),
            detail,
            request_id=_request_id(request),
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": _request_id(request)})
        return problem_response(
            500,
            str(ErrorCode.INTERNAL_ERROR),
            "internal error; quote the request id when reporting it",
            request_id=_request_id(request),
        )


#: Documented on every operation (the app adds them to the OpenAPI document).
PROBLEM_STATUSES = {
    "400": "Malformed request",
    "401": "Missing or unknown API key",
    "403": "The key's role may not do this",
    "404": "No such object (in this tenant and mode)",
    "405": "Method not allowed",
    "409": "Conflict with the current state",
    "422": "Invalid input; every problem with its field",
    "429": "Rate limited",
}
