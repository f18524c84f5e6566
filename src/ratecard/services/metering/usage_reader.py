"""Exact meter values of one scope, inside an open session: what every usage figure reads.

    >>> reader = UsageReader(session, scope)                                # doctest: +SKIP
    >>> reader.result(customer_id, "api_calls", period).total.value         # doctest: +SKIP
    Decimal('1250')

How a meter's value over ``[start, end)`` is read (`UsageReader.result`):
- decomposable meters (count, sum, min, max, latest, average): the hourly rollup partials of the
  whole hours inside the span, merged with partials computed from the raw events of the partial
  hours at its edges — exactly `core.aggregation.aggregate()` over the raw events (a test checks);
- unique count, weighted sum, per-event values (percentage charges) and usage "as of" an instant
  (late events) read raw events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ratecard.adapters.db import event_reads, rollup_rows, usage_reads
from ratecard.adapters.db.models import (
    CustomerRow,
    MeterRow,
)
from ratecard.adapters.db.repositories import (
    CustomerRepository,
    MeterRepository,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.core.aggregation import (
    Event,
    GroupKey,
    MeterReset,
    MeterResult,
    MeterSpec,
    aggregate,
    event_value,
)
from ratecard.core.periods import Period, local_date, local_midnight
from ratecard.core.pricing import Usage
from ratecard.core.rollups import Partial, decomposable, finish, hour_of, merge_groups, partials
from ratecard.services.metering.meters import SPECS, meter_spec

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
        return event_reads.read_events(
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
        for hour_at, key, partial in rollup_rows.read_rollups(
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
