"""Liveness and metrics: ``GET /healthz`` (checks the database) and ``GET /metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ratecard.web.deps import wiring
from ratecard.web.problems import problem_response
from ratecard.web.routing import Router

router = Router(tags=["operations"])


class Health(BaseModel):
    status: str
    database: str


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"description": "The database is unreachable"}},
)
def healthz(request: Request) -> Any:
    """Whether this process can serve: it answers and reaches its database."""
    try:
        with wiring(request).engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return problem_response(503, "unavailable", "the database is unreachable")
    return Health(status="ok", database="ok")


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics: requests by route and status, and their durations."""
    body = generate_latest(request.app.state.metrics.registry)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
