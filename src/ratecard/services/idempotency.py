"""Idempotency keys for mutating API calls: same key and body, same response.

    >>> idem = IdempotencyService(sessions, clock)                         # doctest: +SKIP
    >>> fp = fingerprint("POST", "/v1/customers", b'{"external_id":"c1"}')
    >>> idem.begin(scope, "key-1", fp).outcome
    <Outcome.NEW: 'new'>
    >>> idem.complete(scope, "key-1", status=201, body={"id": "cus_1"})
    >>> idem.begin(scope, "key-1", fp).response_body
    {'id': 'cus_1'}

Outcomes of `begin` (exhaustive, TigerBeetle style):

- ``NEW``: this call owns the key; run the handler, then `complete` (or `abandon` on failure);
- ``REPLAY``: done before with the same request; return the stored response;
- ``MISMATCH``: the key was used with another request (``idempotency_key_reused``, 422);
- ``IN_PROGRESS``: another call holds the key right now (``idempotency_key_in_use``, 409).

Race-free on both engines: the first caller's ``INSERT ... ON CONFLICT DO NOTHING`` wins the
unique ``(tenant_id, mode, key)``; everyone else reads the winner's row. Keys expire after a TTL
(24 hours by default); an expired key starts afresh.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import Clock
from ratecard.adapters.db.models import IdempotencyKeyRow
from ratecard.adapters.db.scope import TenantScope
from ratecard.core.errors import Conflict, ErrorCode, RatecardError

MAX_KEY_LENGTH = 255


class Outcome(StrEnum):
    NEW = "new"
    REPLAY = "replay"
    MISMATCH = "mismatch"
    IN_PROGRESS = "in_progress"


@dataclass(frozen=True, slots=True)
class Begun:
    outcome: Outcome
    response_status: int | None = None
    response_body: dict[str, Any] | None = None

    def raise_for_conflict(self) -> None:
        """Turn MISMATCH and IN_PROGRESS into the errors the API reports."""
        if self.outcome is Outcome.MISMATCH:
            raise RatecardError(
                "this Idempotency-Key was used with a different request",
                code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
                field="Idempotency-Key",
            )
        if self.outcome is Outcome.IN_PROGRESS:
            raise Conflict(
                "a request with this Idempotency-Key is still in progress",
                code=ErrorCode.IDEMPOTENCY_KEY_IN_USE,
                field="Idempotency-Key",
            )


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same": method, path and the exact body bytes."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyService:
    def __init__(
        self, sessions: sessionmaker[Session], clock: Clock, ttl: timedelta = timedelta(hours=24)
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._ttl = ttl

    def begin(
        self, scope: TenantScope, key: str, request_hash: str, *, method: str = "", path: str = ""
    ) -> Begun:
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            raise RatecardError(
                f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters", field="Idempotency-Key"
            )
        now = self._clock.now()
        values = {
            "tenant_id": scope.tenant_id,
            "mode": scope.mode,
            "key": key,
            "method": method.upper()[:10],
            "path": path[:500],
            "request_hash": request_hash,
            "status": "in_progress",
            "created_at": now,
        }
        with self._sessions() as session, session.begin():
            if self._insert_if_absent(session, values):
                return Begun(Outcome.NEW)
            row = session.scalars(self._select(scope, key)).one()
            if now - row.created_at >= self._ttl:
                # Expired: take the key over, unless someone else just did.
                taken = session.execute(
                    update(IdempotencyKeyRow)
                    .where(
                        IdempotencyKeyRow.id == row.id,
                        IdempotencyKeyRow.created_at == row.created_at,
                    )
                    .values(
                        request_hash=request_hash,
                        method=values["method"],
                        path=values["path"],
                        status="in_progress",
                        response_status=None,
                        response_body=None,
                        created_at=now,
                        completed_at=None,
                    )
                    .execution_options(synchronize_session=False)
                )
                assert isinstance(taken, CursorResult)
                if taken.rowcount == 1:
                    return Begun(Outcome.NEW)
                session.expire_all()
                row = session.scalars(self._select(scope, key)).one()
            if row.request_hash != request_hash:
                return Begun(Outcome.MISMATCH)
            if row.status == "in_progress":
                return Begun(Outcome.IN_PROGRESS)
            return Begun(Outcome.REPLAY, row.response_status, row.response_body)

    def complete(
        self, scope: TenantScope, key: str, *, status: int, body: dict[str, Any] | None
    ) -> None:
        """Store the response of the call that owns ``key`` (outcome NEW)."""
        with self._sessions() as session, session.begin():
            row = session.scalars(self._select(scope, key).with_for_update()).one_or_none()
            assert row is not None and row.status == "in_progress", f"key {key!r} is not owned"
            row.status = "done"
            row.response_status = status
            row.response_body = body
            row.completed_at = self._clock.now()

    def abandon(self, scope: TenantScope, key: str) -> None:
        """Forget an in-progress key whose call failed without a response worth replaying."""
        with self._sessions() as session, session.begin():
            session.execute(
                delete(IdempotencyKeyRow).where(
                    IdempotencyKeyRow.tenant_id == scope.tenant_id,
                    IdempotencyKeyRow.mode == scope.mode,
                    IdempotencyKeyRow.key == key,
                    IdempotencyKeyRow.status == "in_progress",
                )
            )

    def purge_expired(self) -> int:
        """Delete keys older than the TTL; returns how many."""
        cutoff = self._clock.now() - self._ttl
        with self._sessions() as session, session.begin():
            result = session.execute(
                delete(IdempotencyKeyRow).where(IdempotencyKeyRow.created_at < cutoff)
            )
            assert isinstance(result, CursorResult)
            return int(result.rowcount)

    @staticmethod
    def _select(scope: TenantScope, key: str) -> Any:
        return select(IdempotencyKeyRow).where(
            IdempotencyKeyRow.tenant_id == scope.tenant_id,
            IdempotencyKeyRow.mode == scope.mode,
            IdempotencyKeyRow.key == key,
        )

    @staticmethod
    def _insert_if_absent(session: Session, values: dict[str, Any]) -> bool:
        dialect = session.get_bind().dialect.name
        index = ["tenant_id", "mode", "key"]
        if dialect == "postgresql":
            statement: Any = (
                postgresql.insert(IdempotencyKeyRow)
                .values(**values)
                .on_conflict_do_nothing(index_elements=index)
            )
        else:
            assert dialect == "sqlite", f"unsupported dialect {dialect}"
            statement = (
                sqlite.insert(IdempotencyKeyRow)
                .values(**values)
                .on_conflict_do_nothing(index_elements=index)
            )
        inserted = session.connection().execute(statement.returning(IdempotencyKeyRow.id))
        return inserted.first() is not None
