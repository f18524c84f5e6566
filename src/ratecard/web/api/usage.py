"""Usage, entitlements, alerts and webhook events of a customer's metered consumption.

    GET /v1/customers/{id}/usage                      current period, per subscription and meter
    GET /v1/customers/{id}/usage/series?meter=api_calls&granularity=day
    GET /v1/customers/{id}/entitlements               every feature the customer's plan grants
    GET /v1/customers/{id}/entitlements/{feature}?requested=1     may they use it (now)?
    POST/GET /v1/alerts, GET/DELETE /v1/alerts/{id}   usage or spend thresholds
    GET /v1/webhook_events                            the outbox (e.g. ``usage_alert.triggered``)

Usage numbers come from `services.metering.usage`, the reader billing uses, and each meter's
``amount`` is the invoice line it would produce now (rounded as the invoice rounds): the
usage endpoint and the subscription's draft agree to the cent. A meter with rounding bills its
rounded ``quantity``; ``unrounded_quantity`` shows the exact aggregate beside it. Quantities and
amounts are decimal strings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Path, Query, Response
from pydantic import AwareDatetime, BaseModel, Field

from ratecard.adapters.db.models import SubscriptionRow, UsageAlertRow, WebhookOutboxRow
from ratecard.core.aggregation import MeterResult, MeterValue
from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.core.money import Money, currency, to_decimal
from ratecard.core.periods import Period
from ratecard.services.common import Input, exists
from ratecard.services.documents import ExactDecimal
from ratecard.services.metering.alerts import AlertMetric, outbox
from ratecard.services.metering.entitlements import EntitlementView
from ratecard.services.metering.priced_usage import MeterUsage, SubscriptionUsage
from ratecard.services.metering.usage_reader import Granularity
from ratecard.services.subscription_state import live_subscription
from ratecard.web.api.common import Limit, ListPage, PeriodView
from ratecard.web.deps import BillingWriter, Reader
from ratecard.web.routing import Router

router = Router(tags=["usage"])

CustomerId = Annotated[str, Path(max_length=40)]
#: The longest span a series may cover.
MAX_SERIES_SPAN = timedelta(days=366)


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


class GroupUsage(BaseModel):
    dimensions: dict[str, str | None]
    quantity: str
    unrounded_quantity: str


class MeterUsageView(BaseModel):
    charge_code: str
    meter: str
    quantity: str  # what is billed: rounded as the meter says
    unrounded_quantity: str  # the exact aggregate (the same when the meter does not round)
    events: int
    amount: str
    groups: list[GroupUsage]


class SubscriptionUsageView(BaseModel):
    subscription_id: str
    plan_code: str
    period: PeriodView
    currency: str
    amount: str
    meters: list[MeterUsageView]


class CustomerUsage(BaseModel):
    object: str = "customer_usage"
    customer_id: str
    subscriptions: list[SubscriptionUsageView]


def _groups(group_by: tuple[str, ...], result: MeterResult) -> list[GroupUsage]:
    if not group_by:
        return []
    return [
        GroupUsage(
            dimensions=dict(zip(group_by, key, strict=True)),
            quantity=format(v.value, "f"),
            unrounded_quantity=_unrounded(v),
        )
        for key, v in result.groups
    ]


def _unrounded(value: MeterValue) -> str:
    exact = value.exact if value.unrounded is None else value.unrounded
    return format(to_decimal(exact), "f")


def _meter(usage: MeterUsage) -> MeterUsageView:
    return MeterUsageView(
        charge_code=usage.charge_code,
        meter=usage.meter_code,
        quantity=format(usage.quantity, "f"),
        unrounded_quantity=_unrounded(usage.result.total),
        events=usage.result.total.event_count,
        amount=usage.line.amount.format(),
        groups=_groups(usage.group_by, usage.result),
    )


def _subscription(report: SubscriptionUsage) -> SubscriptionUsageView:
    code = report.currency
    total = Money(sum((m.line.amount.amount_minor for m in report.meters), 0), currency(code))
    return SubscriptionUsageView(
        subscription_id=report.subscription_id,
        plan_code=report.plan_code,
        period=PeriodView(start_at=report.period.start_at, end_at=report.period.end_at),
        currency=code,
        amount=total.format(),
        meters=[_meter(m) for m in report.meters],
    )


@router.get("/v1/customers/{customer_id}/usage")
def get_usage(customer_id: CustomerId, ctx: Reader) -> CustomerUsage:
    """Usage of the current period of each live subscription, per metered charge, with the
    amount it would bill so far (the invoice line it would produce now)."""
    scope = ctx.principal.scope
    reports = ctx.metering.usage.customer_usage(scope, customer_id, now=ctx.now())
    return CustomerUsage(customer_id=customer_id, subscriptions=[_subscription(r) for r in reports])


class SeriesPoint(BaseModel):
    start_at: datetime
    end_at: datetime
    quantity: str
    events: int


class UsageSeries(BaseModel):
    object: str = "usage_series"
    customer_id: str
    meter: str
    granularity: str
    period: PeriodView
    data: list[SeriesPoint]


def _current_period(sub: SubscriptionRow | None, now: datetime) -> Period:
    if sub is not None:
        return Period(sub.current_period_start_at, sub.current_period_end_at)
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return Period(start, end)


@router.get("/v1/customers/{customer_id}/usage/series")
def get_usage_series(
    customer_id: CustomerId,
    ctx: Reader,
    *,
    meter: Annotated[str, Query(max_length=100, description="The meter's code")],
    granularity: Granularity = Granularity.DAY,
    start_at: Annotated[AwareDatetime | None, Query()] = None,
    end_at: Annotated[AwareDatetime | None, Query()] = None,
) -> UsageSeries:
    """The meter's usage per hour or per day (the customer's days) over a span (default: the
    current billing period), for charts. Each bucket holds its own usage."""
    scope = ctx.principal.scope
    with ctx.reader() as uow:
        uow.customers.get(customer_id)
        now = ctx.now()
        current = _current_period(live_subscription(uow, customer_id, now), now)
    start, end = start_at or current.start_at, end_at or current.end_at
    if not start < end or end - start > MAX_SERIES_SPAN:
        raise ValidationFailed(
            [Problem(ErrorCode.INVALID_VALUE, "start before end, at most 366 days", "query.end_at")]
        )
    span = Period(start.astimezone(UTC), end.astimezone(UTC))
    with ctx.reader() as uow:
        if not exists(lambda: uow.meters.get_by_code(meter)):
            raise ValidationFailed(
                [Problem(ErrorCode.INVALID_VALUE, "no such meter", "query.meter")]
            )
    points = ctx.metering.usage.series(scope, customer_id, meter, span, granularity)
    return UsageSeries(
        customer_id=customer_id,
        meter=meter,
        granularity=str(granularity),
        period=PeriodView(start_at=span.start_at, end_at=span.end_at),
        data=[
            SeriesPoint(
                start_at=bucket.start_at,
                end_at=bucket.end_at,
                quantity=format(result.total.value, "f"),
                events=result.total.event_count,
            )
            for bucket, result in points
        ],
    )


# --- entitlements ------------------------------------------------------------------------------


class Entitlement(BaseModel):
    object: str = "entitlement"
    feature: str
    kind: str
    enabled: bool
    limit: str | None
    usage: str | None
    remaining: str | None
    on_exceed: str
    fail_open: bool

    @classmethod
    def of(cls, view: EntitlementView) -> Entitlement:
        return cls(
            feature=view.feature,
            kind=str(view.kind),
            enabled=view.enabled,
            limit=_decimal(view.limit),
            usage=_decimal(view.usage),
            remaining=_decimal(view.remaining),
            on_exceed=str(view.on_exceed),
            fail_open=view.fail_open,
        )


@router.get("/v1/customers/{customer_id}/entitlements")
def list_entitlements(customer_id: CustomerId, ctx: Reader) -> ListPage[Entitlement]:
    """Every feature of the customer's live plan, with usage and what remains this period."""
    views = ctx.metering.entitlements.list(ctx.principal.scope, customer_id)
    return ListPage[Entitlement](
        data=[Entitlement.of(v) for v in views], has_more=False, next_cursor=None
    )


class EntitlementCheck(BaseModel):
    object: str = "entitlement_check"
    customer_id: str
    feature: str
    allowed: bool
    reason: str | None
    remaining: str | None
    notify: bool
    source: str


Requested = Annotated[
    str,
    Query(
        max_length=40,
        pattern=r"^\d{1,18}(\.\d{1,18})?$",
        description="How much the caller is about to use (a decimal string)",
    ),
]


@router.get("/v1/customers/{customer_id}/entitlements/{feature}")
def check_entitlement(
    customer_id: CustomerId,
    feature: Annotated[str, Path(max_length=100)],
    ctx: Reader,
    requested: Requested = "0",
) -> EntitlementCheck:
    """May the customer use `feature` (`requested` more of it) now? Answered from the cache;
    a hard limit denies with ``limit_exceeded``, a soft one allows and sets ``notify``."""
    check = ctx.metering.entitlements.check(
        ctx.principal.scope, customer_id, feature, Decimal(requested), now=ctx.now()
    )
    return EntitlementCheck(
        customer_id=customer_id,
        feature=check.feature,
        allowed=check.allowed,
        reason=check.reason,
        remaining=_decimal(check.remaining),
        notify=check.notify,
        source=check.source,
    )


# --- alerts and the webhook outbox -------------------------------------------------------------


class AlertInput(Input):
    customer_id: str = Field(max_length=40)
    meter: str = Field(max_length=100)
    metric: AlertMetric = AlertMetric.USAGE
    threshold: ExactDecimal


class Alert(BaseModel):
    id: str
    object: str = "alert"
    customer_id: str
    meter: str
    metric: str
    threshold: str
    livemode: bool
    created_at: datetime

    @classmethod
    def of(cls, row: UsageAlertRow) -> Alert:
        return cls(
            id=row.id,
            customer_id=row.customer_id,
            meter=row.meter_code,
            metric=row.metric,
            threshold=format(row.threshold, "f"),
            livemode=row.mode == "live",
            created_at=row.created_at,
        )


@router.post("/v1/alerts", status_code=201, tags=["alerts"])
def create_alert(body: AlertInput, ctx: BillingWriter) -> Alert:
    """Watch a customer's usage or spend of one meter in the current period; each crossing
    writes one ``usage_alert.triggered`` webhook event."""
    alerts = ctx.metering.alerts
    scope = ctx.principal.scope
    try:
        alert_id = alerts.create(
            scope,
            body.customer_id,
            body.meter,
            body.metric,
            body.threshold,
            actor=ctx.principal.actor,
        )
    except ValidationFailed as failed:
        raise ValidationFailed(
            [
                Problem(p.code, p.message, f"body.{p.field}" if p.field else None)
                for p in failed.problems
            ]
        ) from None
    return Alert.of(alerts.get(scope, alert_id))


@router.get("/v1/alerts", tags=["alerts"])
def list_alerts(
    ctx: Reader,
    limit: Limit = 20,
    starting_after: Annotated[str | None, Query(max_length=40)] = None,
    customer_id: Annotated[str | None, Query(max_length=40)] = None,
) -> ListPage[Alert]:
    rows = ctx.metering.alerts.list(
        ctx.principal.scope,
        customer_id=customer_id,
        limit=limit + 1,
        starting_after=starting_after,
    )
    page = rows[:limit]
    more = len(rows) > limit
    return ListPage[Alert](
        data=[Alert.of(r) for r in page], has_more=more, next_cursor=page[-1].id if more else None
    )


AlertId = Annotated[str, Path(max_length=40)]


@router.get("/v1/alerts/{alert_id}", tags=["alerts"])
def get_alert(alert_id: AlertId, ctx: Reader) -> Alert:
    return Alert.of(ctx.metering.alerts.get(ctx.principal.scope, alert_id))


@router.delete("/v1/alerts/{alert_id}", status_code=204, tags=["alerts"])
def delete_alert(alert_id: AlertId, ctx: BillingWriter) -> Response:
    ctx.metering.alerts.delete(ctx.principal.scope, alert_id, actor=ctx.principal.actor)
    return Response(status_code=204)


class WebhookEvent(BaseModel):
    id: str
    object: str = "webhook_event"
    type: str
    payload: dict[str, Any]
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: WebhookOutboxRow) -> WebhookEvent:
        return cls(
            id=str(row.id),
            type=row.event_type,
            payload=dict(row.payload),
            created_at=row.created_at,
            delivered_at=row.delivered_at,
        )


@router.get("/v1/webhook_events", tags=["alerts"])
def list_webhook_events(
    ctx: Reader,
    limit: Limit = 20,
    starting_after: Annotated[str | None, Query(max_length=20, pattern=r"^\d{1,18}$")] = None,
    type: Annotated[str | None, Query(max_length=100)] = None,
) -> ListPage[WebhookEvent]:
    """Webhook events written for this tenant and mode (oldest first), delivered or not."""
    after = None if starting_after is None else int(starting_after)
    with ctx.reader() as uow:
        rows = outbox(uow.session, uow.scope, limit=limit + 1, after_id=after, event_type=type)
        page = [WebhookEvent.of(r) for r in rows[:limit]]
    more = len(rows) > limit
    return ListPage[WebhookEvent](
        data=page, has_more=more, next_cursor=page[-1].id if more else None
    )
