"""Rating one subscription: the single path from a subscription and its changes to invoices.

Production billing, the API's proration preview and `ratecard simulate` all come through here,
so a change previewed, applied and simulated produces the same lines::

    spec = SubscriptionSpec("sub_1", PlanRef("pro", 1), start_at, quantity=3, timezone="UTC")
    drafts = subscription_drafts(spec, changes, plans, usage=usage, conventions=conv,
                                 until_at=end_at)
    lines = preview_change(spec, changes, new_change, plans, usage=usage, conventions=conv)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from ratecard.core.billing import (
    BillingConventions,
    Draft,
    PlanBook,
    UsageSource,
    bill_timeline,
)
from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.core.invoicing import InvoiceLine, LineKind
from ratecard.core.periods import add_interval
from ratecard.core.pricing import Usage
from ratecard.core.subscription_model import (
    Cancel,
    ChangePlan,
    ChangeQuantity,
    Command,
    Effective,
    Pause,
    PlanRef,
    Reactivate,
    Resume,
    Start,
    Terms,
)
from ratecard.core.subscriptions import Timeline, run


class Action(StrEnum):
    CHANGE_PLAN = "change_plan"
    CHANGE_QUANTITY = "change_quantity"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    REACTIVATE = "reactivate"


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    id: str
    plan: PlanRef
    start_at: datetime
    quantity: int = 1
    timezone: str = "UTC"
    calendar: bool = False
    trial_days: int | None = None  # None: the plan's trial
    anchor_at: datetime | None = None  # a billing day other than the start (or trial end)
    minimum_term_end_at: datetime | None = None  # a contract: no cancel-now before this
    auto_renew: bool = True  # at the term end: renew (evergreen) or end


@dataclass(frozen=True, slots=True)
class ChangeSpec:
    at: datetime
    action: Action
    plan: PlanRef | None = None
    quantity: int | None = None
    when: Effective = Effective.NOW


def _command(change: ChangeSpec, plans: PlanBook) -> Command:
    if change.action is Action.CHANGE_PLAN:
        assert change.plan is not None
        interval = plans[(change.plan.plan_code, change.plan.plan_version)].interval
        return ChangePlan(change.at, change.plan, interval=interval, effective=change.when)
    if change.action is Action.CHANGE_QUANTITY:
        assert change.quantity is not None
        return ChangeQuantity(change.at, change.quantity, effective=change.when)
    if change.action is Action.PAUSE:
        return Pause(change.at)
    if change.action is Action.RESUME:
        return Resume(change.at)
    if change.action is Action.CANCEL:
        return Cancel(change.at, effective=change.when)
    return Reactivate(change.at)


def start_command(spec: SubscriptionSpec, plans: PlanBook) -> Start:
    plan = plans[(spec.plan.plan_code, spec.plan.plan_version)]
    trial_days = plan.trial_days if spec.trial_days is None else spec.trial_days
    trial_ends_at = spec.start_at + timedelta(days=trial_days) if trial_days else None
    return Start(
        spec.start_at,
        spec.plan,
        spec.quantity,
        plan.interval,
        spec.timezone,
        calendar=spec.calendar,
        trial_ends_at=trial_ends_at,
        anchor_at=spec.anchor_at,
        terms=(
            Terms(spec.minimum_term_end_at, auto_renew=spec.auto_renew)
            if spec.minimum_term_end_at is not None
            else None
        ),
    )


def horizon(until_at: datetime, plans: PlanBook) -> datetime:
    """Far enough past `until_at` that every period holding it has ended."""
    latest = until_at
    for plan in plans.values():
        latest = max(latest, add_interval(until_at, plan.interval, 1, ZoneInfo("UTC")))
    return latest + timedelta(days=2)


def timeline(
    spec: SubscriptionSpec, changes: Sequence[ChangeSpec], plans: PlanBook, until_at: datetime
) -> Timeline:
    """Replay the subscription; a change that is not allowed names its index in `changes`."""
    commands = [_command(change, plans) for change in changes]
    return run(start_command(spec, plans), commands, horizon(until_at, plans))


def subscription_drafts(
    spec: SubscriptionSpec,
    changes: Sequence[ChangeSpec],
    plans: PlanBook,
    *,
    usage: UsageSource,
    conventions: BillingConventions,
    until_at: datetime,
) -> list[Draft]:
    """Every draft invoice of the subscription with an instant at or before `until_at`."""
    replayed = timeline(spec, changes, plans, until_at)
    return bill_timeline(
        replayed, plans, usage, conventions, calendar=spec.calendar, until_at=until_at
    )


_PRORATION = frozenset({LineKind.PRORATION_CREDIT, LineKind.PRORATION_DEBIT})


def preview_change(
    spec: SubscriptionSpec,
    changes: Sequence[ChangeSpec],
    change: ChangeSpec,
    plans: PlanBook,
    *,
    usage: UsageSource,
    conventions: BillingConventions,
) -> tuple[InvoiceLine, ...]:
    """Exactly the proration lines `change` would produce, applied after `changes`."""
    if changes and change.at < changes[-1].at:
        raise ValidationFailed(
            [Problem(ErrorCode.COMMAND_OUT_OF_ORDER, "a change cannot precede the last one", "at")]
        )
    drafts = subscription_drafts(
        spec, [*changes, change], plans, usage=usage, conventions=conventions, until_at=change.at
    )
    return tuple(
        line
        for draft in drafts
        if draft.at == change.at
        for line in draft.lines
        if line.kind in _PRORATION
    )


def no_usage(meter_code: str, span: object, with_values: bool) -> Usage:
    """A usage source for subscriptions without metered charges (and for previews)."""
    return Usage(Decimal(0))


def utc(at: datetime) -> datetime:
    return at.astimezone(UTC)
