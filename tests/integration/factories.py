"""Small builders for integration tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db.models import CustomerRow, PlanRow, PlanVersionRow, SubscriptionRow
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.services.tenancy import TenancyService


def tenant_scope(
    sessions: sessionmaker[Session], clock: FixedClock, name: str = "Acme", mode: Mode = Mode.LIVE
) -> TenantScope:
    tenant = TenancyService(sessions, clock).create_tenant(name)
    return TenantScope(tenant.id, mode)


def uow(sessions: sessionmaker[Session], scope: TenantScope, clock: FixedClock) -> UnitOfWork:
    return UnitOfWork(sessions, scope, actor="user:test", clock=clock)


def customer(external_id: str, now: datetime, **fields: object) -> CustomerRow:
    values: dict[str, object] = {
        "external_id": external_id,
        "name": f"Customer {external_id}",
        "currency": "USD",
        "timezone": "UTC",
        "created_at": now,
    }
    values.update(fields)
    return CustomerRow(**values)


def subscribed_customer(
    sessions: sessionmaker[Session], scope: TenantScope, clock: FixedClock
) -> tuple[str, str]:
    """A customer on plan ``pro`` v1; returns (customer id, subscription id)."""
    now = clock.now()
    with uow(sessions, scope, clock) as work:
        cus = work.customers.add(customer("c-sub", now))
        work.plans.add(PlanRow(code="pro", name="Pro", created_at=now))
        work.plan_versions.add(
            PlanVersionRow(
                plan_code="pro",
                version=1,
                status="published",
                currency="USD",
                document={"charges": [{"model": "flat", "amount": "100.00"}]},
                created_at=now,
            )
        )
        work.session.flush()
        sub = work.subscriptions.add(
            SubscriptionRow(
                customer_id=cus.id,
                plan_code="pro",
                plan_version=1,
                quantity=Decimal(3),
                status="active",
                anchor_at=now,
                timezone="UTC",
                current_period_start_at=now,
                current_period_end_at=now + timedelta(days=29),
                created_at=now,
            )
        )
        work.commit()
        return cus.id, sub.id
