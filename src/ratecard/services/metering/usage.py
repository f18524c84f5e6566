"""Usage queries: the same exact numbers the invoice uses, fast from rollups.

    >>> usage = UsageService(sessions, clock)                               # doctest: +SKIP
    >>> report = usage.subscription_usage(scope, "sub_1")                   # doctest: +SKIP
    >>> [(m.meter_code, m.quantity, m.amount.format()) for m in report.meters]
    [('api_calls', Decimal('1250'), '2.50')]

How a meter's value over ``[start, end)`` is read (`UsageReader.result`):
- decomposable meters (count, sum, min, max, latest, average): the hourly rollup partials of the
  whole hours inside the span, merged with partials computed from the raw events of the partial
  hours at its edges — exactly `core.aggregation.aggregate()` over the raw events (a test checks);
- unique count, weighted sum, per-event values (percentage charges) and usage "as of" an instant
  (late events) read raw events.

`StoreUsage` is the `UsageSource` billing asks; `subscription_usage` prices the current period with
`core.pricing.rate` and rounds each line as the invoice does (`make_line`), so "cost so far" and the
invoice line agree to the cent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from itertools import groupby, pairwise
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import Clock
from ratecard.adapters.db import event_store, rollup_store, usage_reads
from ratecard.adapters.db.engine import read_only
from ratecard.adapters.db.models import (
    CustomerRow,
    MeterRow,
    PlanVersionRow,
    PriceOverrideRow,
    SubscriptionChangeRow,
    SubscriptionRow,
    TenantRow,
    UsageClosureRow,
)
from ratecard.adapters.db.repositories import (
    CustomerRepository,
    MeterRepository,
    PlanVersionRepository,
    SubscriptionRepository,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import (
    Event,
    GroupKey,
    MeterReset,
    MeterResult,
    MeterSpec,
    aggregate,
    event_value,
)
from ratecard.core.catalog import ChargeModel, Plan
from ratecard.core.invoicing import InvoiceLine, LineKind, make_line
from ratecard.core.money import RoundingMode, currency
from ratecard.core.periods import Period, local_date, local_midnight
from ratecard.core.pricing import Usage, rate
from ratecard.core.rollups import Partial, decomposable, finish, hour_of, merge_groups, partials
from ratecard.core.subscriptions import ACCRUING
from ratecard.services.metering.meters import SPECS, meter_spec
from ratecard.services.plan_documents import load_plan

_HOUR = timedelta(hours=1)


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"


def _ceil_hour(at: datetime) -> datetime:
    floor = hour_of(at)
    return floor if floor == at else floor + _HOUR


# The columns of a meter's spec (`meters.MeterFields`), read without loading the ORM object:
# building and running an ORM query cost more than its round trip.
_M, _C = MeterRow.__table__.c, CustomerRow.__table__.c
_SPEC_COLUMNS = (
    _M.aggregation,
    _M.value_field,
    _M.filters,
    _M.group_by,
    _M.reset,
    _M.rounding_mode,
    _M.rounding_precision,
)
_IN_SCOPE = (_M.tenant_id == bindparam("tenant"), _M.mode == bindparam("mode"))
# `UsageReader.checked`: the meter's spec and whether the customer exists, in one statement.
_CHECKED = select(
    *_SPEC_COLUMNS,
    select(_C.id)
    .where(_C.tenant_id == bindparam("tenant"), _C.mode == bindparam("mode"))
    .where(_C.id == bindparam("customer"))
    .exists()
    .label("customer_exists"),
).where(*_IN_SCOPE, _M.code == bindparam("code"))
# `UsageReader.load_specs`: several meters' specs.
_SPECS = select(_M.code, *_SPEC_COLUMNS).where(
    *_IN_SCOPE, _M.code.in_(bindparam("codes", expanding=True))
)


class UsageReader:
    """Exact meter values of one scope, inside an open session."""

    def __init__(
        self, session: Session, scope: TenantScope, *, meters_revision: int | None = None
    ) -> None:
        """`meters_revision`: the tenant's, as read in this session; the meters' specs are
        then taken from the process's cache (`meters.SPECS`) while they are current."""
        self.session = session
        self.scope = scope
        self._revision = meters_revision
        self._specs: dict[str, MeterSpec] = (
            {} if meters_revision is None else SPECS.get(scope, meters_revision).copy()
        )
        self._found: dict[tuple[str, str, datetime | None, datetime], usage_reads.UsageFound] = {}

    def meter(self, code: str) -> MeterRow:
        return MeterRepository(self.session, self.scope).get_by_code(code)

    def spec(self, code: str) -> MeterSpec:
        found = self._specs.get(code)
        if found is None:
            found = self._specs[code] = meter_spec(self.meter(code))
        return found

    def load_specs(self, codes: list[str]) -> None:
        """Read the specs of these meters in one statement, those not cached at this reader's
        revision (an unknown one is left for `spec` to refuse)."""
        wanted = sorted(set(codes) - self._specs.keys())
        if wanted:
            found = {
                row.code: meter_spec(row)
                for row in self.session.connection().execute(
                    _SPECS,
                    {"tenant": self.scope.tenant_id, "mode": self.scope.mode, "codes": wanted},
                )
            }
            self._specs.update(found)
            if self._revision is not None:
                SPECS.put(self.scope, self._revision, found)

    def checked(self, customer_id: str, code: str) -> None:
        """`NotFound` unless the customer and the meter exist; one statement for both (a usage
        read is a few round trips in all on PostgreSQL), the meter's spec kept for `spec`."""
        found = (
            self.session.connection()
            .execute(
                _CHECKED,
                {
                    "tenant": self.scope.tenant_id,
                    "mode": self.scope.mode,
                    "customer": customer_id,
                    "code": code,
                },
            )
            .one_or_none()
        )
        if found is None or not found.customer_exists:
            CustomerRepository(self.session, self.scope).get(customer_id)  # the customer's 404
            self.meter(code)  # the meter's 404
            raise AssertionError("unreachable: one of them is missing")
        self._specs[code] = meter_spec(found)

    def _raw(
        self,
        customer_id: str,
        code: str,
        start_at: datetime | None,
        end_at: datetime,
        received_by: datetime | None = None,
    ) -> list[tuple[Event, int]]:
        return event_store.read_events(
            self.session,
            self.scope,
            customer_id,
            code,
            start_at=start_at,
            end_at=end_at,
            received_by=received_by,
        )

    def result(
        self,
        customer_id: str,
        code: str,
        period: Period,
        *,
        received_by: datetime | None = None,
    ) -> MeterResult:
        """The meter's value over `period` (all before its end for a cumulative meter)."""
        spec = self.spec(code)
        lower = None if spec.reset is MeterReset.NEVER else period.start_at
        if not decomposable(spec) or received_by is not None:
            events = self._raw(customer_id, code, lower, period.end_at, received_by)
            return aggregate(spec, [e for e, _ in events], period.start_at, period.end_at)
        return finish(spec, self._partials(spec, customer_id, code, lower, period.end_at))

    def prefetch(self, customer_id: str, wanted: Sequence[tuple[str, Period]]) -> None:
        """Read these (meter, period) values in one statement, for `result` to take, after
        the meters' specs (`load_specs`; those read from raw events are left out)."""
        self.load_specs([code for code, _ in wanted])
        asks = {}
        for code, period in wanted:
            spec = self.spec(code)
            if decomposable(spec):
                lower = None if spec.reset is MeterReset.NEVER else period.start_at
                asks[(customer_id, code, lower, period.end_at)] = _usage_read(
                    code, lower, period.end_at
                )
        found = usage_reads.read_usage(self.session, self.scope, customer_id, list(asks.values()))
        self._found.update(zip(asks, found, strict=True))

    def _partials(
        self, spec: MeterSpec, customer_id: str, code: str, lower: datetime | None, end: datetime
    ) -> dict[GroupKey, Partial]:
        found = self._found.get((customer_id, code, lower, end))
        if found is None:
            read = _usage_read(code, lower, end)
            (found,) = usage_reads.read_usage(self.session, self.scope, customer_id, [read])
        return merge_groups([*(partials(spec, events) for events in found.events), found.rollups])

    def event_values(
        self,
        customer_id: str,
        code: str,
        period: Period,
        *,
        received_by: datetime | None = None,
    ) -> tuple[Decimal, ...]:
        """Each counted event's value in time order (for percentage charges)."""
        spec = self.spec(code)
        assert spec.value_property is not None, f"meter {code} has no value property"
        values = []
        raw = self._raw(customer_id, code, period.start_at, period.end_at, received_by)
        for event, _ in raw:
            if all(f.matches(event) for f in spec.filters):
                value = event_value(event, spec.value_property)
                if value is not None:
                    values.append(value)
        return tuple(values)

    def usage(
        self,
        customer_id: str,
        code: str,
        period: Period,
        with_values: bool,
        *,
        received_by: datetime | None = None,
    ) -> Usage:
        """What billing prices: the total as a Decimal, with per-event values when asked."""
        result = self.result(customer_id, code, period, received_by=received_by)
        if with_values:
            values = self.event_values(customer_id, code, period, received_by=received_by)
            return Usage(result.total.value, values)
        return Usage(result.total.value)

    def series(
        self,
        customer_id: str,
        code: str,
        period: Period,
        granularity: Granularity,
        tz: ZoneInfo | None = None,
    ) -> list[tuple[Period, MeterResult]]:
        """The meter's value per hour or per (local) day of `period`; each bucket on its own."""
        tz = tz or ZoneInfo("UTC")
        spec = self.spec(code)
        bounds = _buckets(period, granularity, tz)
        if not decomposable(spec):
            events = self._raw(customer_id, code, period.start_at, period.end_at)
            return [
                (b, aggregate(_per_bucket(spec), [e for e, _ in events], b.start_at, b.end_at))
                for b in bounds
            ]
        per_bucket: list[dict[GroupKey, Partial]] = [{} for _ in bounds]
        starts = [b.start_at for b in bounds]

        def add(at: datetime, key: GroupKey, partial: Partial) -> None:
            index = _bucket_index(starts, at)
            current = per_bucket[index].get(key)
            per_bucket[index][key] = partial if current is None else current.merge(partial)

        full_from, full_to = _ceil_hour(period.start_at), hour_of(period.end_at)
        for hour_at, key, partial in rollup_store.read_rollups(
            self.session, self.scope, customer_id, code, from_hour=full_from, to_hour=full_to
        ):
            add(hour_at, key, partial)
        edges = [(period.start_at, min(full_from, period.end_at))]
        if full_to >= full_from:
            edges.append((max(full_to, period.start_at), period.end_at))
        for lo, hi in edges:
            if lo < hi:
                for event, seq in self._raw(customer_id, code, lo, hi):
                    for key, partial in partials(spec, [(event, seq)]).items():
                        add(event.timestamp, key, partial)
        flat = _per_bucket(spec)
        return [(b, finish(flat, parts)) for b, parts in zip(bounds, per_bucket, strict=True)]


def _usage_read(code: str, lower: datetime | None, end: datetime) -> usage_reads.UsageRead:
    """A meter's value over ``[lower, end)``: the rollups of its whole hours and the raw events
    at its edges, or only raw events when it holds no whole hour."""
    full_from = None if lower is None else _ceil_hour(lower)
    full_to = hour_of(end)
    if lower is not None and full_from is not None and full_from >= full_to:
        return usage_reads.UsageRead(code, [(lower, end)], None)
    edges: list[tuple[datetime, datetime]] = []
    if lower is not None and full_from is not None and lower < full_from:
        edges.append((lower, full_from))
    if full_to < end:
        edges.append((full_to, end))
    return usage_reads.UsageRead(code, edges, (full_from, full_to))


def _per_bucket(spec: MeterSpec) -> MeterSpec:
    """A series shows each bucket's own value, also for cumulative meters."""
    return MeterSpec(spec.aggregation, spec.value_property, spec.filters, spec.group_by)


def _bucket_index(starts: list[datetime], at: datetime) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= at:
            lo = mid
        else:
            hi = mid - 1
    return lo


MAX_BUCKETS = 24 * 400


def _buckets(period: Period, granularity: Granularity, tz: ZoneInfo) -> list[Period]:
    cuts = [period.start_at]
    if granularity is Granularity.HOUR:
        at = _ceil_hour(period.start_at)
        while at < period.end_at:
            if at > cuts[-1]:
                cuts.append(at)
            at += _HOUR
    else:
        day = local_date(period.start_at, tz) + timedelta(days=1)
        while (at := local_midnight(day, tz)) < period.end_at:
            cuts.append(at)
            day += timedelta(days=1)
    assert len(cuts) <= MAX_BUCKETS, "too many buckets"
    cuts.append(period.end_at)
    return [Period(a, b) for a, b in pairwise(cuts)]


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
    """What `_plan_from` reads of a plan version joined (as `_PO`) to the customer's overrides
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
    return _plan_from(sub.plan_code, rows)


class _PlanParts(Protocol):
    """A row of `_PLAN_VERSION` or `_LIVE_PLANS`: a plan version, the subscription's first
    change, and one of the customer's price overrides of the plan (or NULLs)."""

    version: int
    currency: str
    document: dict[str, Any]
    first_change: dict[str, Any] | None
    override_charge: str | None
    override_price: dict[str, Any] | None


def _plan_from(plan_code: str, rows: Sequence[_PlanParts]) -> Plan:
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
    """A subscription's row with its stored period (a `SubscriptionRow`, a `_LIVE_PLANS` row)."""

    @property
    def current_period_start_at(self) -> datetime: ...
    @property
    def current_period_end_at(self) -> datetime: ...


def _as_at(
    session: Session, scope: TenantScope, row: _Current, at: datetime
) -> LiveSubscription | None:
    """A subscription whose stored period ended by `at` (renewed, or changed at the boundary,
    and not written since), as it stands at `at` (`subscriptions.state_at`); None if it no
    longer accrues usage."""
    from ratecard.services.subscriptions import state_at

    state = state_at(session, scope, row.id, at)
    if state.status not in ACCRUING:
        return None
    plan = state.plan
    return LiveSubscription(
        row.id, row.customer_id, plan.plan_code, plan.plan_version, state.current_period
    )


def _live(row: _Current) -> LiveSubscription:
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
_LIVE_PLANS = (
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


def _subscription_usage(
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


def _usage_of(
    session: Session,
    scope: TenantScope,
    live: LiveSubscription,
    revision: int,
    rounding: RoundingMode,
) -> SubscriptionUsage:
    """One subscription's usage so far (`UsageService.subscription_usage`)."""
    reader = UsageReader(session, scope, meters_revision=revision)
    (usage,) = _subscription_usage(reader, [(live, plan_of(session, scope, live))], rounding)
    return usage


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
                return _usage_of(session, scope, _live(sub), revision, rounding)
        # Renewed (or changed) since it was written: its timeline says how it stands, and one
        # unit of work reads it all (never two pooled connections at once).
        from ratecard.services.subscriptions import current

        with self._uow(scope) as uow:
            live = _live(current(uow, subscription_id, now=at))
            return _usage_of(uow.session, scope, live, revision, rounding)

    def customer_usage(
        self, scope: TenantScope, customer_id: str, *, now: datetime | None = None
    ) -> list[SubscriptionUsage]:
        """Usage so far of the current period (at `now`, default the clock's) of each of the
        customer's live subscriptions.

        One read-only session and two statements for it all (a customer's usage is read at
        every portal view and alert check): the customer, the tenant's rounding and meters'
        revision, and each live subscription with its plan (`_LIVE_PLANS`); and every meter's
        value, from its rollups and the raw events at its period's edges. The definitions of
        the meters come from the process's cache while the revision is current (a third
        statement reads them otherwise). A subscription whose stored period has ended by `now`
        (renewed, or changed at the boundary, and not written since) is read as it stands at
        `now`, from its timeline (`_as_at`): a statement more for the timeline, and one for the
        plan of a change that took effect at the boundary.
        """
        at = now or self._clock.now()
        with self._readers() as session:
            found = session.connection().execute(
                _LIVE_PLANS,
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
                live = (
                    _live(row)
                    if at < row.current_period_end_at
                    else _as_at(session, scope, row, at)
                )
                if live is None:  # ended, or paused, since its stored period
                    continue
                if (live.plan_code, live.plan_version) != (row.plan_code, row.plan_version):
                    subs.append((live, plan_of(session, scope, live)))  # changed at the boundary
                    continue
                if row.version is None:  # the plan version's 404
                    plan_of(session, scope, live)
                subs.append((live, _plan_from(row.plan_code, of_sub)))
            reader = UsageReader(session, scope, meters_revision=revision)
            return _subscription_usage(reader, subs, rounding)

    def usage_source(self, scope: TenantScope, customer_id: str) -> StoreUsage:
        return StoreUsage(self._sessions, scope, customer_id)


UsageSourceFactory = Callable[[TenantScope, str], StoreUsage]
