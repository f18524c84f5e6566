"""A tenant's metering policy: what happens to unknown, old, future and late events.

    >>> MeteringPolicy().max_past
    datetime.timedelta(days=35)

Defaults: unknown customers and meters are rejected; events may be up to 35 days old and up to
5 minutes ahead of the server's clock; late events (for a period already invoiced) are kept and
billed as an adjustment on the next invoice; raw events are kept until an explicit purge, which
never reaches back less than `MIN_RETENTION_DAYS` (35 days): that is the dedup window's floor.

The policy decides what happens to an event when it arrives. An event held under ``hold`` stays
held after a switch back to ``reject`` and is still released, per event, when its customer or
meter appears (`lifecycle.release_held`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ratecard.adapters.db.models import MeteringPolicyRow
from ratecard.adapters.db.scope import TenantScope, new_id
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.errors import invalid

MIN_RETENTION_DAYS = 35
#: The limits a tenant may set: events up to ten years old (backfills), a week ahead.
MAX_PAST_LIMIT = timedelta(days=3650)
MAX_FUTURE_LIMIT = timedelta(days=7)


class Unknown(StrEnum):
    REJECT = "reject"
    HOLD = "hold"  # kept (and deduplicated), counted once the customer or meter exists


class LateEvents(StrEnum):
    ADJUST = "adjust"  # an adjustment line on the next invoice
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class MeteringPolicy:
    unknown_customer: Unknown = Unknown.REJECT
    unknown_meter: Unknown = Unknown.REJECT
    late_events: LateEvents = LateEvents.ADJUST
    max_past: timedelta = timedelta(days=35)
    max_future: timedelta = timedelta(minutes=5)
    retention_days: int | None = None  # None: forever (until an explicit purge)
    purged_before_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.retention_days is not None and self.retention_days < MIN_RETENTION_DAYS:
            raise invalid(f"at least {MIN_RETENTION_DAYS} days", "retention_days")
        if not timedelta(0) <= self.max_past <= MAX_PAST_LIMIT:
            raise invalid(f"between 0 and {MAX_PAST_LIMIT.days} days", "max_past")
        if not timedelta(0) <= self.max_future <= MAX_FUTURE_LIMIT:
            raise invalid(f"between 0 and {MAX_FUTURE_LIMIT.days} days", "max_future")


_P = MeteringPolicyRow.__table__.c
# `load_policy`'s read: the columns alone, not the ORM object (every ingestion round reads it).
_POLICY = select(
    _P.unknown_customer,
    _P.unknown_meter,
    _P.late_events,
    _P.max_past_seconds,
    _P.max_future_seconds,
    _P.retention_days,
    _P.purged_before_at,
).where(_P.tenant_id == bindparam("tenant"), _P.mode == bindparam("mode"))


def load_policy(session: Session, scope: TenantScope) -> MeteringPolicy:
    """The scope's policy as stored (changes of this session not yet flushed are not seen)."""
    params = {"tenant": scope.tenant_id, "mode": scope.mode}
    row = session.connection().execute(_POLICY, params).one_or_none()
    if row is None:
        return MeteringPolicy()
    return MeteringPolicy(
        unknown_customer=Unknown(row.unknown_customer),
        unknown_meter=Unknown(row.unknown_meter),
        late_events=LateEvents(row.late_events),
        max_past=timedelta(seconds=row.max_past_seconds),
        max_future=timedelta(seconds=row.max_future_seconds),
        retention_days=row.retention_days,
        purged_before_at=row.purged_before_at,
    )


def _row(session: Session, scope: TenantScope) -> MeteringPolicyRow | None:
    return session.scalars(
        select(MeteringPolicyRow).where(
            MeteringPolicyRow.tenant_id == scope.tenant_id, MeteringPolicyRow.mode == scope.mode
        )
    ).one_or_none()


def save_policy(session: Session, scope: TenantScope, policy: MeteringPolicy) -> None:
    row = _row(session, scope)
    if row is None:
        row = MeteringPolicyRow(id=new_id("mpol"), tenant_id=scope.tenant_id, mode=scope.mode)
        session.add(row)
    row.unknown_customer = str(policy.unknown_customer)
    row.unknown_meter = str(policy.unknown_meter)
    row.late_events = str(policy.late_events)
    row.max_past_seconds = policy.max_past // timedelta(seconds=1)
    row.max_future_seconds = policy.max_future // timedelta(seconds=1)
    row.retention_days = policy.retention_days
    row.purged_before_at = policy.purged_before_at


def update_policy(uow: UnitOfWork, **changes: Any) -> MeteringPolicy:
    """Change some of the scope's policy (fields of `MeteringPolicy`) and commit; audited as
    a change of the ``metering_policy`` row (before and after)."""
    policy = replace(load_policy(uow.session, uow.scope), **changes)
    save_policy(uow.session, uow.scope, policy)
    uow.commit()
    return policy
