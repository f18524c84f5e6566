"""Subscription use cases on the stored timeline, through the one rating path.

A subscription is its start plus an append-only list of timestamped changes
(``subscription_changes``). Every change is checked by replaying the whole timeline through the
pure state machine (`core.subscriptions`, via `services.rating`), appended, and the row's state
(status, period, pending change, cancel) is refreshed from the replay::

    >>> upgrade = ChangeRequest(action=Action.CHANGE_PLAN, plan_code="max")  # doctest: +SKIP
    >>> result = change(uow, "sub_1", upgrade, now=jan_15)
    >>> [(l.description, l.amount.format()) for l in result.lines]
    [('Unused time on Pro ...', '-54.84'), ('Remaining time on Max ...', '164.52')]

`preview` returns exactly those lines without writing anything: both call `services.rating`,
which is also what `ratecard simulate` and billing runs call.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import AwareDatetime, Field, model_validator
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ratecard.adapters.db.models import PlanVersionRow, SubscriptionChangeRow, SubscriptionRow
from ratecard.adapters.db.repositories import PlanVersionRepository
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.billing import Draft
from ratecard.core.catalog import Plan
from ratecard.core.errors import ErrorCode, Problem, RatecardError, ValidationFailed
from ratecard.core.invoicing import InvoiceLine, LineKind
from ratecard.core.subscriptions import ACCRUING, IN_EFFECT, Effective, PlanRef, Subscription
from ratecard.services import rating
from ratecard.services.catalog import plan_of, sellable_version
from ratecard.services.common import (
    MAX_LIMIT,
    Code,
    Input,
    ObjectId,
    Page,
    check_cursor,
    conventions_of,
    refuse,
    tenant_of,
)
from ratecard.services.customers import (
    Override,
    OverrideInput,
    SubscriptionOverride,
    apply_overrides,
    checked_override,
)
from ratecard.services.documents import TimeZoneName
from ratecard.services.metering.lifecycle import release_held
from ratecard.services.metering.usage import SessionUsage
from ratecard.services.rating import Action, ChangeSpec, SubscriptionSpec

__all__ = [
    "Action",
    "ChangeRequest",
    "ChangeResult",
    "Effective",
    "SubscriptionInput",
    "change",
    "create_subscription",
    "current",
    "drafts",
    "list_current",
    "migrate_plan",
    "preview",
]

MAX_QUANTITY = 1_000_000
MAX_OVERRIDES = 20
#: How far ahead `drafts` may look.
MAX_LOOKAHEAD = timedelta(days=3 * 366)
_PRORATION = frozenset({LineKind.PRORATION_CREDIT, LineKind.PRORATION_DEBIT})


class SubscriptionInput(Input):
    customer_id: ObjectId
    plan_code: Code
    plan_version: int | None = Field(default=None, ge=1, le=1_000_000)
    quantity: int = Field(default=1, ge=0, le=MAX_QUANTITY)
    start_at: AwareDatetime | None = None
    trial_days: int | None = Field(default=None, ge=0, le=730)
    timezone: TimeZoneName | None = Field(default=None, max_length=64)
    calendar: bool = False
    price_overrides: list[OverrideInput] = Field(
        default_factory=list,
        max_length=MAX_OVERRIDES,
        description="Price overrides for this subscription only (the shape of a customer's "
        "price override); they apply over the customer's own",
    )


class ChangeRequest(Input):
    """One change to a subscription; which fields apply depends on ``action``."""

    action: Action
    plan_code: Code | None = None
    plan_version: int | None = Field(default=None, ge=1, le=1_000_000)
    quantity: int | None = Field(default=None, ge=0, le=MAX_QUANTITY)
    when: Effective = Effective.NOW

    @model_validator(mode="after")
    def _fields_for_action(self) -> ChangeRequest:
        plan = self.plan_code is not None or self.plan_version is not None
        if self.action is Action.CHANGE_PLAN and not plan:
            raise ValueError("change_plan needs plan_code or plan_version")
        if self.action is Action.CHANGE_QUANTITY and self.quantity is None:
            raise ValueError("change_quantity needs quantity")
        if self.action is not Action.CHANGE_PLAN and plan:
            raise ValueError(f"plan_code and plan_version do not apply to {self.action}")
        if self.action is not Action.CHANGE_QUANTITY and self.quantity is not None:
            raise ValueError(f"quantity does not apply to {self.action}")
        if self.action in (Action.PAUSE, Action.RESUME, Action.REACTIVATE) and (
            self.when is not Effective.NOW
        ):
            raise ValueError(f"{self.action} takes effect now")
        return self


@dataclass(frozen=True, slots=True)
class ChangeResult:
    subscription: SubscriptionRow
    change: SubscriptionChangeRow
    lines: tuple[InvoiceLine, ...]


@dataclass(slots=True)
class _Replay:
    row: SubscriptionRow
    spec: SubscriptionSpec
    changes: list[ChangeSpec]
    plans: dict[tuple[str, int], Plan]
    overrides: tuple[SubscriptionOverride, ...] = ()


def _plan(uow: UnitOfWork, replay: _Replay, version: PlanVersionRow) -> Plan:
    """The plan as this subscription pays for it: the customer's price overrides applied,
    then the subscription's own."""
    customer = uow.price_overrides.for_customer(replay.row.customer_id)
    overrides: list[Override] = [*customer, *replay.overrides]
    return plan_of(version, apply_overrides(version.document, overrides))


def _load_plan(uow: UnitOfWork, replay: _Replay, code: str, version: int) -> None:
    if (code, version) not in replay.plans:
        row = uow.plan_versions.get_version(code, version)
        replay.plans[(code, version)] = _plan(uow, replay, row)


def _change_spec(row: Any) -> ChangeSpec:
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


def _replay(uow: UnitOfWork, row: SubscriptionRow) -> _Replay:
    timeline = list(uow.subscription_changes.timeline(row.id))
    replay = _replay_of(row, timeline)
    _load_plan(uow, replay, replay.spec.plan.plan_code, replay.spec.plan.plan_version)
    for item in replay.changes:
        if item.plan is not None:
            _load_plan(uow, replay, item.plan.plan_code, item.plan.plan_version)
    return replay


def _replay_of(row: SubscriptionRow, timeline: Sequence[Any]) -> _Replay:
    """The replay of the row's timeline, its plans not loaded yet."""
    spec, changes = _timeline_of(row.id, timeline)
    start = timeline[0].payload
    overrides = tuple(
        SubscriptionOverride(o["plan_code"], o["charge_code"], dict(o["price"]))
        for o in start.get("price_overrides", [])
    )
    return _Replay(row, spec, changes, {}, overrides)


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
    return spec, [_change_spec(c) for c in timeline[1:]]


def _refresh(row: SubscriptionRow, replay: _Replay, now: datetime) -> Subscription:
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


def create_subscription(
    uow: UnitOfWork, data: SubscriptionInput, *, now: datetime
) -> SubscriptionRow:
    customer = uow.customers.find(data.customer_id)
    if customer is None:
        raise refuse(f"no customer {data.customer_id}", "body.customer_id")
    version = sellable_version(uow, data.plan_code, data.plan_version)
    if version.currency != customer.currency:
        raise ValidationFailed(
            [
                Problem(
                    ErrorCode.CURRENCY_MISMATCH,
                    f"plan {version.plan_code} bills in {version.currency}, "
                    f"the customer in {customer.currency}",
                    "body.plan_code",
                )
            ]
        )
    overrides = _overrides(uow, data.price_overrides)
    start_at = data.start_at or now
    timezone = data.timezone or customer.timezone
    row = uow.subscriptions.add(
        SubscriptionRow(
            customer_id=customer.id,
            plan_code=version.plan_code,
            plan_version=version.version,
            quantity=Decimal(data.quantity),
            status="active",
            anchor_at=start_at,
            timezone=timezone,
            current_period_start_at=start_at,
            current_period_end_at=start_at,
            created_at=now,
        )
    )
    uow.session.flush()
    uow.subscription_changes.append(
        row.id,
        "start",
        {
            "plan_code": version.plan_code,
            "plan_version": version.version,
            "quantity": data.quantity,
            "timezone": timezone,
            "calendar": data.calendar,
            "trial_days": data.trial_days,
            "price_overrides": [
                {"plan_code": o.plan_code, "charge_code": o.charge_code, "price": o.price}
                for o in overrides
            ],
        },
        effective_at=start_at,
        recorded_at=now,
        actor=uow.actor,
    )
    _refresh(row, _replay(uow, row), now)
    uow.commit()
    if release_held(uow):  # events sent for this subscription before it existed
        uow.commit()
    return row


def _overrides(uow: UnitOfWork, data: Sequence[OverrideInput]) -> tuple[SubscriptionOverride, ...]:
    """The subscription's own overrides, each checked; every problem at once."""
    problems: list[Problem] = []
    found: list[SubscriptionOverride] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(data):
        field = f"body.price_overrides[{i}]"
        if (item.plan_code, item.charge_code) in seen:
            problems.append(Problem(ErrorCode.INVALID_VALUE, "overridden twice", field))
            continue
        seen.add((item.plan_code, item.charge_code))
        try:
            found.append(checked_override(uow, item, field))
        except ValidationFailed as failed:
            problems.extend(failed.problems)
    if problems:
        raise ValidationFailed(problems)
    return tuple(found)


def current(uow: UnitOfWork, subscription_id: str, *, now: datetime) -> SubscriptionRow:
    """The subscription as it stands at ``now``: its timeline replayed (renewals, a cancel or a
    pending change that took effect, a trial that ended). Nothing is written: the refreshed row
    is detached from the session."""
    return _as_of(uow, uow.subscriptions.get(subscription_id), now)


def _as_of(uow: UnitOfWork, row: SubscriptionRow, now: datetime) -> SubscriptionRow:
    replay = _replay(uow, row)
    with uow.session.no_autoflush:
        _refresh(row, replay, now)
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
    """`_as_of` through `state_at`: the row, detached, with its state at ``now``."""
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
    `_as_of` gives."""
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


def list_current(
    uow: UnitOfWork,
    *,
    now: datetime,
    limit: int,
    starting_after: str | None,
    customer_id: str | None = None,
    plan_code: str | None = None,
    status: str | None = None,
) -> Page[SubscriptionRow]:
    """A page of subscriptions as they stand at ``now``, filtered on that state."""
    assert 0 < limit <= MAX_LIMIT
    check_cursor(uow.subscriptions.id_prefix, starting_after)
    filtered = plan_code is not None or status is not None
    batch_size = MAX_LIMIT if filtered else limit + 1
    equal = {} if customer_id is None else {"customer_id": customer_id}
    found: list[SubscriptionRow] = []
    after = starting_after
    while len(found) <= limit:
        batch = uow.subscriptions.list(limit=batch_size, after_id=after, **equal)
        for stored in batch:
            row = _as_of(uow, stored, now)
            if plan_code not in (None, row.plan_code) or status not in (None, row.status):
                continue
            found.append(row)
            if len(found) > limit:
                break
        if len(batch) < batch_size:
            break
        after = batch[-1].id
    return Page(found[:limit], len(found) > limit)


def _new_change(
    uow: UnitOfWork, replay: _Replay, request: ChangeRequest, at: datetime
) -> ChangeSpec:
    plan = None
    if request.action is Action.CHANGE_PLAN:
        code = request.plan_code or replay.row.plan_code
        version = sellable_version(uow, code, request.plan_version)
        customer = uow.customers.get(replay.row.customer_id)
        if version.currency != customer.currency:
            raise ValidationFailed(
                [
                    Problem(
                        ErrorCode.CURRENCY_MISMATCH,
                        f"plan {code} bills in {version.currency}, not {customer.currency}",
                        "body.plan_code",
                    )
                ]
            )
        plan = PlanRef(version.plan_code, version.version)
        _load_plan(uow, replay, plan.plan_code, plan.plan_version)
    return ChangeSpec(at, request.action, plan=plan, quantity=request.quantity, when=request.when)


def _proration_lines(drafts: Sequence[Draft], at: datetime) -> tuple[InvoiceLine, ...]:
    return tuple(
        line
        for draft in drafts
        if draft.at == at
        for line in draft.lines
        if line.kind in _PRORATION
    )


def _checked(replay: _Replay, new: ChangeSpec) -> None:
    """Replay with ``new`` appended; a refused change names the request, not an index."""
    try:
        rating.timeline(replay.spec, [*replay.changes, new], replay.plans, new.at)
    except ValidationFailed as failed:
        raise ValidationFailed(
            [Problem(p.code, p.message, _request_field(p.field)) for p in failed.problems]
        ) from None


def _request_field(field: str | None) -> str | None:
    if field is not None and field.startswith("commands["):
        return "at"
    return field


def preview(
    uow: UnitOfWork, subscription_id: str, request: ChangeRequest, *, now: datetime
) -> tuple[InvoiceLine, ...]:
    """The lines ``request`` would produce now; nothing is written."""
    replay = _replay(uow, uow.subscriptions.get(subscription_id))
    new = _new_change(uow, replay, request, now)
    _checked(replay, new)
    conventions = conventions_of(tenant_of(uow))
    return rating.preview_change(
        replay.spec,
        replay.changes,
        new,
        replay.plans,
        usage=SessionUsage(uow.session, uow.scope, replay.row.customer_id),
        conventions=conventions,
    )


def change(
    uow: UnitOfWork, subscription_id: str, request: ChangeRequest, *, now: datetime
) -> ChangeResult:
    """Apply ``request`` now: append it to the timeline and refresh the row."""
    row = uow.subscriptions.get_for_update(subscription_id)
    result = _apply(uow, row, request, now=now)
    uow.commit()
    return result


def _apply(
    uow: UnitOfWork, row: SubscriptionRow, request: ChangeRequest, *, now: datetime
) -> ChangeResult:
    replay = _replay(uow, row)
    new = _new_change(uow, replay, request, now)
    _checked(replay, new)
    payload: dict[str, Any] = {"when": str(new.when)}
    if new.plan is not None:
        payload["plan_code"] = new.plan.plan_code
        payload["plan_version"] = new.plan.plan_version
    if new.quantity is not None:
        payload["quantity"] = new.quantity
    appended = uow.subscription_changes.append(
        row.id, str(new.action), payload, effective_at=now, recorded_at=now, actor=uow.actor
    )
    replay.changes.append(new)
    _refresh(row, replay, now)
    applied = rating.subscription_drafts(
        replay.spec,
        replay.changes,
        replay.plans,
        usage=rating.no_usage,  # only the proration lines are kept: usage does not matter
        conventions=conventions_of(tenant_of(uow)),
        until_at=now,
    )
    return ChangeResult(row, appended, _proration_lines(applied, now))


def drafts(
    uow: UnitOfWork, subscription_id: str, *, until_at: datetime, now: datetime
) -> list[Draft]:
    """Every draft invoice of the stored timeline up to ``until_at``, as billing would rate it."""
    if until_at > now + MAX_LOOKAHEAD:
        raise refuse("at most three years ahead", "query.until_at")
    replay = _replay(uow, uow.subscriptions.get(subscription_id))
    if until_at < replay.spec.start_at:
        return []
    return rating.subscription_drafts(
        replay.spec,
        replay.changes,
        replay.plans,
        usage=SessionUsage(uow.session, uow.scope, replay.row.customer_id),
        conventions=conventions_of(tenant_of(uow)),
        until_at=until_at,
    )


@dataclass(frozen=True, slots=True)
class MigrationResult:
    subscription_id: str
    customer_id: str  # whose entitlements change with it (`web.api.plans` drops their cache)
    migrated: bool
    code: str | None = None
    message: str | None = None


def migrate_plan(
    uow: UnitOfWork,
    plan_code: str,
    *,
    to_version: int,
    from_version: int | None,
    when: Effective,
    now: datetime,
) -> list[MigrationResult]:
    """Move every live subscription of ``plan_code`` (optionally of one version) to a version.

    One transaction; each subscription that cannot move (e.g. paused) is reported and left as
    it is, the others move.
    """
    uow.plans.get_by_code(plan_code)
    sellable_version(uow, plan_code, to_version)
    request = ChangeRequest(
        action=Action.CHANGE_PLAN, plan_code=plan_code, plan_version=to_version, when=when
    )
    live = {str(status) for status in IN_EFFECT}
    results: list[MigrationResult] = []
    after: str | None = None
    while True:
        batch = uow.subscriptions.list(limit=500, after_id=after, plan_code=plan_code)
        if not batch:
            break
        after = batch[-1].id
        for row in batch:
            _refresh(row, _replay(uow, row), now)  # decide on the state at now
            pending = (row.pending_change or {}).get("plan_version")
            if row.status not in live or to_version in (row.plan_version, pending):
                continue
            if from_version is not None and row.plan_version != from_version:
                continue
            try:
                _apply(uow, row, request, now=now)  # checks everything before it writes
            except RatecardError as error:
                results.append(
                    MigrationResult(row.id, row.customer_id, False, str(error.code), error.message)
                )
                continue
            results.append(MigrationResult(row.id, row.customer_id, True))
    uow.commit()
    return results
