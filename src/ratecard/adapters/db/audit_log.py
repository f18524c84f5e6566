"""The audit log's hash chain: one chain per tenant, appended under a lock on its head.

Each entry's hash is ``sha256(prev_hash + canonical JSON of the entry)``, where the entry is
every column except the two hashes and canonical JSON is `types.dumps` (sorted keys, no spaces).
The first entry's ``prev_hash`` is `GENESIS`. ``audit_heads`` holds the last ``(seq, hash)`` per
tenant, so a deleted tail is detectable too, and ``SELECT ... FOR UPDATE`` on it serializes
appends on PostgreSQL (SQLite serializes writers with ``BEGIN IMMEDIATE``).

    >>> entry = {"seq": 1, "tenant_id": "ten_1", "action": "customer.created"}
    >>> len(entry_hash(GENESIS, entry))
    64
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ratecard.adapters.db.models import AuditEntryRow, AuditHeadRow
from ratecard.adapters.db.scope import Mode
from ratecard.adapters.db.types import dumps

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An audit entry waiting for its place in the chain (assigned at commit)."""

    tenant_id: str
    mode: Mode | None
    actor: str
    action: str
    object_type: str
    object_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + dumps(entry)).encode("utf-8")).hexdigest()


def instant_text(at: datetime) -> str:
    assert at.tzinfo is not None, "audit instants are aware"
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_content(
    *,
    tenant_id: str,
    seq: int,
    mode: Mode | str | None,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    at: datetime,
) -> dict[str, Any]:
    """The hashed part of an entry, exactly as `verify` rebuilds it from a stored row."""
    return {
        "tenant_id": tenant_id,
        "seq": seq,
        "mode": None if mode is None else str(mode),
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "before": before,
        "after": after,
        "at": instant_text(at),
    }


def row_content(row: AuditEntryRow) -> dict[str, Any]:
    return entry_content(
        tenant_id=row.tenant_id,
        seq=row.seq,
        mode=row.mode,
        actor=row.actor,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        before=row.before,
        after=row.after,
        at=row.at,
    )


def append(session: Session, entries: list[PendingEntry], at: datetime) -> None:
    """Chain ``entries`` onto their tenants' logs inside the session's transaction."""
    by_tenant: dict[str, list[PendingEntry]] = {}
    for entry in entries:
        by_tenant.setdefault(entry.tenant_id, []).append(entry)
    for tenant_id in sorted(by_tenant):  # a fixed lock order: no deadlock between tenants
        _append_tenant(session, tenant_id, by_tenant[tenant_id], at)


def _append_tenant(
    session: Session, tenant_id: str, entries: list[PendingEntry], at: datetime
) -> None:
    head = session.execute(
        select(AuditHeadRow.seq, AuditHeadRow.hash)
        .where(AuditHeadRow.tenant_id == tenant_id)
        .with_for_update()
    ).one_or_none()
    seq, prev_hash = (0, GENESIS) if head is None else (head.seq, head.hash)
    rows: list[dict[str, Any]] = []
    for entry in entries:
        seq += 1
        content = entry_content(
            tenant_id=tenant_id,
            seq=seq,
            mode=entry.mode,
            actor=entry.actor,
            action=entry.action,
            object_type=entry.object_type,
            object_id=entry.object_id,
            before=entry.before,
            after=entry.after,
            at=at,
        )
        digest = entry_hash(prev_hash, content)
        rows.append(
            {**content, "mode": entry.mode, "at": at, "prev_hash": prev_hash, "hash": digest}
        )
        prev_hash = digest
    session.execute(insert(AuditEntryRow), rows)
    if head is None:
        session.execute(insert(AuditHeadRow).values(tenant_id=tenant_id, seq=seq, hash=prev_hash))
    else:
        session.execute(
            update(AuditHeadRow)
            .where(AuditHeadRow.tenant_id == tenant_id)
            .values(seq=seq, hash=prev_hash)
        )
