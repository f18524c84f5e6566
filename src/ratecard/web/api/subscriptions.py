"""Subscriptions (``/v1/subscriptions``): create, change, preview, pause, cancel, migrate.

Every change goes through `services.subscriptions`, which replays the stored timeline through
`services.rating` — the path billing and ``ratecard simulate`` take — so
``POST /v1/subscriptions/{id}/preview`` returns exactly the lines the change then produces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Body, Path, Query
from pydantic import AwareDatetime, BaseModel, Field, model_validator

from ratecard.adapters.db.models import SubscriptionChangeRow, SubscriptionRow
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.money import Money, currency
from ratecard.services import subscriptions as subs
from ratecard.services.common import Code, Input
from ratecard.services.subscriptions import Action, ChangeRequest, Effective
from ratecard.web.api.common import (
    DraftView,
    Expand,
    Limit,
    LineView,
    ListPage,
    StartingAfter,
    expansions,
    page_of,
)
from ratecard.web.api.customers import Customer
from ratecard.web.api.plans import PlanVersion
from ratecard.web.deps import BillingWriter, Reader
from ratecard.web.routing import Router

router = Router(prefix="/v1/subscriptions", tags=["subscriptions"])

SubscriptionId = Annotated[str, Path(max_length=40)]
EXPANDABLE = ("customer", "plan")


class Subscription(BaseModel):
    id: str
    object: str = "subscription"
    customer_id: str
    plan_code: str
    plan_version: int
    quantity: int
    status: str
    timezone: str
    anchor_at: datetime
    current_period_start_at: datetime
    current_period_end_at: datetime
    trial_ends_at: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    pending_change: dict[str, Any] | None
    livemode: bool
    created_at: datetime
    customer: Customer | None = None
    plan: PlanVersion | None = None

    @classmethod
    def of(cls, row: SubscriptionRow) -> Subscription:
        return cls(
            id=row.id,
            customer_id=row.customer_id,
            plan_code=row.plan_code,
            plan_version=row.plan_version,
            quantity=int(row.quantity),
            status=row.status,
            timezone=row.timezone,
            anchor_at=row.anchor_at,
            current_period_start_at=row.current_period_start_at,
            current_period_end_at=row.current_period_end_at,
            trial_ends_at=row.trial_ends_at,
            cancel_at_period_end=row.cancel_at_period_end,
            canceled_at=row.canceled_at,
            pending_change=row.pending_change,
            livemode=row.mode == "live",
            created_at=row.created_at,
        )


def _view(uow: UnitOfWork, row: SubscriptionRow, embed: set[str]) -> Subscription:
    view = Subscription.of(row)
    if "customer" in embed:
        view.customer = Customer.of(uow.customers.get(row.customer_id))
    if "plan" in embed:
        view.plan = PlanVersion.of(uow.plan_versions.get_version(row.plan_code, row.plan_version))
    return view


class Lines(BaseModel):
    object: str = "line_list"
    currency: str
    total: str
    lines: list[LineView]


class ChangeOutcome(BaseModel):
    object: str = "subscription_change"
    change_id: str
    action: str
    subscription: Subscription
    currency: str
    total: str
    lines: list[LineView]


def _lines(uow: UnitOfWork, row: SubscriptionRow, lines: Any) -> tuple[str, str, list[LineView]]:
    version = uow.plan_versions.get_version(row.plan_code, row.plan_version)
    cur = currency(version.currency)
    total = Money(sum((line.amount.amount_minor for line in lines), 0), cur)
    return cur.code, total.format(), [LineView.of(line) for line in lines]


@router.post("", status_code=201)
def create_subscription(
    body: subs.SubscriptionInput, ctx: BillingWriter, expand: Expand = None
) -> Subscription:
    embed = expansions(expand, EXPANDABLE)
    with ctx.uow() as uow:
        row = subs.create_subscription(uow, body, now=ctx.now())  # commits
        view = _view(uow, row, embed)
    # after the commit, so that no check caches the state before it (until the TTL)
    ctx.metering.entitlements.invalidate(ctx.principal.scope, row.customer_id)
    return view


@router.get("")
def list_subscriptions(
    ctx: Reader,
    *,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    customer_id: Annotated[str | None, Query(max_length=40)] = None,
    plan_code: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    expand: Expand = None,
) -> ListPage[Subscription]:
    embed = expansions(expand, EXPANDABLE)
    now = ctx.now()
    with ctx.reader() as uow:
        page = subs.list_current(
            uow,
            now=now,
            limit=limit,
            starting_after=starting_after,
            customer_id=customer_id,
            plan_code=plan_code,
            status=status,
        )
        return page_of(page, lambda row: _view(uow, row, embed))


@router.get("/{subscription_id}")
def get_subscription(
    subscription_id: SubscriptionId, ctx: Reader, expand: Expand = None
) -> Subscription:
    """The subscription as it stands now (in test mode: at the test clock's time)."""
    embed = expansions(expand, EXPANDABLE)
    now = ctx.now()
    with ctx.reader() as uow:
        return _view(uow, subs.current(uow, subscription_id, now=now), embed)


def _apply(ctx: BillingWriter, subscription_id: str, request: ChangeRequest) -> ChangeOutcome:
    with ctx.uow() as uow:
        result = subs.change(uow, subscription_id, request, now=ctx.now())  # commits
        code, total, lines = _lines(uow, result.subscription, result.lines)
        outcome = ChangeOutcome(
            change_id=result.change.id,
            action=str(request.action),
            subscription=Subscription.of(result.subscription),
            currency=code,
            total=total,
            lines=lines,
        )
    # The plan (or status) changed: the cached entitlements are stale. Dropped after the
    # commit, so that a check made meanwhile cannot cache the state before it until the TTL.
    ctx.metering.entitlements.invalidate(ctx.principal.scope, result.subscription.customer_id)
    return outcome


@router.post("/{subscription_id}/preview")
def preview_change(subscription_id: SubscriptionId, body: ChangeRequest, ctx: Reader) -> Lines:
    """Exactly the lines the change would produce if applied now; nothing is written."""
    with ctx.uow() as uow:
        row = uow.subscriptions.get(subscription_id)
        lines = subs.preview(uow, subscription_id, body, now=ctx.now())
        code, total, views = _lines(uow, row, lines)
        return Lines(currency=code, total=total, lines=views)


class ChangeBody(Input):
    """A plan change (`plan_code` and/or `plan_version`) or a quantity change."""

    plan_code: Code | None = None
    plan_version: int | None = Field(default=None, ge=1, le=1_000_000)
    quantity: int | None = Field(default=None, ge=0, le=subs.MAX_QUANTITY)
    when: Effective = Effective.NOW

    @model_validator(mode="after")
    def _one_change(self) -> ChangeBody:
        plan = self.plan_code is not None or self.plan_version is not None
        if plan == (self.quantity is not None):
            raise ValueError("change either the plan (plan_code, plan_version) or the quantity")
        return self

    def request(self) -> ChangeRequest:
        if self.quantity is not None:
            return ChangeRequest(
                action=Action.CHANGE_QUANTITY, quantity=self.quantity, when=self.when
            )
        return ChangeRequest(
            action=Action.CHANGE_PLAN,
            plan_code=self.plan_code,
            plan_version=self.plan_version,
            when=self.when,
        )


@router.post("/{subscription_id}/change")
def change_subscription(
    subscription_id: SubscriptionId, body: ChangeBody, ctx: BillingWriter
) -> ChangeOutcome:
    """Change the plan or the quantity, now (prorated) or at the period end."""
    return _apply(ctx, subscription_id, body.request())


class MigrateBody(Input):
    plan_version: int = Field(ge=1, le=1_000_000)
    when: Effective = Effective.PERIOD_END


@router.post("/{subscription_id}/migrate")
def migrate_subscription(
    subscription_id: SubscriptionId, body: MigrateBody, ctx: BillingWriter
) -> ChangeOutcome:
    """Move to another version of the same plan (at the period end by default)."""
    request = ChangeRequest(
        action=Action.CHANGE_PLAN, plan_version=body.plan_version, when=body.when
    )
    return _apply(ctx, subscription_id, request)


class CancelBody(Input):
    when: Effective = Effective.PERIOD_END


@router.post("/{subscription_id}/cancel")
def cancel_subscription(
    subscription_id: SubscriptionId,
    ctx: BillingWriter,
    body: Annotated[CancelBody | None, Body()] = None,
) -> ChangeOutcome:
    """Cancel at the period end (default; can be reactivated until then) or now (credits the
    unused time)."""
    when = (body or CancelBody()).when
    return _apply(ctx, subscription_id, ChangeRequest(action=Action.CANCEL, when=when))


@router.post("/{subscription_id}/pause")
def pause_subscription(subscription_id: SubscriptionId, ctx: BillingWriter) -> ChangeOutcome:
    return _apply(ctx, subscription_id, ChangeRequest(action=Action.PAUSE))


@router.post("/{subscription_id}/resume")
def resume_subscription(subscription_id: SubscriptionId, ctx: BillingWriter) -> ChangeOutcome:
    return _apply(ctx, subscription_id, ChangeRequest(action=Action.RESUME))


@router.post("/{subscription_id}/reactivate")
def reactivate_subscription(subscription_id: SubscriptionId, ctx: BillingWriter) -> ChangeOutcome:
    """Withdraw a cancel scheduled for the period end."""
    return _apply(ctx, subscription_id, ChangeRequest(action=Action.REACTIVATE))


class TimelineEntry(BaseModel):
    id: str
    seq: int
    command: str
    payload: dict[str, Any]
    effective_at: datetime
    recorded_at: datetime
    actor: str

    @classmethod
    def of(cls, row: SubscriptionChangeRow) -> TimelineEntry:
        return cls(
            id=row.id,
            seq=row.seq,
            command=row.command,
            payload=dict(row.payload),
            effective_at=row.effective_at,
            recorded_at=row.recorded_at,
            actor=row.actor,
        )


@router.get("/{subscription_id}/timeline")
def get_timeline(subscription_id: SubscriptionId, ctx: Reader) -> ListPage[TimelineEntry]:
    """The subscription's start and every change, in order (append-only)."""
    with ctx.reader() as uow:
        uow.subscriptions.get(subscription_id)
        rows = uow.subscription_changes.timeline(subscription_id)
        return ListPage[TimelineEntry](
            data=[TimelineEntry.of(r) for r in rows], has_more=False, next_cursor=None
        )


@router.get("/{subscription_id}/drafts")
def get_drafts(
    subscription_id: SubscriptionId,
    ctx: Reader,
    until_at: Annotated[AwareDatetime | None, Query()] = None,
) -> ListPage[DraftView]:
    """Every draft invoice of the subscription up to `until_at` (default now), before totals."""
    with ctx.reader() as uow:
        now = ctx.now()
        found = subs.drafts(uow, subscription_id, until_at=until_at or now, now=now)
        return ListPage[DraftView](
            data=[DraftView.of(d) for d in found], has_more=False, next_cursor=None
        )
