"""A tenant with meters, a customer on a metered plan, and the metering services, per engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db import event_reads
from ratecard.adapters.db.models import MeterRow, PlanRow, PlanVersionRow, SubscriptionRow
from ratecard.adapters.db.scope import TenantScope
from ratecard.core.aggregation import MeterReset, MeterResult, aggregate
from ratecard.core.periods import Period
from ratecard.services.metering.ingestion import IngestionService
from ratecard.services.metering.usage import UsageService
from ratecard.services.metering.usage_reader import UsageReader
from tests.integration.factories import customer, tenant_scope, uow

PERIOD_START = datetime(2024, 1, 1, tzinfo=UTC)
PERIOD_END = datetime(2024, 2, 1, tzinfo=UTC)

PLAN = {
    "code": "usage",
    "name": "Usage",
    "currency": "USD",
    "interval": "month",
    "charges": [
        {"code": "base", "model": "flat", "amount": "10.00"},
        {
            "code": "calls",
            "model": "graduated",
            "meter": "api_calls",
            "tiers": [
                {"up_to": "100", "unit_price": "0"},
                {"up_to": None, "unit_price": "0.0125"},
            ],
        },
        {"code": "tokens", "model": "per_unit", "meter": "tokens", "unit_price": "0.000125"},
        {
            "code": "payments",
            "model": "percentage",
            "meter": "payments",
            "rate": "1.5",
            "fixed_fee_per_event": "0.10",
        },
    ],
    "entitlements": [
        {"feature": "sso", "type": "boolean"},
        {"feature": "seats", "type": "limit", "limit": "5"},
        {
            "feature": "api",
            "type": "metered",
            "meter": "api_calls",
            "limit": "1000",
            "fail_open": False,
        },
        {
            "feature": "tokens",
            "type": "metered",
            "meter": "tokens",
            "limit": "500",
            "on_exceed": "allow_and_notify",
        },
    ],
}


@dataclass
class Metering:
    sessions: sessionmaker[Session]
    clock: FixedClock
    scope: TenantScope
    customer_id: str
    subscription_id: str
    ingestion: IngestionService
    usage: UsageService

    def ingest(self, *events: dict[str, Any]) -> list[str]:
        result = self.ingestion.ingest(self.scope, list(events))
        return [str(r.status) for r in result.results]


def event(
    i: int | str,
    meter: str = "api_calls",
    at: datetime | None = None,
    customer: str = "acme",
    **props: Any,
) -> dict[str, Any]:
    stamp = (at or PERIOD_START + timedelta(days=1)).isoformat()
    return {
        "id": f"evt_{i}",
        "type": meter,
        "customer": customer,
        "timestamp": stamp,
        "properties": props,
    }


def setup(sessions: sessionmaker[Session], name: str = "Metered") -> Metering:
    clock = FixedClock(PERIOD_START + timedelta(days=20))
    scope = tenant_scope(sessions, clock, name)
    now = clock.now()
    with uow(sessions, scope, clock) as work:
        for code, aggregation, prop, group_by in (
            ("api_calls", "count", None, []),
            ("tokens", "sum", "tokens", ["model"]),
            ("payments", "sum", "amount", []),
            ("peak", "max", "gb", []),
            ("users", "unique_count", "user", []),
            ("storage", "weighted_sum", "gb", []),
        ):
            work.meters.add(
                MeterRow(
                    code=code,
                    name=code,
                    aggregation=aggregation,
                    value_field=prop,
                    group_by=group_by,
                    created_at=now,
                )
            )
        cus = work.customers.add(customer("acme", now))
        work.plans.add(PlanRow(code="usage", name="Usage", created_at=now))
        work.plan_versions.add(
            PlanVersionRow(
                plan_code="usage",
                version=1,
                status="published",
                currency="USD",
                document=PLAN,
                created_at=now,
            )
        )
        work.session.flush()
        sub = work.subscriptions.add(
            SubscriptionRow(
                customer_id=cus.id,
                plan_code="usage",
                plan_version=1,
                quantity=Decimal(1),
                status="active",
                anchor_at=PERIOD_START,
                timezone="UTC",
                current_period_start_at=PERIOD_START,
                current_period_end_at=PERIOD_END,
                created_at=PERIOD_START,
            )
        )
        work.commit()
        customer_id, sub_id = cus.id, sub.id
    return Metering(
        sessions,
        clock,
        scope,
        customer_id,
        sub_id,
        IngestionService(sessions, clock),
        UsageService(sessions, clock),
    )


def raw_usage(m: Metering, meter: str, period: Period) -> MeterResult:
    """The meter's value over `period` aggregated from the raw events, as the reference."""
    with m.sessions() as session:
        reader = UsageReader(session, m.scope)
        spec = reader.spec(meter)
        lower = None if spec.reset is MeterReset.NEVER else period.start_at
        events = event_reads.read_events(
            session, m.scope, m.customer_id, meter, start_at=lower, end_at=period.end_at
        )
    return aggregate(spec, [e for e, _ in events], period.start_at, period.end_at)


@contextmanager
def counted(module: object, name: str) -> Iterator[list[int]]:
    """The length of the last argument of each call of ``module.name`` while open (how many
    meters each `usage_reads.read_usage` read)."""
    calls: list[int] = []
    real = getattr(module, name)

    def counting(*args: Any) -> Any:
        calls.append(len(args[-1]))
        return real(*args)

    setattr(module, name, counting)
    try:
        yield calls
    finally:
        setattr(module, name, real)
