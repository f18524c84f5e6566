"""What a route depends on: the wiring, the caller (Bearer API key), their role, a unit of work.

    @router.post("", status_code=201)
    def create(body: MeterInput, ctx: Ctx = Depends(allow(Action.WRITE_CATALOG))) -> Meter:
        with ctx.uow() as uow:
            return Meter.of(meter_catalog.create_meter(uow, body, now=ctx.now()))

No key (or an unknown or revoked one) is a 401 problem; a role that may not do the action is a
403 problem, and the attempt is audited (`TenancyService.authorize`). Each key has its own token
bucket; an empty bucket is a 429 problem.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import Clock
from ratecard.adapters.db.scope import Mode
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.services.idempotency import IdempotencyService
from ratecard.services.metering.buffered import BufferedIngestion
from ratecard.services.metering.wiring import MeteringServices
from ratecard.services.tenancy import Action, Principal, TenancyService, allowed


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket per API key: ``burst`` requests at once, refilled at ``per_second``."""

    burst: int = 200
    per_second: int = 100

    def __post_init__(self) -> None:
        assert self.burst >= 1 and self.per_second >= 1


_MICRO = 1_000_000  # tokens are counted in millionths, time in nanoseconds: no floats


@dataclass(slots=True)
class RateLimiter:
    limit: RateLimit
    _buckets: dict[str, tuple[int, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str) -> bool:
        """Take one token for ``key``; False when its bucket is empty."""
        now_ns = time.monotonic_ns()
        full = self.limit.burst * _MICRO
        with self._lock:
            tokens, last_ns = self._buckets.get(key, (full, now_ns))
            refill = (now_ns - last_ns) * self.limit.per_second // 1000
            tokens = min(full, tokens + refill)
            if tokens < _MICRO:
                self._buckets[key] = (tokens, now_ns)
                return False
            self._buckets[key] = (tokens - _MICRO, now_ns)
            return True


@dataclass(slots=True)
class Wiring:
    """Everything the web layer was built with (one per app)."""

    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    tenancy: TenancyService
    idempotency: IdempotencyService
    limiter: RateLimiter
    metering: MeteringServices | None = None  # set by `create_app`
    #: The JetStream buffer (``RATECARD_EVENT_BUFFER=nats``): ingestion routes publish to it.
    buffer: BufferedIngestion | None = None


@dataclass(frozen=True, slots=True)
class Ctx:
    """One request's caller and the means to act for them."""

    principal: Principal
    wiring: Wiring
    #: "Now" for this request, read once before any unit of work opens (SQLite allows one
    #: writer, so reading the test clock inside an open unit of work would wait on itself).
    now_at: datetime

    def uow(self) -> UnitOfWork:
        metering = self.wiring.metering
        return UnitOfWork(
            self.wiring.sessions,
            self.principal.scope,
            actor=self.principal.actor,
            clock=self.wiring.clock,
            # e.g. held events released by a new customer: the listeners of ingestion hear it
            usage_listeners=() if metering is None else metering.ingestion.listeners,
        )

    def reader(self) -> UnitOfWork:
        """A unit of work that only reads (`engine.read_only`): on SQLite it does not queue
        for the write lock behind ingestion's commits, on PostgreSQL it saves ``BEGIN`` and
        ``ROLLBACK``. Every ``GET`` reads through one."""
        return UnitOfWork(
            self.wiring.sessions,
            self.principal.scope,
            actor=self.principal.actor,
            clock=self.wiring.clock,
            read_only=True,
        )

    def now(self) -> datetime:
        """This request's "now": the real clock in live mode, the tenant's test clock in test
        mode (`TenancyService.now_for`)."""
        return self.now_at

    @property
    def metering(self) -> MeteringServices:
        assert self.wiring.metering is not None, "create_app wires metering"
        return self.wiring.metering


def wiring(request: Request) -> Wiring:
    found = request.app.state.wiring
    assert isinstance(found, Wiring)
    return found


bearer = HTTPBearer(auto_error=False, description="An API key: `rk_live_...` or `rk_test_...`")


def unauthenticated() -> RatecardError:
    return RatecardError(
        "a valid API key is required: Authorization: Bearer rk_live_...",
        code=ErrorCode.UNAUTHENTICATED,
    )


async def principal_of(tenancy: TenancyService, secret: str) -> Principal | None:
    """The key's principal: as this process read it less than a second ago
    (`TenancyService.known`), on the event loop; else read in a worker thread."""
    return tenancy.known(secret) or await anyio.to_thread.run_sync(tenancy.authenticate, secret)


async def caller(wired: Wiring, request: Request, secret: str | None, action: Action) -> Ctx:
    """The request's caller, who must be allowed ``action``; once per request (the idempotency
    middleware may have found the key already).

    Run on the event loop, not in a worker thread: a key this process read less than a second
    ago is taken as read (`TenancyService.known`), and only a key to be read, a refusal (it is
    audited) and test mode's clock go to a thread.
    """
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        principal: Principal | None = known
    elif secret:
        principal = await principal_of(wired.tenancy, secret)
    else:
        principal = None
    if principal is None:
        raise unauthenticated()
    request.state.principal = principal
    if not getattr(request.state, "rate_checked", False):
        request.state.rate_checked = True
        if not wired.limiter.take(principal.key_id):
            raise RatecardError("too many requests for this API key", code=ErrorCode.RATE_LIMITED)
    if not allowed(principal.role, action):
        target = f"{request.method} {request.url.path}"
        await anyio.to_thread.run_sync(
            lambda: wired.tenancy.authorize(principal, action, target=target)
        )
    if principal.mode is Mode.LIVE:
        now = wired.tenancy.now_for(principal)  # the clock: no read
    else:
        now = await anyio.to_thread.run_sync(wired.tenancy.now_for, principal)
    return Ctx(principal, wired, now)


def allow(action: Action) -> Callable[..., Awaitable[Ctx]]:
    """A dependency: the caller, who must be allowed ``action``."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Ctx:
        secret = credentials.credentials if credentials is not None else None
        return await caller(wiring(request), request, secret, action)

    return dependency


Reader = Annotated[Ctx, Depends(allow(Action.READ))]
CatalogWriter = Annotated[Ctx, Depends(allow(Action.WRITE_CATALOG))]
BillingWriter = Annotated[Ctx, Depends(allow(Action.WRITE_BILLING))]
Admin = Annotated[Ctx, Depends(allow(Action.ADMIN))]
Ingester = Annotated[Ctx, Depends(allow(Action.INGEST))]
