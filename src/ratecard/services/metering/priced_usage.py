"""A subscription's usage priced as its invoice will price it: the plan it is rated on (its
version with the customer's and the subscription's price overrides), the lines, and the
subscriptions that accrue usage now.

    >>> plan = plan_of(session, scope, sub)                                 # doctest: +SKIP
    >>> lines = usage_lines(reader, sub.customer_id, plan, sub.period, rounding)  # doctest: +SKIP
    >>> [(m.meter_code, m.quantity, m.amount.format()) for m in lines]      # doctest: +SKIP
    [('api_calls', Decimal('1250'), '2.50')]

Each line is rated with `core.pricing.rate` and rounded as the invoice rounds it (`make_line`),
so "cost so far" and the invoice line agree to the cent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ratecard.adapters.db.models import (
    CustomerRow,
    PlanVersionRow,
    PriceOverrideRow,
    SubscriptionChangeRow,
    SubscriptionRow,
    TenantRow,
)
from ratecard.adapters.db.repositories import (
    PlanVersionRepository,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.core.aggregation import (
    MeterResult,
)
from ratecard.core.catalog import ChargeModel, Plan
from ratecard.core.invoicing import InvoiceLine, LineKind, make_line
from ratecard.core.money import RoundingMode, currency
from ratecard.core.periods import Period
from ratecard.core.pricing import Usage, rate
from ratecard.core.subscription_model import ACCRUING
from ratecard.services.metering.usage_reader import UsageReader
from ratecard.services.plan_documents import load_plan

_C = CustomerRow.__table__.c


@dataclass(frozen=True, slots=True)
class MeterUsage:
    charge_code: str
    meter_code: str
    period: Period
    result: MeterResult
    line: InvoiceLine  # what the invoice would bill for this usage now
    group_by: tuple[str, ...] = ()  # the meter's dimensions, as `result.groups` keys them

    @property
    def quantity(self) -> Decimal:
        return self.result.total.value


@dataclass(frozen=True, slots=True)
class SubscriptionUsage:
    subscription_id: str
    customer_id: str
    period: Period
    meters: tuple[MeterUsage, ...]
    plan_code: str = ""
    currency: str = ""


class Planned(Protocol):
    """What a subscription's plan is looked up by (a `SubscriptionRow`, or `LiveSubscription`)."""

    @property
    def id(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def plan_code(self) -> str: ...
    @property
    def plan_version(self) -> int: ...


_PV, _SC, _PO = (
    PlanVersionRow.__table__.c,
    SubscriptionChangeRow.__table__.c,
    PriceOverrideRow.__table__.c,
)


def _plan_columns(subscription: Any) -> tuple[Any, ...]:
    """What `plan_from` reads of a plan version joined (as `_PO`) to the customer's overrides
    of the plan: the version, and the first change of `subscription`."""
    first_change = (
        select(_SC.payload)
        .where(_SC.tenant_id == _PV.tenant_id, _SC.mode == _PV.mode)
        .where(_SC.subscription_id == subscription)
        .order_by(_SC.seq)
        .limit(1)
        .scalar_subquery()
    )
    return (
        _PV.version,
        _PV.currency,
        _PV.document,
        first_change.label("first_change"),
        _PO.charge_code.label("override_charge"),
        _PO.price.label("override_price"),
    )


def _overrides_of(customer: Any) -> Any:
    """The join of `_PO` to `_PV`: the customer's price overrides of the plan."""
    return (
        (_PO.tenant_id == _PV.tenant_id)
        & (_PO.mode == _PV.mode)
        & (_PO.customer_id == customer)
        & (_PO.plan_code == _PV.plan_code)
    )


# `plan_of`'s read, built once: the version with the subscription's first change (where its own
# price overrides are), and a row for each of the customer's price overrides of the plan (one
# row, with NULLs, when it has none).
_PLAN_VERSION = (
    select(*_plan_columns(bindparam("subscription")))
    .select_from(PlanVersionRow.__table__)
    .outerjoin(PriceOverrideRow.__table__, _overrides_of(bindparam("customer")))
    .where(
        _PV.tenant_id == bindparam("tenant"),
        _PV.mode == bindparam("mode"),
        _PV.plan_code == bindparam("plan"),
        _PV.version == bindparam("version"),
    )
    .order_by(_PO.id)
)


def plan_of(session: Session, scope: TenantScope, sub: Planned) -> Plan:
    """The plan `sub` is rated on: its version with the customer's price overrides, then the
    subscription's own (as the subscription's drafts apply them), so usage amounts and invoice
    lines agree."""
    rows = (
        session.connection()
        .execute(
            _PLAN_VERSION,
            {
                "tenant": scope.tenant_id,
                "mode": scope.mode,
                "subscription": sub.id,
                "customer": sub.customer_id,
                "plan": sub.plan_code,
                "version": sub.plan_version,
            },
        )
        .all()
    )
    if not rows:  # the plan version's 404
        PlanVersionRepository(session, scope).get_version(sub.plan_code, sub.plan_version)
        raise AssertionError("unreachable: the version is missing")
    return plan_from(sub.plan_code, rows)


class _PlanParts(Protocol):
    """A row of `_PLAN_VERSION` or `LIVE_PLANS`: a plan version, the subscription's first
    change, and one of the customer's price overrides of the plan (or NULLs)."""

    version: int
    currency: str
    document: dict[str, Any]
    first_change: dict[str, Any] | None
    override_charge: str | None
    override_price: dict[str, Any] | None


def plan_from(plan_code: str, rows: Sequence[_PlanParts]) -> Plan:
    from ratecard.services.customers import Override, SubscriptionOverride, apply_overrides

    row = rows[0]
    document = {"code": plan_code, "currency": row.currency, **row.document}
    own = (row.first_change or {}).get("price_overrides", [])
    overrides: list[Override] = [
        *(
            SubscriptionOverride(plan_code, r.override_charge, r.override_price)
            for r in rows
            if r.override_charge is not None and r.override_price is not None
        ),
        *(SubscriptionOverride(o["plan_code"], o["charge_code"], dict(o["price"])) for o in own),
    ]
    document = apply_overrides(document, overrides) or document
    return _plan(json.dumps(document, sort_keys=True, separators=(",", ":")), row.version)


@lru_cache(maxsize=256)
def _plan(document: str, version: int) -> Plan:
    """The plan a document (canonical JSON, overrides applied) describes, as `version`.
    Cached: usage reports, alerts and entitlement checks rate on the same few documents again
    and again, and validating one costs more than reading it. A `Plan` is immutable."""
    return replace(load_plan(json.loads(document)).plan, version=version)


def usage_lines(
    reader: UsageReader, customer_id: str, plan: Plan, period: Period, rounding: RoundingMode
) -> tuple[MeterUsage, ...]:
    """Price each metered charge of `plan` on the usage of `period`, as billing does."""
    out = []
    cur = currency(plan.currency)
    for charge in plan.charges:
        if charge.meter_code is None:
            continue
        result = reader.result(customer_id, charge.meter_code, period)
        usage = Usage(
            result.total.value,
            reader.event_values(customer_id, charge.meter_code, period)
            if charge.model is ChargeModel.PERCENTAGE
            else (),
        )
        rating = rate(charge.model, charge.price, usage)
        line = make_line(
            kind=LineKind.USAGE,
            description=f"{plan.name} — {charge.name or charge.code}",
            charge_code=charge.code,
            exact=rating.amount,
            currency=cur,
            mode=rounding,
            period=period,
            quantity=usage.quantity,
            plan_code=plan.code,
            plan_version=plan.version,
        )
        group_by = reader.spec(charge.meter_code).group_by
        out.append(MeterUsage(charge.code, charge.meter_code, period, result, line, group_by))
    return tuple(out)


class LiveSubscription(NamedTuple):
    id: str
    customer_id: str
    plan_code: str
    plan_version: int
    period: Period  # the current one


class _Current(Planned, Protocol):
    """A subscription's row with its stored period (a `SubscriptionRow`, a `LIVE_PLANS` row)."""

    @property
    def current_period_start_at(self) -> datetime: ...
    @property
    def current_period_end_at(self) -> datetime: ...


def live_as_at(
    session: Session, scope: TenantScope, row: _Current, at: datetime
) -> tuple[LiveSubscription, bool]:
    """A subscription whose stored period ended by `at` (renewed, or changed at the boundary,
    and not written since), as it stands at `at` (`subscription_state.state_at`), and whether it
    still accrues usage (not ended, not paused)."""
    from ratecard.services.subscription_state import state_at

    state = state_at(session, scope, row.id, at)
    plan = state.plan
    live = LiveSubscription(
        row.id, row.customer_id, plan.plan_code, plan.plan_version, state.current_period
    )
    return live, state.status in ACCRUING


def live_view(row: _Current) -> LiveSubscription:
    return LiveSubscription(
        row.id,
        row.customer_id,
        row.plan_code,
        row.plan_version,
        Period(row.current_period_start_at, row.current_period_end_at),
    )


# `UsageService.customer_usage`: the customer (no row: unknown), with its tenant's rounding and
# meters' revision (`meters.SPECS`), and each live subscription (a row with NULLs: none) with
# its plan as `_PLAN_VERSION` reads it (a row for each of the customer's price overrides of the
# plan), ordered by subscription.
_T, _S = TenantRow.__table__.c, SubscriptionRow.__table__.c
LIVE_PLANS = (
    select(
        _T.rounding_mode,
        _T.meters_revision,
        _S.id,
        _S.customer_id,
        _S.plan_code,
        _S.plan_version,
        _S.current_period_start_at,
        _S.current_period_end_at,
        *_plan_columns(_S.id),
    )
    .select_from(CustomerRow.__table__)
    .join(TenantRow.__table__, _T.id == _C.tenant_id)
    .outerjoin(
        SubscriptionRow.__table__,
        (_S.tenant_id == _C.tenant_id)
        & (_S.mode == _C.mode)
        & (_S.customer_id == _C.id)
        & _S.status.in_(ACCRUING),
    )
    .outerjoin(
        PlanVersionRow.__table__,
        (_PV.tenant_id == _S.tenant_id)
        & (_PV.mode == _S.mode)
        & (_PV.plan_code == _S.plan_code)
        & (_PV.version == _S.plan_version),
    )
    .outerjoin(PriceOverrideRow.__table__, _overrides_of(_C.id))
    .where(_C.tenant_id == bindparam("tenant"), _C.mode == bindparam("mode"))
    .where(_C.id == bindparam("customer"))
    .order_by(_S.id, _PO.id)
)


def priced_usages(
    reader: UsageReader, subs: Sequence[tuple[LiveSubscription, Plan]], rounding: RoundingMode
) -> list[SubscriptionUsage]:
    """Each subscription's usage so far: the specs of all their meters (cached, or in one
    statement), and every meter's value in one more."""
    wanted = [
        (charge.meter_code, sub.period)
        for sub, plan in subs
        for charge in plan.charges
        if charge.meter_code is not None
    ]
    if wanted:
        reader.prefetch(subs[0][0].customer_id, wanted)
    return [
        SubscriptionUsage(
            sub.id,
            sub.customer_id,
            sub.period,
            usage_lines(reader, sub.customer_id, plan, sub.period, rounding),
            plan.code,
            plan.currency,
        )
        for sub, plan in subs
    ]


def usage_of(
    session: Session,
    scope: TenantScope,
    live: LiveSubscription,
    revision: int,
    rounding: RoundingMode,
) -> SubscriptionUsage:
    """One subscription's usage so far (`UsageService.subscription_usage`)."""
    reader = UsageReader(session, scope, meters_revision=revision)
    (usage,) = priced_usages(reader, [(live, plan_of(session, scope, live))], rounding)
    return usage
