"""The ASGI application: routers, problem handlers, middleware and the OpenAPI document.

    >>> app = create_app(Settings(database_url="sqlite:///./var/ratecard.db"))  # doctest: +SKIP
    >>> app = create_app(engine, FixedClock(...))          # tests: a migrated engine, a clock

The app does not migrate: ``ratecard serve`` migrates before it serves. OpenAPI lives at
``/openapi.json`` (and ``/docs``); every operation documents its problem responses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from sqlalchemy import Engine

from ratecard import __version__
from ratecard.adapters.cache import InProcessCache
from ratecard.adapters.clock import Clock, SystemClock
from ratecard.adapters.db.engine import Checkpointer, make_engine, make_session_factory
from ratecard.config import Settings, get_settings
from ratecard.services.idempotency import IdempotencyService
from ratecard.services.metering.buffered import BufferedIngestion, Publisher, UsageNotices
from ratecard.services.metering.wiring import MeteringServices, Writer
from ratecard.services.tenancy import TenancyService
from ratecard.web import problems
from ratecard.web.api import ROUTERS
from ratecard.web.deps import RateLimit, RateLimiter, Wiring
from ratecard.web.middleware import Idempotency, Metrics, RefuseNul, RequestContext

log = logging.getLogger(__name__)

DESCRIPTION = """Ratecard billing API.

Authenticate with `Authorization: Bearer <API key>`; `rk_live_...` keys see live data,
`rk_test_...` keys test data. Amounts are decimal strings. Every POST accepts an
`Idempotency-Key` header. Errors are RFC 9457 `application/problem+json` documents.
"""


def create_app(
    store: Settings | Engine | None = None,
    clock: Clock | None = None,
    *,
    rate_limit: RateLimit | None = None,
    extra_routers: Sequence[APIRouter] = (),
    buffer: Publisher | None = None,
    ingest_writer: Writer | None = None,
    recover_alerts: bool = False,
) -> FastAPI:
    """The app on `store`; `buffer` (or ``RATECARD_EVENT_BUFFER=nats``) puts the JetStream
    buffer between the ingestion routes and the store (and, from startup, has the worker's
    usage-changed notices drop cached entitlements here); `ingest_writer` (or
    ``RATECARD_INGEST_WRITER``) says where the group commit runs; `recover_alerts` (as
    ``ratecard serve`` has it) checks every alert in the background at start."""
    settings = store if isinstance(store, Settings) else get_settings()
    engine = store if isinstance(store, Engine) else make_engine(settings.database_url, settings)
    clock = clock or SystemClock()
    sessions = make_session_factory(engine)
    if buffer is None and settings.event_buffer == "nats":
        from ratecard.adapters.event_bus import LazyNatsBuffer

        buffer = LazyNatsBuffer(
            settings.nats_url,
            stream=settings.nats_stream,
            subject_prefix=settings.nats_subject_prefix,
        )
    buffered = None if buffer is None else BufferedIngestion(buffer, clock)
    writer = ingest_writer or settings.ingest_writer
    if buffered is not None and writer == "auto":
        writer = "thread"  # the routes publish to the buffer: a writer process would idle
    metering = MeteringServices.build(sessions, clock, redis_url=settings.redis_url, writer=writer)
    wired = Wiring(
        engine=engine,
        sessions=sessions,
        clock=clock,
        tenancy=TenancyService(sessions, clock),
        idempotency=IdempotencyService(
            sessions, clock, ttl=timedelta(hours=settings.idempotency_ttl_hours)
        ),
        limiter=RateLimiter(rate_limit or RateLimit()),
        metering=metering,
        buffer=buffered,
    )

    checkpointer = Checkpointer(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        checkpointer.start()
        await anyio.to_thread.run_sync(metering.committer.start)
        if isinstance(buffer, UsageNotices) and isinstance(
            metering.entitlements.cache, InProcessCache
        ):  # the worker's listeners do not run here; with Redis it dropped the shared entry
            await buffer.on_usage_changed(metering.usage_changed)
        recovery = threading.Thread(
            target=_recover_alerts, args=(metering, _app.state), name="alerts-recovery", daemon=True
        )
        if recover_alerts:  # a daemon: a long recovery neither delays serving nor stopping
            recovery.start()
        yield
        await anyio.to_thread.run_sync(metering.committer.close)
        await anyio.to_thread.run_sync(checkpointer.stop)
        if buffered is not None:
            await buffered.close()  # flushes and closes the NATS connection

    app = FastAPI(title="Ratecard", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.wiring = wired
    app.state.alerts_recovered = threading.Event()
    app.state.metrics = Metrics()
    problems.install(app)
    for router in (*ROUTERS, *extra_routers):
        app.include_router(router)
    # Starlette runs the last added middleware first: RequestContext, RefuseNul, Idempotency.
    app.add_middleware(Idempotency, wiring=wired)
    app.add_middleware(RefuseNul)
    app.add_middleware(RequestContext, metrics=app.state.metrics)
    _document_problems(app)
    return app


def _recover_alerts(metering: MeteringServices, state: Any) -> None:
    """At every start, in the background: a crossing that a crash left unevaluated (between a
    batch's commit and its alerts) fires now (`AlertService.recover`)."""
    try:
        written = metering.alerts.recover()
        if written:
            log.info("alerts recovery: %d webhook events written", written)
    except Exception:  # a store that is down now: the next batch evaluates its alerts anyway
        log.exception("alerts recovery failed")
    finally:
        state.alerts_recovered.set()


def _document_problems(app: FastAPI) -> None:
    """Every operation lists the problem responses it can give, as problem+json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, sub in (
            problems.ProblemDocument.model_json_schema(ref_template="#/components/schemas/{model}")
            .get("$defs", {})
            .items()
        ):
            components[name] = sub
        document = problems.ProblemDocument.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        document.pop("$defs", None)
        components["ProblemDocument"] = document
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        ref = {"$ref": "#/components/schemas/ProblemDocument"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                for status, description in problems.PROBLEM_STATUSES.items():
                    responses[status] = {
                        "description": description,
                        "content": {problems.PROBLEM_MEDIA_TYPE: {"schema": ref}},
                    }
                if "503" in responses:
                    responses["503"]["content"] = {problems.PROBLEM_MEDIA_TYPE: {"schema": ref}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
