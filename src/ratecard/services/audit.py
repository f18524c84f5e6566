"""Reading and verifying the audit log.

    >>> report = verify(sessions, "ten_1")                     # doctest: +SKIP
    >>> report.ok, report.checked
    (True, 42)

Entries are written by the unit of work (every changed row, with before and after) and by
explicit ``uow.audit(...)`` calls; see `adapters.db.audit_log` for the hash chain. `verify`
walks one tenant's chain in order and reports the first broken link:

- ``missing``: a sequence number is skipped (a row was deleted);
- ``relinked``: ``prev_hash`` is not the previous entry's hash (rows deleted or reordered);
- ``edited``: the entry's content does not hash to its ``hash``;
- ``truncated``: the chain ends before the recorded head (the last rows were deleted).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.db.audit_log import GENESIS, entry_hash, row_content
from ratecard.adapters.db.models import AuditEntryRow, AuditHeadRow, TenantRow

_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ChainReport:
    tenant_id: str
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str | None = None  # missing | relinked | edited | truncated
    detail: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"{self.tenant_id}: OK ({self.checked} entries)"
        return f"{self.tenant_id}: BROKEN at seq {self.broken_seq}: {self.reason} — {self.detail}"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    mode: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def verify(sessions: sessionmaker[Session], tenant_id: str) -> ChainReport:
    with sessions() as session:
        expected_seq, prev_hash, checked = 1, GENESIS, 0
        for row in _rows(session, tenant_id):
            if row.seq != expected_seq:
                return ChainReport(
                    tenant_id,
                    False,
                    checked,
                    expected_seq,
                    "missing",
                    f"entry {expected_seq} is missing (next found is {row.seq})",
                )
            if row.prev_hash != prev_hash:
                return ChainReport(
                    tenant_id,
                    False,
                    checked,
                    row.seq,
                    "relinked",
                    "prev_hash does not match the previous entry",
                )
            if entry_hash(prev_hash, row_content(row)) != row.hash:
                return ChainReport(
                    tenant_id, False, checked, row.seq, "edited", "content does not match hash"
                )
            prev_hash, expected_seq, checked = row.hash, expected_seq + 1, checked + 1
        head = session.get(AuditHeadRow, tenant_id)
        head_seq, head_hash = (0, GENESIS) if head is None else (head.seq, head.hash)
        if (head_seq, head_hash) != (expected_seq - 1, prev_hash):
            return ChainReport(
                tenant_id,
                False,
                checked,
                expected_seq,
                "truncated",
                f"chain ends at {expected_seq - 1}, head records {head_seq}",
            )
        return ChainReport(tenant_id, True, checked)


def verify_all(sessions: sessionmaker[Session]) -> list[ChainReport]:
    with sessions() as session:
        tenant_ids = list(session.scalars(select(TenantRow.id).order_by(TenantRow.id)))
    return [verify(sessions, tenant_id) for tenant_id in tenant_ids]


def entries(
    sessions: sessionmaker[Session],
    tenant_id: str,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    after_seq: int = 0,
    limit: int = 100,
) -> list[AuditEntry]:
    assert 0 < limit <= 1000
    statement = select(AuditEntryRow).where(
        AuditEntryRow.tenant_id == tenant_id, AuditEntryRow.seq > after_seq
    )
    if object_type is not None:
        statement = statement.where(AuditEntryRow.object_type == object_type)
    if object_id is not None:
        statement = statement.where(AuditEntryRow.object_id == object_id)
    with sessions() as session:
        rows = session.scalars(statement.order_by(AuditEntryRow.seq).limit(limit))
        return [
            AuditEntry(
                r.seq,
                r.at,
                r.actor,
                r.action,
                r.object_type,
                r.object_id,
                None if r.mode is None else str(r.mode),
                r.before,
                r.after,
            )
            for r in rows
        ]


def _rows(session: Session, tenant_id: str) -> Iterator[AuditEntryRow]:
    after = 0
    while True:
        batch = list(
            session.scalars(
                select(AuditEntryRow)
                .where(AuditEntryRow.tenant_id == tenant_id, AuditEntryRow.seq > after)
                .order_by(AuditEntryRow.seq)
                .limit(_BATCH)
            )
        )
        yield from batch
        if len(batch) < _BATCH:
            return
        after = batch[-1].seq
        session.expunge_all()
