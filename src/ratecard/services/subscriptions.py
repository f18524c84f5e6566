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
which is also what `ratecard simulate` and billing runs call. The replay itself, and reads of a
subscription as it stands at an instant, are in `subscription_state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import AwareDatetime, Field, model_validator

from ratecard.adapters.db.models import SubscriptionChangeRow, SubscriptionRow
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.billing import Draft
from ratecard.core.errors import ErrorCode, Problem, RatecardError, ValidationFailed
from ratecard.core.invoicing import InvoiceLine, LineKind
from ratecard.core.subscription_model import IN_EFFECT, Effective, PlanRef
from ratecard.services import rating
from ratecard.services.catalog import sellable_version
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
    OverrideInput,
    SubscriptionOverride,
    checked_override,
)
from ratecard.services.documents import TimeZoneName
from ratecard.services.metering.lifecycle import release_held
from ratecard.services.metering.usage import SessionUsage
from ratecard.services.rating import Action, ChangeSpec
from ratecard.services.subscription_state import (
    Replay,
    as_of,
    current,
    load_replay_plan,
    refresh,
    replay_row,
)

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
    refresh(row, replay_row(uow, row), now)
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
            row = as_of(uow, stored, now)
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
    uow: UnitOfWork, replay: Replay, request: ChangeRequest, at: datetime
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
        load_replay_plan(uow, replay, plan.plan_code, plan.plan_version)
    return ChangeSpec(at, request.action, plan=plan, quantity=request.quantity, when=request.when)


def _proration_lines(drafts: Sequence[Draft], at: datetime) -> tuple[InvoiceLine, ...]:
    return tuple(
        line
        for draft in drafts
        if draft.at == at
        for line in draft.lines
        if line.kind in _PRORATION
    )


def _checked(replay: Replay, new: ChangeSpec) -> None:
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
    replay = replay_row(uow, uow.subscriptions.get(subscription_id))
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
    replay = replay_row(uow, row)
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
    refresh(row, replay, now)
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
    replay = replay_row(uow, uow.subscriptions.get(subscription_id))
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
            refresh(row, replay_row(uow, row), now)  # decide on the state at now
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
