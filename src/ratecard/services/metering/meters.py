"""Meters as aggregation specs, and re-aggregation when a meter's definition changes.

    >>> redefine_meter(uow, "api_calls", aggregation="sum", value_property="tokens",
    ...                filters={"model": ["gpt-x"]}, group_by=["region"])   # doctest: +SKIP
    >>> redefine(uow, row, Definition("max", "tokens", {}, ("region",)))    # doctest: +SKIP

A meter row holds its aggregation, value property, filters (``{property: value or [values]}``),
group-by dimensions, reset (``never`` makes it cumulative) and an optional rounding of the
period's quantity (mode and decimal places), applied when usage is read: raw events and rollups
keep every digit, so changing the rounding needs no rebuild. The first four are its
`Definition`: raw events are never touched by a redefinition; the meter's rollups are dropped
and rebuilt from them in the same transaction (`redefine`, which ``PATCH /v1/meters/{id}`` and
`redefine_meter` share), so usage queries and invoices read the new definition everywhere at
once. `meter_spec` is the one check of a definition: a refused one changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from ratecard.adapters.db import event_reads, rollup_rows, rollup_store
from ratecard.adapters.db.models import MeterRow
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import (
    Aggregation,
    Event,
    GroupKey,
    MeterReset,
    MeterRounding,
    MeterSpec,
    PropertyFilter,
)
from ratecard.core.errors import ValidationFailed, invalid
from ratecard.core.money import RoundingMode
from ratecard.core.rollups import Partial, decomposable, hour_of, partials

if TYPE_CHECKING:
    from ratecard.services.metering.rebuild import Prepared

_FLUSH_EVERY = 5_000  # rollup rows a write, at least (a customer's rows are written together)


class MeterFields(Protocol):
    """What a meter's spec is made of: a `MeterRow`, or a row of just these columns
    (`usage_reader.UsageReader.checked` reads them without loading the ORM object)."""

    @property
    def aggregation(self) -> str: ...
    @property
    def value_field(self) -> str | None: ...
    @property
    def filters(self) -> dict[str, Any] | None: ...
    @property
    def group_by(self) -> list[Any] | None: ...
    @property
    def reset(self) -> str: ...
    @property
    def rounding_mode(self) -> str | None: ...
    @property
    def rounding_precision(self) -> int | None: ...


def meter_spec(row: MeterFields) -> MeterSpec:
    """The spec of a meter, or `ValidationFailed` naming the meter's field that cannot be."""
    try:
        kind = Aggregation(row.aggregation)
    except ValueError:
        raise invalid(f"unknown aggregation {row.aggregation!r}", "aggregation") from None
    if kind is not Aggregation.COUNT and not row.value_field:
        raise invalid(f"aggregation {kind.value!r} needs value_field", "value_field")
    group_by = tuple(str(g) for g in (row.group_by or ()))
    if len(set(group_by)) != len(group_by):  # the usage API keys a group by its dimensions
        raise invalid("each dimension at most once", "group_by")
    filters = tuple(
        PropertyFilter(
            name, tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)
        )
        for name, value in sorted((row.filters or {}).items())
    )
    return MeterSpec(
        kind,
        value_property=row.value_field or None,
        filters=filters,
        group_by=group_by,
        reset=MeterReset.NEVER if row.reset == "never" else MeterReset.PERIOD,
        rounding=rounding_of(row),
    )


def checked_spec(row: MeterFields, at: str = "") -> MeterSpec:
    """`meter_spec`, its refusal naming the field under `at` (``"body"``: a request's)."""
    try:
        return meter_spec(row)
    except ValidationFailed as failed:
        if not at:
            raise
        raise ValidationFailed(
            replace(p, field=at if p.field is None else f"{at}.{p.field}") for p in failed.problems
        ) from None


def rounding_of(row: MeterFields) -> MeterRounding | None:
    """The meter's rounding of its period quantity (None: exact)."""
    if row.rounding_mode is None:
        return None
    assert row.rounding_precision is not None, "the schema sets both or neither"
    return MeterRounding(RoundingMode(row.rounding_mode), row.rounding_precision)


class SpecCache:
    """The specs of each scope's meters, as of its tenant's `meters_revision` (raised by every
    write of a meter's row, in the same transaction): what a usage report would otherwise read
    each time. A reader that saw revision R takes what was cached at R, and caches what it
    reads at R; what it reads may be newer than R, but never older, and a later reader sees a
    newer revision and reads again. Shared by the request threads: an entry is replaced
    whole, under a lock, and read without one."""

    def __init__(self, max_scopes: int = 4_096) -> None:
        self._max_scopes = max_scopes
        self._by_scope: dict[TenantScope, tuple[int, dict[str, MeterSpec]]] = {}
        self._lock = threading.Lock()

    def get(self, scope: TenantScope, revision: int) -> dict[str, MeterSpec]:
        found = self._by_scope.get(scope)
        return found[1] if found is not None and found[0] == revision else {}

    def put(self, scope: TenantScope, revision: int, specs: dict[str, MeterSpec]) -> None:
        with self._lock:
            found = self._by_scope.get(scope)
            if found is not None and found[0] > revision:
                return  # a newer reader's: keep it
            if found is not None and found[0] == revision:
                specs = {**found[1], **specs}
            elif found is None and len(self._by_scope) >= self._max_scopes:
                del self._by_scope[next(iter(self._by_scope))]  # the oldest scope cached
            self._by_scope[scope] = (revision, specs)


#: The process's cache of meter specs (`usage_reader.UsageReader.load_specs`).
SPECS = SpecCache()


@dataclass(frozen=True, slots=True)
class Definition:
    """What a meter counts: a change to any of it re-aggregates the meter from raw events.
    (Its name and rounding are not in it: rounding applies when usage is read.)"""

    aggregation: str
    value_field: str | None
    filters: dict[str, Any]  # {property: value or [values]}
    group_by: tuple[str, ...]

    @classmethod
    def of(cls, row: MeterFields) -> Definition:
        return cls(
            row.aggregation,
            row.value_field,
            dict(row.filters or {}),
            tuple(str(g) for g in (row.group_by or ())),
        )


@dataclass(frozen=True, slots=True)
class _Redefined:
    """A meter's `MeterFields` under another definition: what `meter_spec` checks first."""

    aggregation: str
    value_field: str | None
    filters: dict[str, Any]
    group_by: list[Any]
    reset: str
    rounding_mode: str | None
    rounding_precision: int | None


def redefine(
    uow: UnitOfWork,
    row: MeterRow,
    definition: Definition,
    *,
    at: str = "",
    prepared: Prepared | None = None,
) -> int:
    """Give the meter (locked by the caller: `get_for_update`) `definition` and rebuild its
    rollups from raw events; the caller commits. A definition `meter_spec` refuses raises
    `ValidationFailed` (fields named under `at`) before anything changes.

    Returns the number of rollup partials written. The rebuild reads every raw event of the
    meter: its time grows with the meter's history, unless `prepared` (`rebuild.prepare`)
    read them already, outside the lock. None is needed when only the aggregation changes
    between kinds that read merged partials (sum, max, min, latest, average): a rollup row
    holds the same partial whichever of them reads it (`core.rollups`), so the change takes
    effect at once.
    """
    before = Definition.of(row)
    rebuild = needs_rebuild(row, definition, at)
    row.aggregation = definition.aggregation
    row.value_field = definition.value_field
    row.filters = dict(definition.filters)
    row.group_by = list(definition.group_by)
    uow.session.flush()  # raises the tenant's meters_revision (`models._meters_changed`)
    if not rebuild:
        return 0
    if prepared is not None:
        if prepared.fits(before, definition):
            return prepared.finish(uow, row)
        prepared.close()  # another change came between: read again, under the lock
    return rebuild_rollups(uow.session, uow.scope, row)


def needs_rebuild(row: MeterFields, definition: Definition, at: str = "") -> bool:
    """Whether giving the meter `definition` rebuilds its rollups; `ValidationFailed` (fields
    named under `at`) if `meter_spec` refuses it."""
    fields = as_defined(row, definition)
    try:
        was: MeterSpec | None = meter_spec(row)
    except ValidationFailed:  # a row stored before its definition was checked: rebuilt
        was = None
    now = checked_spec(fields, at)
    before = Definition.of(row)
    return not (
        was and decomposable(was) and decomposable(now) and _same_partials(before, definition)
    )


def as_defined(row: MeterFields, definition: Definition) -> MeterFields:
    """The meter's fields with `definition` in place of its own (nothing written)."""
    return _Redefined(
        definition.aggregation,
        definition.value_field,
        definition.filters,
        list(definition.group_by),
        row.reset,
        row.rounding_mode,
        row.rounding_precision,
    )


def _same_partials(a: Definition, b: Definition) -> bool:
    """Whether rollups of `a` hold what `b` would write: the same values, events and groups."""
    return (a.value_field or None, a.filters, a.group_by) == (
        b.value_field or None,
        b.filters,
        b.group_by,
    )


def redefine_meter(
    uow: UnitOfWork,
    code: str,
    *,
    aggregation: str | None = None,
    value_property: str | None = None,
    filters: dict[str, Any] | None = None,
    group_by: list[str] | None = None,
) -> int:
    """Change a meter's definition (None: keep that part) and rebuild its rollups from raw
    events (`redefine`); the caller commits.

    Returns the number of rollup partials written.
    """
    row = uow.meters.get_for_update(uow.meters.get_by_code(code).id)
    now = Definition.of(row)
    return redefine(
        uow,
        row,
        Definition(
            now.aggregation if aggregation is None else aggregation,
            now.value_field if value_property is None else value_property,
            now.filters if filters is None else filters,
            now.group_by if group_by is None else tuple(group_by),
        ),
    )


def rebuild_rollups(
    session: Session, scope: TenantScope, meter: MeterRow, *, since: datetime | None = None
) -> int:
    """Drop the meter's rollups (from the UTC day of `since`: a sealed day's row is rebuilt
    whole) and rebuild them from raw events; return the number of hourly rows written.

    The events are read a customer after another (`event_reads.meter_events`), and the rows
    are written with plain inserts (`rollup_rows.insert_rollups`), a few customers' rows at a
    time (`rollup_chunks`): the keys are new, so nothing is read back or merged."""
    since_hour = rollup_store.day_of(since) if since is not None else None
    rollup_rows.delete_rollups(session, scope, meter.code, since_hour)
    spec = meter_spec(meter)
    if not decomposable(spec):
        return 0
    events = event_reads.meter_events(session, scope, meter.code, since=since_hour)
    with closing(events):  # its server-side cursor closed before the connection goes
        return sum(
            rollup_rows.insert_rollups(session, scope, chunk)
            for chunk in rollup_chunks(spec, meter.code, events)
        )


RollupPartial = tuple[str, str, datetime, GroupKey, Partial]  # customer, meter, hour, group


def rollup_chunks(
    spec: MeterSpec, code: str, events: Iterable[tuple[str, Event, int]]
) -> Iterator[list[RollupPartial]]:
    """The rollup partials of a meter's events given in (customer, time, arrival) order, in
    chunks of at least `_FLUSH_EVERY` (the last may be smaller), each customer's partials in
    one chunk (so its sealed days' rows are whole: `rollup_rows.insert_rollups`)."""
    pending: list[RollupPartial] = []
    bucket: list[tuple[Event, int]] = []
    current: tuple[str, datetime] | None = None
    for customer_id, event, seq in events:
        key = (customer_id, hour_of(event.timestamp))
        if key != current:
            if current is not None:
                pending += _partial_rows(spec, code, current, bucket)
                if len(pending) >= _FLUSH_EVERY and customer_id != current[0]:
                    yield pending
                    pending = []
            current, bucket = key, []
        bucket.append((event, seq))
    if current is not None:
        pending += _partial_rows(spec, code, current, bucket)
    if pending:
        yield pending


def _partial_rows(
    spec: MeterSpec, code: str, key: tuple[str, datetime], bucket: list[tuple[Event, int]]
) -> list[RollupPartial]:
    """The rollup rows of one customer's hour of events."""
    customer_id, hour_at = key
    return [(customer_id, code, hour_at, group, p) for group, p in partials(spec, bucket).items()]
