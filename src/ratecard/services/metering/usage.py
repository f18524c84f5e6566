"""Usage queries: the same exact numbers the invoice uses, fast from rollups.

    >>> usage = UsageService(sessions, clock)                               # doctest: +SKIP
    >>> report = usage.subscription_usage(scope, "sub_1")                   # doctest: +SKIP
    >>> [(m.meter_code, m.quantity, m.amount.format()) for m in report.meters]
    [('api_calls', Decimal('1250'), '2.50')]

A meter's value is read by `usage_reader.UsageReader` (rollups, and raw events at the edges);
a subscription's usage is priced by `priced_usage` on the plan its invoice uses. `StoreUsage` is
the `UsageSource` billing asks; `subscription_usage` prices the current period with
`core.pricing.rate` and rounds each line as the invoice does (`make_line`), so "cost so far" and
the invoice line agree to the cent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from itertools import groupby
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import Clock
from ratecard.adapters.db.engine import read_only
from ratecard.adapters.db.models import (
    TenantRow,
    UsageClosureRow,
)
from ratecard.adapters.db.repositories import (
    CustomerRepository,
    SubscriptionRepository,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import (
    MeterResult,
)
from ratecard.core.money import RoundingMode
from ratecard.core.periods import Period
from ratecard.core.pricing import Usage
from ratecard.services.metering.priced_usage import (
    LIVE_PLANS,
    SubscriptionUsage,
    live_as_at,
    live_view,
    plan_from,
    plan_of,
    priced_usages,
    usage_of,
)
from ratecard.services.metering.usage_reader import Granularity, UsageReader


class StoreUsage:
    """The `UsageSource` of one customer, read from the store (one short session per call)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        scope: TenantScope,
        customer_id: str,
        *,
        as_of: datetime | None = None,
    ):
        self._sessions = read_only(sessions)
        self.scope = scope
        self.customer_id = customer_id
        self.as_of = as_of  # only events received by then (what a closed invoice bills)

    def __call__(self, meter_code: str, span: Period, with_values: bool) -> Usage:
        with self._sessions() as session:
            return UsageReader(session, self.scope).usage(
                self.customer_id, meter_code, span, with_values, received_by=self.as_of
            )


class SessionUsage:
    """The `UsageSource` of one customer inside an open session (a unit of work's).

    What the API's drafts and previews rate with: the same reader as `StoreUsage`, so a draft's
    usage lines and the usage endpoint's cost so far agree. A span inside a period whose usage
    is closed (invoiced, `lifecycle.close_usage`) reads the usage as it was billed, as of the
    closing: late events after it are the next invoice's adjustment, not this draft's.
    """

    def __init__(self, session: Session, scope: TenantScope, customer_id: str) -> None:
        self._session = session
        self._scope = scope
        self._reader = UsageReader(session, scope)
        self.customer_id = customer_id
        self._closed: list[tuple[datetime, datetime, datetime]] | None = None

    def __call__(self, meter_code: str, span: Period, with_values: bool) -> Usage:
        return self._reader.usage(
            self.customer_id, meter_code, span, with_values, received_by=self._billed_as_of(span)
        )

    def _billed_as_of(self, span: Period) -> datetime | None:
        if self._closed is None:
            c = UsageClosureRow
            self._closed = [
                (row.period_start_at, row.period_end_at, row.closed_at)
                for row in self._session.scalars(
                    select(c).where(
                        c.tenant_id == self._scope.tenant_id,
                        c.mode == self._scope.mode,
                        c.customer_id == self.customer_id,
                    )
                )
            ]
        for start_at, end_at, closed_at in self._closed:
            if start_at <= span.start_at and span.end_at <= end_at:
                return closed_at
        return None


class UsageService:
    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._readers = read_only(sessions)
        self._clock = clock

    def _uow(self, scope: TenantScope) -> UnitOfWork:
        return UnitOfWork(self._sessions, scope, actor="usage", clock=self._clock, read_only=True)

    def meter_usage(
        self, scope: TenantScope, customer_id: str, meter_code: str, period: Period
    ) -> MeterResult:
        # A bare read-only session, not a unit of work: its listeners and repositories cost
        # a fifth of a query; each statement here names the scope itself.
        with self._readers() as session:
            reader = UsageReader(session, scope)
            reader.checked(customer_id, meter_code)
            return reader.result(customer_id, meter_code, period)

    def series(
        self,
        scope: TenantScope,
        customer_id: str,
        meter_code: str,
        period: Period,
        granularity: Granularity,
    ) -> list[tuple[Period, MeterResult]]:
        with self._uow(scope) as uow:
            customer = uow.customers.get(customer_id)
            reader = UsageReader(uow.session, scope)
            return reader.series(
                customer_id, meter_code, period, granularity, ZoneInfo(customer.timezone)
            )

    def subscription_usage(
        self, scope: TenantScope, subscription_id: str, *, now: datetime | None = None
    ) -> SubscriptionUsage:
        """Usage and cost so far of the subscription's period at `now` (default: the clock's)."""
        at = now or self._clock.now()
        with self._readers() as session:
            sub = SubscriptionRepository(session, scope).get(subscription_id)
            tenant = session.get(TenantRow, scope.tenant_id)
            assert tenant is not None
            revision, rounding = tenant.meters_revision, RoundingMode(tenant.rounding_mode)
            if at < sub.current_period_end_at:
                live = live_view(sub)
            else:  # renewed (or changed) since it was written: as its timeline says it stands
                live, _ = live_as_at(session, scope, sub, at)
            return usage_of(session, scope, live, revision, rounding)

    def customer_usage(
        self, scope: TenantScope, customer_id: str, *, now: datetime | None = None
    ) -> list[SubscriptionUsage]:
        """Usage so far of the current period (at `now`, default the clock's) of each of the
        customer's live subscriptions.

        One read-only session and two statements for it all (a customer's usage is read at
        every portal view and alert check): the customer, the tenant's rounding and meters'
        revision, and each live subscription with its plan (`LIVE_PLANS`); and every meter's
        value, from its rollups and the raw events at its period's edges. The definitions of
        the meters come from the process's cache while the revision is current (a third
        statement reads them otherwise). A subscription whose stored period has ended by `now`
        (renewed, or changed at the boundary, and not written since) is read as it stands at
        `now`, from its timeline (`live_as_at`): a statement more for the timeline, and one for the
        plan of a change that took effect at the boundary.
        """
        at = now or self._clock.now()
        with self._readers() as session:
            found = session.connection().execute(
                LIVE_PLANS,
                {"tenant": scope.tenant_id, "mode": scope.mode, "customer": customer_id},
            )
            rows = found.all()
            if not rows:  # the customer's 404
                CustomerRepository(session, scope).get(customer_id)
                raise AssertionError("unreachable: the customer is missing")
            revision, rounding = rows[0].meters_revision, RoundingMode(rows[0].rounding_mode)
            subs = []
            for _, group in groupby(rows, key=lambda row: row.id):
                of_sub = list(group)
                row = of_sub[0]
                if row.id is None:  # no live subscription
                    break
                live, accrues = (
                    (live_view(row), True)
                    if at < row.current_period_end_at
                    else live_as_at(session, scope, row, at)
                )
                if not accrues:  # ended, or paused, since its stored period
                    continue
                if (live.plan_code, live.plan_version) != (row.plan_code, row.plan_version):
                    subs.append((live, plan_of(session, scope, live)))  # changed at the boundary
                    continue
                if row.version is None:  # the plan version's 404
                    plan_of(session, scope, live)
                subs.append((live, plan_from(row.plan_code, of_sub)))
            reader = UsageReader(session, scope, meters_revision=revision)
            return priced_usages(reader, subs, rounding)

    def usage_source(self, scope: TenantScope, customer_id: str) -> StoreUsage:
        return StoreUsage(self._sessions, scope, customer_id)


UsageSourceFactory = Callable[[TenantScope, str], StoreUsage]
