"""Usage and spend alerts: one webhook event per threshold crossing, through the outbox.

    >>> alerts = AlertService(sessions, clock)                                    # doctest: +SKIP
    >>> alerts.create(scope, customer_id, "api_calls", AlertMetric.USAGE, Decimal(1000))
    >>> ingestion.listeners.append(alerts.on_ingested)   # evaluated after each committed batch

An alert watches one customer's meter in the current billing period (the live subscription's
period; a UTC calendar month when the customer has none). When the usage (quantity) or spend
(what the metered charge would bill now, rounded as the invoice rounds) reaches the threshold, a
``usage_alert.triggered`` event is written to the webhook outbox. Its dedup key is
``alert:<id>:<period start>``, unique in the table, so concurrent or repeated evaluations of the
same crossing write one event, and the next period can fire again. Evaluation after a batch is
best effort; `recover` re-checks every alert of every tenant, so a crash between a batch's
commit and its evaluation loses no crossing: the API server runs it in the background at every
start, and so does ``ratecard worker``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import Clock
from ratecard.adapters.db.engine import statement_reader
from ratecard.adapters.db.models import (
    TenantRow,
    UsageAlertRow,
    WebhookOutboxRow,
)
from ratecard.adapters.db.scope import Mode, TenantScope, new_id
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.errors import NotFound, invalid
from ratecard.core.events import format_instant, format_timestamp
from ratecard.core.money import RoundingMode
from ratecard.core.periods import Period
from ratecard.services.common import check_cursor, exists
from ratecard.services.metering.priced_usage import plan_of, usage_lines
from ratecard.services.metering.usage_reader import UsageReader
from ratecard.services.subscription_state import live_subscription

_ALERT_PREFIX = "alrt"  # an alert's id: alrt_…


class AlertMetric(StrEnum):
    USAGE = "usage"
    SPEND = "spend"


def _month(at: datetime) -> Period:
    start = at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return Period(start, end)


class AlertService:
    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def _uow(
        self, scope: TenantScope, actor: str = "alerts", *, read_only: bool = False
    ) -> UnitOfWork:
        return UnitOfWork(
            self._sessions, scope, actor=actor, clock=self._clock, read_only=read_only
        )

    def create(
        self,
        scope: TenantScope,
        customer_id: str,
        meter_code: str,
        metric: AlertMetric,
        threshold: Decimal,
        *,
        actor: str = "alerts",
    ) -> str:
        if threshold <= 0:
            raise invalid("must be positive", "threshold")
        with self._uow(scope, actor) as uow:
            if uow.customers.find(customer_id) is None:
                raise invalid(f"no customer {customer_id}", "customer_id")
            if not exists(lambda: uow.meters.get_by_code(meter_code)):
                raise invalid(f"no meter {meter_code}", "meter")
            row = UsageAlertRow(
                id=new_id(_ALERT_PREFIX),
                tenant_id=scope.tenant_id,
                mode=scope.mode,
                customer_id=customer_id,
                meter_code=meter_code,
                metric=str(AlertMetric(metric)),
                threshold=threshold,
                created_at=self._clock.now(),
            )
            uow.session.add(row)
            uow.commit()
            return row.id

    def get(self, scope: TenantScope, alert_id: str) -> UsageAlertRow:
        with self._uow(scope, read_only=True) as uow:
            return _alert(uow, alert_id)

    def list(
        self,
        scope: TenantScope,
        *,
        customer_id: str | None = None,
        limit: int = 100,
        starting_after: str | None = None,
    ) -> list[UsageAlertRow]:
        """The scope's alerts by id, `limit` after the cursor (optionally one customer's)."""
        check_cursor(_ALERT_PREFIX, starting_after)
        with self._uow(scope, read_only=True) as uow:
            statement = (
                select(UsageAlertRow)
                .where(UsageAlertRow.tenant_id == scope.tenant_id, UsageAlertRow.mode == scope.mode)
                .order_by(UsageAlertRow.id)
                .limit(limit)
            )
            if customer_id is not None:
                statement = statement.where(UsageAlertRow.customer_id == customer_id)
            if starting_after is not None:
                statement = statement.where(UsageAlertRow.id > starting_after)
            return list(uow.session.scalars(statement))

    def delete(self, scope: TenantScope, alert_id: str, *, actor: str = "alerts") -> None:
        with self._uow(scope, actor) as uow:
            uow.session.delete(_alert(uow, alert_id))
            uow.commit()

    def on_ingested(self, scope: TenantScope, touched: frozenset[tuple[str, str]]) -> None:
        """Ingestion listener: evaluate the alerts of the (customer, meter) pairs just changed."""
        if touched:
            self.evaluate(scope, touched)

    def evaluate(self, scope: TenantScope, pairs: Iterable[tuple[str, str]] | None) -> int:
        """Check alerts (of `pairs`, or all); return how many webhook events were written."""
        wanted = None if pairs is None else set(pairs)
        where = [UsageAlertRow.tenant_id == scope.tenant_id, UsageAlertRow.mode == scope.mode]
        if wanted is not None:
            where.append(UsageAlertRow.customer_id.in_(sorted({c for c, _ in wanted})))
        # Ingestion calls this after every commit: most often there is no alert to check, and
        # finding that out takes one statement and no write lock.
        with statement_reader(self._sessions.kw["bind"]).connect() as reader:
            if not any(
                wanted is None or (customer, meter) in wanted
                for customer, meter in reader.execute(
                    select(UsageAlertRow.customer_id, UsageAlertRow.meter_code).where(*where)
                )
            ):
                return 0
        with self._uow(scope) as uow:
            alerts = [
                a
                for a in uow.session.scalars(select(UsageAlertRow).where(*where))
                if wanted is None or (a.customer_id, a.meter_code) in wanted
            ]
            written = sum(self._check(uow, alert) for alert in alerts)
            uow.commit()
            return written

    def evaluate_all(self, scope: TenantScope) -> int:
        return self.evaluate(scope, None)

    def recover(self) -> int:
        """Check every alert of every tenant and mode (a crossing a crash left unevaluated
        fires now; one already fired is not written again). Returns the events written.

        Each alert in a transaction of its own: on SQLite a write transaction holds the write
        lock, which ingestion waits for, so none lasts longer than one alert's usage read."""
        with statement_reader(self._sessions.kw["bind"]).connect() as reader:
            alerts = reader.execute(
                select(UsageAlertRow.id, UsageAlertRow.tenant_id, UsageAlertRow.mode)
            ).all()
        written = 0
        for alert_id, tenant_id, mode in alerts:
            with self._uow(TenantScope(tenant_id, Mode(mode))) as uow:
                alert = uow.session.get(UsageAlertRow, alert_id)
                if alert is None:  # deleted meanwhile
                    continue
                written += self._check(uow, alert)
                uow.commit()
        return written

    def _check(self, uow: UnitOfWork, alert: UsageAlertRow) -> int:
        session, scope = uow.session, uow.scope
        reader = UsageReader(session, scope)
        now = uow.scope_now()
        sub = live_subscription(uow, alert.customer_id, now)
        if sub is not None:
            period = Period(sub.current_period_start_at, sub.current_period_end_at)
        else:
            period = _month(now)
        if alert.metric == AlertMetric.USAGE:
            value = reader.result(alert.customer_id, alert.meter_code, period).total.value
            shown = format(value, "f")
        else:
            if sub is None:
                return 0
            tenant = session.get(TenantRow, scope.tenant_id)
            assert tenant is not None
            plan = plan_of(session, scope, sub)
            lines = [
                u
                for u in usage_lines(
                    reader, alert.customer_id, plan, period, RoundingMode(tenant.rounding_mode)
                )
                if u.meter_code == alert.meter_code
            ]
            if not lines:
                return 0
            value = sum((u.line.amount.to_decimal() for u in lines), Decimal(0))
            shown = lines[0].line.amount.format()
        if value < alert.threshold:
            return 0
        return enqueue(
            session,
            scope,
            "usage_alert.triggered",
            f"alert:{alert.id}:{format_timestamp(period.start_at)}",
            payload={
                "alert_id": alert.id,
                "customer_id": alert.customer_id,
                "meter": alert.meter_code,
                "metric": alert.metric,
                "threshold": format(alert.threshold, "f"),
                "value": shown,
                "period_start": format_instant(period.start_at),
                "period_end": format_instant(period.end_at),
                "at": format_instant(now),
            },
            at=now,
        )


def _alert(uow: UnitOfWork, alert_id: str) -> UsageAlertRow:
    row = uow.session.scalars(
        select(UsageAlertRow).where(
            UsageAlertRow.tenant_id == uow.scope.tenant_id,
            UsageAlertRow.mode == uow.scope.mode,
            UsageAlertRow.id == alert_id,
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no alert {alert_id}")
    return row


def enqueue(
    session: Session,
    scope: TenantScope,
    event_type: str,
    dedup_key: str,
    *,
    payload: dict[str, str],
    at: datetime,
) -> int:
    """Add a webhook event unless one with `dedup_key` exists; 1 if added."""
    values = {
        "tenant_id": scope.tenant_id,
        "mode": scope.mode,
        "event_type": event_type,
        "dedup_key": dedup_key,
        "payload": payload,
        "created_at": at,
        "delivered_at": None,
    }
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(WebhookOutboxRow)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(WebhookOutboxRow.id)
    )
    return len(session.execute(statement).all())


def outbox(
    session: Session,
    scope: TenantScope,
    *,
    limit: int | None = None,
    after_id: int | None = None,
    event_type: str | None = None,
) -> list[WebhookOutboxRow]:
    """The scope's webhook events in the order they were written (optionally a page of them)."""
    statement = (
        select(WebhookOutboxRow)
        .where(WebhookOutboxRow.tenant_id == scope.tenant_id, WebhookOutboxRow.mode == scope.mode)
        .order_by(WebhookOutboxRow.id)
    )
    if after_id is not None:
        statement = statement.where(WebhookOutboxRow.id > after_id)
    if event_type is not None:
        statement = statement.where(WebhookOutboxRow.event_type == event_type)
    if limit is not None:
        statement = statement.limit(limit)
    return list(session.scalars(statement))
