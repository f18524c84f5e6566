"""ASGI middleware: request ids, access logs and metrics; idempotency keys on POST.

Order (outermost first): `RequestContext` gives every request an ``X-Request-Id`` (the caller's,
if sane, else a new one), logs one JSON line when it ends and counts it for ``/metrics``;
`Idempotency` stores the response of a POST that carries an ``Idempotency-Key`` and replays it
for the same key and body (``Idempotent-Replayed: true``)::

    POST /v1/customers   Idempotency-Key: k1   {"external_id": "a"}  -> 201 (stored)
    POST /v1/customers   Idempotency-Key: k1   {"external_id": "a"}  -> 201 (replayed)
    POST /v1/customers   Idempotency-Key: k1   {"external_id": "b"}  -> 422 idempotency_key_reused
    (while the first is still running)                                -> 409 idempotency_key_in_use
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ratecard.core.errors import RatecardError
from ratecard.services.idempotency import Outcome, fingerprint
from ratecard.services.tenancy import Principal
from ratecard.web.deps import Wiring, principal_of
from ratecard.web.problems import PROBLEM_MEDIA_TYPE, error_response

access_log = logging.getLogger("ratecard.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Responses worth replaying; auth failures, rate limits and key conflicts are not remembered.
_NOT_STORED = frozenset({401, 403, 409, 429})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ratecard_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ratecard_http_request_duration_seconds",
            "HTTP request duration by route",
            ["method", "route"],
            registry=self.registry,
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(elapsed)
            principal = scope.get("state", {}).get("principal")
            access_log.info(
                json.dumps(
                    {
                        "event": "request",
                        "request_id": request_id,
                        "method": method,
                        "path": scope.get("path"),
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "tenant_id": getattr(principal, "tenant_id", None),
                        "mode": str(getattr(principal, "mode", "")) or None,
                        "key_id": getattr(principal, "key_id", None),
                    },
                    sort_keys=True,
                )
            )


class Idempotency:
    def __init__(self, app: ASGIApp, wiring: Wiring) -> None:
        self.app = app
        self.wiring = wiring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if key is None or scope.get("method") not in ("POST", "PATCH"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        replay_receive = _replaying(body)
        principal = await self._principal(scope)
        if principal is None:  # the route answers 401 itself
            await self.app(scope, replay_receive, send)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        request_id = state.get("request_id")
        query = scope.get("query_string", b"").decode("latin-1")
        path = str(scope["path"]) + (f"?{query}" if query else "")
        request_hash = fingerprint(str(scope["method"]), path, body)
        idem = self.wiring.idempotency
        try:
            begun = await anyio.to_thread.run_sync(
                lambda: idem.begin(
                    principal.scope, key, request_hash, method=str(scope["method"]), path=path
                )
            )
            begun.raise_for_conflict()
        except RatecardError as error:
            await error_response(error, request_id)(scope, replay_receive, send)
            return
        if begun.outcome is Outcome.REPLAY:
            await _send_json(send, begun.response_status or 200, begun.response_body, replayed=True)
            return
        assert begun.outcome is Outcome.NEW
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await anyio.to_thread.run_sync(lambda: idem.abandon(principal.scope, key))
            raise
        status, stored = _captured(captured)
        if status in _NOT_STORED or status >= 500 or stored is None:
            await anyio.to_thread.run_sync(lambda: idem.abandon(principal.scope, key))
        else:
            if "secret" in stored:  # a new API key's secret is shown once and never stored
                stored = {**stored, "secret": None}
            await anyio.to_thread.run_sync(
                lambda: idem.complete(principal.scope, key, status=status, body=stored)
            )
        for message in captured:
            await send(message)

    async def _principal(self, scope: Scope) -> Principal | None:
        authorization = _header(scope, b"authorization") or ""
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        return await principal_of(self.wiring.tenancy, secret.strip())


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _captured(messages: list[Message]) -> tuple[int, dict[str, Any] | None]:
    status = 500
    body = b""
    for message in messages:
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        return status, None
    return status, parsed if isinstance(parsed, dict) else None


async def _send_json(
    send: Send, status: int, body: dict[str, Any] | None, *, replayed: bool
) -> None:
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    media = PROBLEM_MEDIA_TYPE if status >= 400 else "application/json"
    headers = [
        (b"content-type", media.encode()),
        (b"content-length", str(len(payload)).encode()),
    ]
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class RefuseNul:
    """Refuse NUL characters anywhere in a request (PostgreSQL text cannot hold them).

    Without this a ``\\u0000`` in a body or ``%00`` in a query would reach the database and come
    back as a 500; it is bad input, so it is a 422 problem naming where it was found.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = None
        if "\x00" in str(scope.get("path", "")):
            where = "path"
        elif b"%00" in bytes(scope.get("query_string", b"")).lower():
            where = "query"
        body_receive = receive
        if where is None and scope.get("method") in ("POST", "PATCH", "PUT"):
            body = await _read_body(receive)
            if b"\\u0000" in body or b"\x00" in body:
                where = "body"
            body_receive = _replaying(body)
        if where is not None:
            from ratecard.core.errors import ErrorCode, Problem, ValidationFailed

            message = "NUL characters are not allowed"
            error = ValidationFailed([Problem(ErrorCode.INVALID_VALUE, message, where)])
            request_id = scope.get("state", {}).get("request_id")
            await error_response(error, request_id)(scope, body_receive, send)
            return
        await self.app(scope, body_receive, send)
