"""A subscription's state, replayed from its timeline: the start and the append-only changes
run through the pure state machine (`core.subscriptions`, via `services.rating`).

    >>> row = current(uow, "sub_1", now=feb_10)                              # doctest: +SKIP
    >>> (row.status, row.current_period_start_at.date())                    # doctest: +SKIP
    ('active', datetime.date(2024, 2, 1))

A row keeps the state it had when last written; a read at a later instant replays the timeline
(`current`, `as_of`), nothing written. Usage reads only the state (`state_at`): one statement
for the timeline, plans parsed once per process, no price overrides.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ratecard.adapters.db.models import PlanVersionRow, SubscriptionChangeRow, SubscriptionRow
from ratecard.adapters.db.repositories import PlanVersionRepository
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.catalog import Plan
from ratecard.core.subscription_model import ACCRUING, Effective, PlanRef, Subscription
from ratecard.services import rating
from ratecard.services.catalog import plan_of
from ratecard.services.customers import (
    Override,
    SubscriptionOverride,
    apply_overrides,
)
from ratecard.services.rating import Action, ChangeSpec, SubscriptionSpec


@dataclass(slots=True)
class Replay:
    row: SubscriptionRow
    spec: SubscriptionSpec
    changes: list[ChangeSpec]
    plans: dict[tuple[str, int], Plan]
    overrides: tuple[SubscriptionOverride, ...] = ()


def _plan(uow: UnitOfWork, replay: Replay, version: PlanVersionRow) -> Plan:
    """The plan as this subscription pays for it: the customer's price overrides applied,
    then the subscription's own."""
    customer = uow.price_overrides.for_customer(replay.row.customer_id)
    overrides: list[Override] = [*customer, *replay.overrides]
    return plan_of(version, apply_overrides(version.document, overrides))


def load_replay_plan(uow: UnitOfWork, replay: Replay, code: str, version: int) -> None:
    if (code, version) not in replay.plans:
        row = uow.plan_versions.get_version(code, version)
        replay.plans[(code, version)] = _plan(uow, replay, row)


def change_spec(row: Any) -> ChangeSpec:
    """A change row (or a row of its columns) as the state machine takes it."""
    payload = row.payload
    plan = None
    if payload.get("plan_code") is not None:
        plan = PlanRef(payload["plan_code"], int(payload["plan_version"]))
    quantity = payload.get("quantity")
    return ChangeSpec(
        at=row.effective_at,
        action=Action(row.command),
        plan=plan,
        quantity=None if quantity is None else int(quantity),
        when=Effective(payload.get("when", "now")),
    )


def replay_row(uow: UnitOfWork, row: SubscriptionRow) -> Replay:
    timeline = list(uow.subscription_changes.timeline(row.id))
    replay = _replay_of(row, timeline)
    load_replay_plan(uow, replay, replay.spec.plan.plan_code, replay.spec.plan.plan_version)
    for item in replay.changes:
        if item.plan is not None:
            load_replay_plan(uow, replay, item.plan.plan_code, item.plan.plan_version)
    return replay


def _replay_of(row: SubscriptionRow, timeline: Sequence[Any]) -> Replay:
    """The replay of the row's timeline, its plans not loaded yet."""
    spec, changes = _timeline_of(row.id, timeline)
    start = timeline[0].payload
    overrides = tuple(
        SubscriptionOverride(o["plan_code"], o["charge_code"], dict(o["price"]))
        for o in start.get("price_overrides", [])
    )
    return Replay(row, spec, changes, {}, overrides)


def _timeline_of(
    subscription_id: str, timeline: Sequence[Any]
) -> tuple[SubscriptionSpec, list[ChangeSpec]]:
    """A subscription's start and changes, from its timeline's rows (change rows, or rows of
    those columns), in order."""
    assert timeline and timeline[0].command == "start", f"{subscription_id} has no start"
    start = timeline[0].payload
    spec = SubscriptionSpec(
        id=subscription_id,
        plan=PlanRef(start["plan_code"], int(start["plan_version"])),
        start_at=timeline[0].effective_at,
        quantity=int(start["quantity"]),
        timezone=start["timezone"],
        calendar=bool(start.get("calendar", False)),
        trial_days=start.get("trial_days"),
    )
    return spec, [change_spec(c) for c in timeline[1:]]


def refresh(row: SubscriptionRow, replay: Replay, now: datetime) -> Subscription:
    """Set the row's state to the state machine's state at ``now`` (or at the start)."""
    state = _state(replay.spec, replay.changes, replay.plans, now)
    _assign(row, state)
    return state


def _state(
    spec: SubscriptionSpec,
    changes: Sequence[ChangeSpec],
    plans: dict[tuple[str, int], Plan],
    now: datetime,
) -> Subscription:
    """The state machine's state at ``now`` (or at the start)."""
    at = max(now, spec.start_at)
    return rating.timeline(spec, changes, plans, at).state_at(at)


def _assign(row: SubscriptionRow, state: Subscription) -> None:
    """Write `state` into the row's columns."""
    row.status = str(state.status)
    row.plan_code, row.plan_version = state.plan.plan_code, state.plan.plan_version
    row.quantity = Decimal(state.quantity)
    row.anchor_at = state.anchor_at
    row.current_period_start_at = state.current_period.start_at
    row.current_period_end_at = state.current_period.end_at
    row.trial_ends_at = state.trial_ends_at
    row.cancel_at_period_end = state.cancel_at is not None
    row.canceled_at = state.ended_at
    pending: dict[str, Any] = {}
    if state.pending_plan is not None:
        pending["plan_code"] = state.pending_plan.plan_code
        pending["plan_version"] = state.pending_plan.plan_version
    if state.pending_quantity is not None:
        pending["quantity"] = state.pending_quantity
    if pending:
        pending["effective_at"] = state.current_period.end_at.isoformat()
    row.pending_change = pending or None


def current(uow: UnitOfWork, subscription_id: str, *, now: datetime) -> SubscriptionRow:
    """The subscription as it stands at ``now``: its timeline replayed (renewals, a cancel or a
    pending change that took effect, a trial that ended). Nothing is written: the refreshed row
    is detached from the session."""
    return as_of(uow, uow.subscriptions.get(subscription_id), now)


def as_of(uow: UnitOfWork, row: SubscriptionRow, now: datetime) -> SubscriptionRow:
    replay = replay_row(uow, row)
    with uow.session.no_autoflush:
        refresh(row, replay, now)
    uow.session.expunge(row)
    return row


def accruing_at(uow: UnitOfWork, row: SubscriptionRow, now: datetime) -> SubscriptionRow | None:
    """A subscription stored as accruing, as it accrues at ``now``: the row itself while its
    stored period lasts; past its end (a renewal, or a change or cancel due at the boundary,
    that nothing has written yet), its timeline replayed to ``now`` (detached, nothing
    written); None if it accrues no longer."""
    if now < row.current_period_end_at:
        return row
    fresh = _state_as_of(uow, row, now)
    return fresh if fresh.status in ACCRUING else None


def _state_as_of(uow: UnitOfWork, row: SubscriptionRow, now: datetime) -> SubscriptionRow:
    """`as_of` through `state_at`: the row, detached, with its state at ``now``."""
    state = state_at(uow.session, uow.scope, row.id, now)
    with uow.session.no_autoflush:
        _assign(row, state)
    uow.session.expunge(row)
    return row


def state_at(
    session: Session, scope: TenantScope, subscription_id: str, now: datetime
) -> Subscription:
    """The subscription's state at ``now`` (status, plan, period, pending change), as usage
    reads it after a renewal nothing has written: one statement for the timeline, its plans
    parsed once per process (`_state_plan`) and without price overrides, which change prices
    and never a period's dates. `tests/e2e/test_usage_across_renewal.py` checks it gives what
    `as_of` gives."""
    params = {"tenant": scope.tenant_id, "mode": scope.mode, "subscription": subscription_id}
    spec, changes = _timeline_of(subscription_id, session.execute(_TIMELINE, params).all())
    plans: dict[tuple[str, int], Plan] = {}
    for ref in [spec.plan, *(c.plan for c in changes if c.plan is not None)]:
        key = (ref.plan_code, ref.plan_version)
        if key not in plans:
            plans[key] = _state_plan(session, scope, *key)
    return _state(spec, changes, plans, now)


_SC = SubscriptionChangeRow.__table__.c
_TIMELINE = (
    select(_SC.command, _SC.effective_at, _SC.payload)
    .where(
        _SC.tenant_id == bindparam("tenant"),
        _SC.mode == bindparam("mode"),
        _SC.subscription_id == bindparam("subscription"),
    )
    .order_by(_SC.seq)
)

# Parsed plans of versions that can no longer change (published or archived: a version's
# document is never edited once it can be sold), per engine and scope.
_STATE_PLANS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, str, int], Plan]] = (
    weakref.WeakKeyDictionary()
)
_STATE_PLANS_MAX = 4096  # then the cache starts over


def _state_plan(session: Session, scope: TenantScope, plan_code: str, version: int) -> Plan:
    """The plan of a version as the state machine reads it (its interval, its trial), without
    any price override: parsed once per process."""
    cache = _STATE_PLANS.setdefault(session.get_bind(), {})
    key = (scope.tenant_id, str(scope.mode), plan_code, version)
    plan = cache.get(key)
    if plan is None:
        row = PlanVersionRepository(session, scope).get_version(plan_code, version)
        plan = plan_of(row)
        if row.status != "draft":
            if len(cache) >= _STATE_PLANS_MAX:
                cache.clear()
            cache[key] = plan
    return plan


def accruing_subscriptions(
    uow: UnitOfWork, customer_id: str, now: datetime
) -> list[SubscriptionRow]:
    """The customer's subscriptions that accrue usage at ``now`` (`accruing_at`), by id."""
    stored = uow.session.scalars(
        select(SubscriptionRow)
        .where(
            SubscriptionRow.tenant_id == uow.scope.tenant_id,
            SubscriptionRow.mode == uow.scope.mode,
            SubscriptionRow.customer_id == customer_id,
            SubscriptionRow.status.in_(ACCRUING),
        )
        .order_by(SubscriptionRow.id)
    )
    found = (accruing_at(uow, row, now) for row in list(stored))
    return [row for row in found if row is not None]


def live_subscription(uow: UnitOfWork, customer_id: str, now: datetime) -> SubscriptionRow | None:
    """The customer's first subscription (by creation) that accrues usage at ``now``: the one
    entitlements, alerts and usage charts read."""
    return min(
        accruing_subscriptions(uow, customer_id, now),
        key=lambda row: (row.created_at, row.id),
        default=None,
    )
