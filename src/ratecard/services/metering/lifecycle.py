"""What happens to events after ingestion: closing invoiced usage, late adjustments, held
events, and the retention purge.

    >>> close_usage(uow, customer_id, period)                     # billing, at finalization
    >>> lines = late_adjustments(uow, customer_id, plan, at=now)  # on the next invoice
    >>> release_held(uow)                                         # a customer or meter appeared

Late events. When an invoice is finalized its usage period is *closed* (`close_usage`, recording
the instant). An event for a closed period that arrives afterwards is late: with the tenant's
default policy it is kept, and the next invoice carries an adjustment line per metered charge of
``rate(usage as of now) - rate(usage as billed)``, where "as billed" is the usage of the events
received by the closing (or the last adjustment) — replayable from raw events, never an edit of
the finalized invoice. Before the closing (the invoice grace period) a late-arriving event simply
updates the draft. With the ``reject`` policy such events are refused with ``late_event``.

Held events. An event for an unknown customer or meter under the ``hold`` policy is stored
with no customer and counted by `release_held` once both exist — per event, so switching the
policy back to ``reject`` refuses new unknown events but leaves the held ones waiting (they are
listed by ``GET /v1/events?status=held``) and still releases them.

Retention. Raw events are kept until `purge_events` is asked to drop those received before a
cutoff, which must lie at least `MIN_RETENTION_DAYS` (35) in the past: an id is deduplicated for
as long as its event is kept, so never for less than 35 days. Rollups are kept; a rebuild reads
raw events from the purge cutoff on.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, select, update

from ratecard.adapters.db import event_ids, event_store, rollup_store
from ratecard.adapters.db.models import (
    CustomerRow,
    EventRow,
    MeterRow,
    SubscriptionRow,
    UsageClosureRow,
)
from ratecard.adapters.db.scope import new_id
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.catalog import ChargeModel, Plan
from ratecard.core.errors import invalid
from ratecard.core.events import format_timestamp
from ratecard.core.invoicing import InvoiceLine, LineKind, make_line
from ratecard.core.money import RoundingMode, currency
from ratecard.core.periods import Period
from ratecard.core.pricing import rate
from ratecard.services.metering.admission import needed_property, value_problem
from ratecard.services.metering.ingestion import meters_to_roll_up, rollup_partials
from ratecard.services.metering.meters import meter_spec
from ratecard.services.metering.policy import MIN_RETENTION_DAYS, load_policy, save_policy
from ratecard.services.metering.usage_reader import UsageReader


def close_usage(uow: UnitOfWork, customer_id: str, period: Period) -> UsageClosureRow:
    """Record that the customer's usage of `period` is invoiced (idempotent per period end).

    Billing closes first and then reads the invoice's usage as of ``closed_at``
    (`StoreUsage(..., as_of=closed_at)`): the meter lock taken here waits for batches in flight,
    and later batches are stamped after it, so every event is either on the invoice or late.
    """
    uow.customers.get(customer_id)
    statement = select(MeterRow).where(
        MeterRow.tenant_id == uow.scope.tenant_id, MeterRow.mode == uow.scope.mode
    )
    if uow.session.get_bind().dialect.name == "postgresql":
        list(uow.session.scalars(statement.with_for_update()))
    existing = uow.session.scalars(
        select(UsageClosureRow).where(
            UsageClosureRow.tenant_id == uow.scope.tenant_id,
            UsageClosureRow.mode == uow.scope.mode,
            UsageClosureRow.customer_id == customer_id,
            UsageClosureRow.period_end_at == period.end_at,
        )
    ).one_or_none()
    if existing is not None:
        return existing
    row = UsageClosureRow(
        id=new_id("ucl"),
        tenant_id=uow.scope.tenant_id,
        mode=uow.scope.mode,
        customer_id=customer_id,
        period_start_at=period.start_at,
        period_end_at=period.end_at,
        closed_at=uow.clock.now(),
        adjusted_at=None,
    )
    uow.session.add(row)
    return row


def late_adjustments(
    uow: UnitOfWork,
    customer_id: str,
    plan: Plan,
    *,
    at: datetime,
    rounding: RoundingMode = RoundingMode.HALF_UP,
) -> list[InvoiceLine]:
    """Adjustment lines for events that arrived after their period was invoiced.

    Marks the closures adjusted as of `at`; the caller commits with the invoice that carries them.
    """
    reader = UsageReader(uow.session, uow.scope)
    closures = uow.session.scalars(
        select(UsageClosureRow)
        .where(
            UsageClosureRow.tenant_id == uow.scope.tenant_id,
            UsageClosureRow.mode == uow.scope.mode,
            UsageClosureRow.customer_id == customer_id,
        )
        .order_by(UsageClosureRow.period_end_at)
    )
    cur = currency(plan.currency)
    lines: list[InvoiceLine] = []
    for closure in closures:
        billed_as_of = closure.adjusted_at or closure.closed_at
        period = Period(closure.period_start_at, closure.period_end_at)
        for charge in plan.charges:
            if charge.meter_code is None:
                continue
            with_values = charge.model is ChargeModel.PERCENTAGE
            code = charge.meter_code
            before = reader.usage(customer_id, code, period, with_values, received_by=billed_as_of)
            now = reader.usage(customer_id, code, period, with_values, received_by=at)
            if before == now:
                continue
            exact = (
                rate(charge.model, charge.price, now).amount
                - rate(charge.model, charge.price, before).amount
            )
            lines.append(
                make_line(
                    kind=LineKind.ADJUSTMENT,
                    description=(
                        f"Late usage — {charge.name or charge.code}, "
                        f"{format_timestamp(period.start_at)} – {format_timestamp(period.end_at)}"
                    ),
                    charge_code=charge.code,
                    exact=exact,
                    currency=cur,
                    mode=rounding,
                    period=period,
                    quantity=now.quantity - before.quantity,
                    plan_code=plan.code,
                    plan_version=plan.version,
                )
            )
        closure.adjusted_at = at
    return lines


def release_held(uow: UnitOfWork) -> int:
    """Count the held events whose customer and meter now exist; return how many were released.

    Release is per event, whatever the tenant's policy says now: an event held under ``hold``
    is still counted when its customer, subscription or meter appears after the policy went
    back to ``reject`` (which only refuses new unknown events). Only releasable events are read:
    held events joined to the customers (by external id) and subscriptions (by id) that exist,
    for meters that exist. Called by whatever creates a customer, meter or subscription; the
    caller commits.
    """
    scope, session = uow.scope, uow.session
    held = (
        EventRow.tenant_id == scope.tenant_id,
        EventRow.mode == scope.mode,
        EventRow.customer_id.is_(None),
        EventRow.meter_code.in_(
            select(MeterRow.code).where(
                MeterRow.tenant_id == scope.tenant_id, MeterRow.mode == scope.mode
            )
        ),
    )
    by_customer = (
        select(EventRow, CustomerRow.id)
        .join(
            CustomerRow,
            and_(
                CustomerRow.tenant_id == EventRow.tenant_id,
                CustomerRow.mode == EventRow.mode,
                CustomerRow.external_id == EventRow.customer_ref,
            ),
        )
        .where(*held)
    )
    by_subscription = (
        select(EventRow, SubscriptionRow.customer_id)
        .join(
            SubscriptionRow,
            and_(
                SubscriptionRow.tenant_id == EventRow.tenant_id,
                SubscriptionRow.mode == EventRow.mode,
                SubscriptionRow.id == EventRow.customer_ref,
            ),
        )
        .where(*held)
    )
    found: dict[int, tuple[EventRow, str]] = {}
    for statement in (by_customer, by_subscription):  # an external id match comes first
        for row, customer_id in session.execute(statement):
            found.setdefault(row.seq, (row, str(customer_id)))
    if not found:
        return 0
    released = []
    meters = meters_to_roll_up(session, scope)  # as they stand once no redefinition runs
    now = uow.clock.now()  # stamped under that lock, as a round stamps (`close_usage` takes it)
    needs = {code: needed_property(meter_spec(meter)) for code, meter in meters.items()}
    for seq in sorted(found):  # arrival order
        row, customer_id = found[seq]
        need = needs.get(row.meter_code)
        if need is not None and value_problem(need, row.properties) is not None:
            continue  # as ingestion would refuse it now: it stays held, listed, not counted
        # counted from now: if its period was invoiced meanwhile, it is late usage (billed as
        # an adjustment, whatever the late-event policy: it was accepted before the closing)
        result = session.execute(
            update(EventRow)
            .where(EventRow.tenant_id == scope.tenant_id, EventRow.mode == scope.mode)
            .where(EventRow.seq == seq)  # the scope first: PostgreSQL's key (migration 0018)
            .where(EventRow.customer_id.is_(None))  # a concurrent release counted it already
            .values(customer_id=customer_id, counted_at=now)
        )
        if getattr(result, "rowcount", 1) != 1:
            continue
        released.append(
            (
                event_store.NewEvent(
                    row.event_id,
                    row.meter_code,
                    row.customer_ref,
                    customer_id,
                    row.occurred_at,
                    row.properties,
                ),
                seq,
            )
        )
    rollup_store.add_rollups(session, scope, rollup_partials(meters, released))
    # after the commit, the listeners of ingestion (entitlement cache, alerts) hear of them
    uow.usage_changed((new.customer_id, new.meter_code) for new, _ in released if new.customer_id)
    return len(released)


def purge_events(uow: UnitOfWork, received_before: datetime) -> int:
    """Drop raw events received before the cutoff; return how many.

    An event id is deduplicated only while its event is kept, so the cutoff must be old enough
    that no purged event could be accepted again: an event received at `r` has a timestamp
    before `r + max_future`, and a re-sent copy is refused once that is more than `max_past`
    ago. Hence cutoff <= now - (max_past + max_future), and never less than 35 days ago.
    """
    scope = uow.scope
    policy = load_policy(uow.session, scope)
    keep = max(timedelta(days=MIN_RETENTION_DAYS), policy.max_past + policy.max_future)
    if received_before > uow.clock.now() - keep:
        raise invalid(
            f"events are kept at least {MIN_RETENTION_DAYS} days and as long as an event "
            f"could still be accepted again (max_past + max_future: {keep})",
            "received_before",
        )
    purged = and_(
        EventRow.tenant_id == scope.tenant_id,
        EventRow.mode == scope.mode,
        EventRow.received_at < received_before,
    )
    event_ids.drop_id_keys(uow.session, purged)
    result = uow.session.execute(delete(EventRow).where(purged))
    event_ids.count_deletion(uow.session)
    save_policy(uow.session, scope, replace(policy, purged_before_at=received_before))
    return int(getattr(result, "rowcount", 0) or 0)
