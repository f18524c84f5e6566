"""Admission of a round's valid events (`admit`): customers and meters resolved, the tenant's
policy applied (age limits, unknown customers and meters rejected or held, late events), and an
id repeated in the round counted once. What `IngestionService` stores next is what this admits.

    >>> admitted = admit(session, scope, policy=policy, specs=specs, ...)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from ratecard.adapters.db import event_store
from ratecard.adapters.db.models import CustomerRow, SubscriptionRow, UsageClosureRow
from ratecard.adapters.db.scope import TenantScope
from ratecard.core.aggregation import Aggregation, MeterSpec
from ratecard.core.errors import ErrorCode, Problem, RatecardError
from ratecard.core.money import D
from ratecard.services.metering.batches import DUPLICATE, REJECTED, Columns
from ratecard.services.metering.policy import LateEvents, MeteringPolicy, Unknown

_CHUNK = 500


def _rejected(code: ErrorCode, message: str, at: str) -> tuple[Problem, ...]:
    return (Problem(code, message, at),)


# The reasons admission gives, made once: problems are immutable, so events share them.
_TOO_OLD = _rejected(ErrorCode.EVENT_TOO_OLD, "older than the tenant allows", "timestamp")
_IN_FUTURE = _rejected(ErrorCode.EVENT_IN_FUTURE, "too far in the future", "timestamp")
_NO_CUSTOMER = _rejected(ErrorCode.UNKNOWN_CUSTOMER, "no such customer", "customer")
_NO_SUBSCRIPTION = _rejected(ErrorCode.UNKNOWN_CUSTOMER, "no such subscription", "subscription")
_NO_METER = _rejected(ErrorCode.UNKNOWN_METER, "no such meter", "type")
_LATE = _rejected(ErrorCode.LATE_EVENT, "its period is already invoiced", "timestamp")


def admit(
    session: Session,
    scope: TenantScope,
    *,
    policy: MeteringPolicy,
    specs: Mapping[str, MeterSpec],
    columns: Columns,
    positions: Sequence[int],
    statuses: list[str],
    problems: dict[int, tuple[Problem, ...]],
    customer_ids: list[str | None],
    received_at: datetime,
) -> list[int]:
    """Resolve customers and meters and apply the policy: the positions to store, their
    customers in `customer_ids` (None: held); the others rejected in `statuses`.

    Instants are compared by their hour numbers, and read only in the hour of a bound. An
    event that passes and whose id was admitted at an earlier position is a duplicate."""
    refs, via_subscription = columns.refs, columns.by_subscription
    if any(via_subscription):
        wanted = {r for r, s in zip(refs, via_subscription, strict=True) if not s}
        subscribed = {r for r, s in zip(refs, via_subscription, strict=True) if s}
    else:
        wanted, subscribed = set(refs), set()
    closed: dict[str, tuple[int, datetime]] = {}  # each customer's last invoiced period end
    customers = _resolve(session, scope, _BY_EXTERNAL_ID, wanted, closed)
    by_subscription = _resolve(session, scope, _BY_SUBSCRIPTION, subscribed, closed)
    oldest, newest = received_at - policy.max_past, received_at + policy.max_future
    oldest_hour, newest_hour = event_store.hour_number(oldest), event_store.hour_number(newest)
    needed = {code: needed_property(spec) for code, spec in specs.items()}
    reject_customer = policy.unknown_customer is Unknown.REJECT
    reject_meter = policy.unknown_meter is Unknown.REJECT
    reject_late = policy.late_events is LateEvents.REJECT
    instant = event_store.stored_instant
    meters, hours, occurred = columns.meters, columns.hours, columns.occurred
    properties = columns.properties
    admitted: list[int] = []
    ids = columns.ids
    taken: set[str] = set()  # the ids admitted so far
    for k in positions:
        hour = hours[k]
        if hour <= oldest_hour and (hour < oldest_hour or instant(occurred[k]) < oldest):
            statuses[k] = REJECTED
            problems[k] = _TOO_OLD
            continue
        if hour >= newest_hour and (hour > newest_hour or instant(occurred[k]) > newest):
            statuses[k] = REJECTED
            problems[k] = _IN_FUTURE
            continue
        by_sub = via_subscription[k]
        customer_id = (by_subscription if by_sub else customers).get(refs[k])
        if customer_id is None and reject_customer:
            statuses[k] = REJECTED
            problems[k] = _NO_SUBSCRIPTION if by_sub else _NO_CUSTOMER
            continue
        meter = meters[k]
        if meter not in specs:
            if reject_meter:
                statuses[k] = REJECTED
                problems[k] = _NO_METER
                continue
            customer_id = None  # held until the meter exists
        need = needed.get(meter)
        if need is not None and (problem := value_problem(need, properties[k])) is not None:
            statuses[k] = REJECTED
            problems[k] = (problem,)
            continue
        if customer_id is not None:
            end = closed.get(customer_id)
            if (
                end is not None
                and reject_late
                and hour <= end[0]
                and (hour < end[0] or instant(occurred[k]) < end[1])
            ):
                statuses[k] = REJECTED
                problems[k] = _LATE
                continue
        # Judged on its own first, as if stored after the events before it: a repeat that
        # would be rejected alone is rejected, one that would be stored is a duplicate.
        if ids[k] in taken:
            statuses[k] = DUPLICATE
            continue
        customer_ids[k] = customer_id
        admitted.append(k)
        taken.add(ids[k])
    return admitted


def needed_property(spec: MeterSpec) -> tuple[str, bool] | None:
    """The property an event of the meter must carry, and whether it must be a number (a
    meter that adds, compares or weighs values; a unique count takes any text). An event
    without it would count for nothing, unnoticed: it is refused."""
    if spec.aggregation is Aggregation.COUNT or spec.value_property is None:
        return None
    return spec.value_property, spec.aggregation is not Aggregation.UNIQUE_COUNT


def value_problem(need: tuple[str, bool], properties: Mapping[str, str]) -> Problem | None:
    """The problem if the property `need` names is missing, or not a number where it must be."""
    name, number = need
    raw = properties.get(name)
    if raw is None:
        return Problem(
            ErrorCode.MISSING_FIELD, f"the meter counts property {name!r}", f"properties.{name}"
        )
    if not number or (type(raw) is str and raw.isdigit() and raw.isascii()):  # a whole number
        return None
    try:
        D(raw)
    except RatecardError:
        return Problem(ErrorCode.INVALID_VALUE, "must be a number", f"properties.{name}")
    return None


# Who a batch's events are for, one statement a chunk of references: the customer by external id
# (`_BY_EXTERNAL_ID`) or by subscription id (`_BY_SUBSCRIPTION`), with the end of its last
# invoiced usage period (NULL: none), found through the closures' unique index.
_CU, _SU, _UC = CustomerRow.__table__.c, SubscriptionRow.__table__.c, UsageClosureRow.__table__.c


def _closed_until_of(customer_id: Any) -> Any:
    return (
        select(func.max(_UC.period_end_at))
        .where(_UC.tenant_id == bindparam("tenant"), _UC.mode == bindparam("mode"))
        .where(_UC.customer_id == customer_id)
        .scalar_subquery()
    )


def _resolver(key: Any, customer_id: Any, table: Any) -> Any:
    return select(key, customer_id, _closed_until_of(customer_id)).where(
        table.c.tenant_id == bindparam("tenant"),
        table.c.mode == bindparam("mode"),
        key.in_(bindparam("refs", expanding=True)),
    )


_BY_EXTERNAL_ID = _resolver(_CU.external_id, _CU.id, CustomerRow.__table__)
_BY_SUBSCRIPTION = _resolver(_SU.id, _SU.customer_id, SubscriptionRow.__table__)


def _resolve(
    session: Session,
    scope: TenantScope,
    statement: Any,
    refs: set[str],
    closed: dict[str, tuple[int, datetime]],
) -> dict[str, str]:
    """Each known reference's customer id; each customer's last invoiced period end (as its
    hour number and instant) into `closed`."""
    found: dict[str, str] = {}
    ordered = sorted(refs)
    connection = session.connection()
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        params = {"tenant": scope.tenant_id, "mode": scope.mode, "refs": chunk}
        for ref, customer_id, end_at in connection.execute(statement, params):
            found[str(ref)] = str(customer_id)
            if end_at is not None:
                end = _instant(end_at)
                closed[str(customer_id)] = (event_store.hour_number(end), end)
    return found


def _instant(value: Any) -> datetime:
    """`max()` over a UtcDateTime loses the column type on SQLite: read it back here."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value
