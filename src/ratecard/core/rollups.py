"""Rollups: partial aggregates per hour that merge into exactly what `aggregate()` gives.

Worked example — three events of a `sum` meter, two in one hour and one in the next::

    >>> from datetime import UTC, datetime
    >>> from decimal import Decimal
    >>> from ratecard.core.aggregation import Aggregation, Event, MeterSpec
    >>> spec = MeterSpec(Aggregation.SUM, value_property="tokens")
    >>> at = lambda h, m: datetime(2024, 1, 1, h, m, tzinfo=UTC)
    >>> first = partials(spec, [(Event(at(9, 5), {"tokens": "1.5"}), 1),
    ...                         (Event(at(9, 50), {"tokens": "2"}), 2)])
    >>> second = partials(spec, [(Event(at(10, 1), {"tokens": "0.25"}), 3)])
    >>> finish(spec, merge_groups([first, second])).total.value
    Decimal('3.75')

A `Partial` holds the event count, the count and sum of values, their min and max, and the latest
value with its order key (timestamp, then arrival sequence — the order `aggregate()` breaks ties
in). Those merge associatively, so count, sum, max, min, latest and average roll up; unique count
and weighted sum do not (`decomposable()` says which), and their usage is read from raw events.
Sums are exact: a result that would need rounding raises instead.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeVar

from ratecard.core.aggregation import (
    Aggregation,
    Event,
    GroupKey,
    MeterResult,
    MeterSpec,
    MeterValue,
    event_value,
    group_order,
    property_text,
    property_value,
    rounded,
)

K = TypeVar("K", bound=Hashable)

#: Exact addition of event values: anything that would round is a loud error.
_EXACT_SUM = decimal.Context(
    prec=200,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.FloatOperation, decimal.Overflow],
)
EXACT_SUM = _EXACT_SUM
_ZERO = Decimal(0)
_NOT_DECOMPOSABLE = frozenset({Aggregation.UNIQUE_COUNT, Aggregation.WEIGHTED_SUM})
OrderKey = tuple[datetime, int]


def decomposable(spec: MeterSpec) -> bool:
    """True when the meter's value can be computed from merged partials."""
    return spec.aggregation not in _NOT_DECOMPOSABLE


def hour_of(at: datetime) -> datetime:
    """The start of the UTC hour holding `at`."""
    return at.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class Partial:
    event_count: int
    value_count: int = 0
    value_sum: Decimal = Decimal(0)
    value_min: Decimal | None = None
    value_max: Decimal | None = None
    latest_value: Decimal | None = None
    latest_at: datetime | None = None
    latest_seq: int = 0

    def __post_init__(self) -> None:
        assert 0 <= self.value_count <= self.event_count, self
        assert (self.latest_value is None) == (self.value_count == 0), self

    def merge(self, other: Partial) -> Partial:
        latest = self
        if other.latest_at is not None and (
            self.latest_at is None
            or (other.latest_at, other.latest_seq) > (self.latest_at, self.latest_seq)
        ):
            latest = other
        return Partial(
            event_count=self.event_count + other.event_count,
            value_count=self.value_count + other.value_count,
            value_sum=_EXACT_SUM.add(self.value_sum, other.value_sum),
            value_min=_pick(min, self.value_min, other.value_min),
            value_max=_pick(max, self.value_max, other.value_max),
            latest_value=latest.latest_value,
            latest_at=latest.latest_at,
            latest_seq=latest.latest_seq,
        )


def _pick(choose: object, a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b) if choose is min else max(a, b)


def partial_of_event(spec: MeterSpec, event: Event, seq: int) -> Partial:
    """One event's partial (the caller has applied the meter's filters)."""
    value = event_value(event, spec.value_property) if spec.value_property else None
    if value is None:
        return Partial(event_count=1)
    return Partial(1, 1, value, value, value, value, event.timestamp, seq)


def partials(spec: MeterSpec, events: Iterable[tuple[Event, int]]) -> dict[GroupKey, Partial]:
    """Partials per group of the events (with their arrival sequence) that pass the filters."""
    keyed = keyed_partials(spec, ((None, e.timestamp, e.properties, seq) for e, seq in events))
    return {group: partial for (_, group), partial in keyed.items()}


def keyed_partials(
    spec: MeterSpec,
    rows: Iterable[tuple[K, Any, Mapping[str, str | Decimal], int]],
    instant: Callable[[Any], datetime] | None = None,
) -> dict[tuple[K, GroupKey], Partial]:
    """Partials per (caller's key, group) of rows ``(key, timestamp, properties, seq)``.

    Folds each key's rows in the order given, exactly as merging one-event partials left to
    right would (`Partial.merge`), but with plain arithmetic on a mutable accumulator: this is
    the ingestion hot path. Rows that fail the meter's filters are skipped.

    The timestamps are only compared with those of the same key, and `instant` (when given)
    makes the latest one of each a `datetime`: ingestion passes stored instant texts, which
    compare in time order within one hour (its keys are hourly), and reads back one per key.
    """
    filters = [(f.property, f.values) for f in spec.filters]
    group_by = spec.group_by
    name = spec.value_property
    add = _EXACT_SUM.add
    # [event_count, value_count, value_sum, value_min, value_max, latest_value, at, seq]
    acc: dict[tuple[K, GroupKey], list[Any]] = {}
    for key, at, properties, seq in rows:
        if filters and not all(
            (v := properties.get(prop)) is not None and property_text(v) in values
            for prop, values in filters
        ):
            continue
        group: GroupKey = (
            tuple(None if (g := properties.get(n)) is None else property_text(g) for n in group_by)
            if group_by
            else ()
        )
        value = property_value(properties, name) if name else None
        cell = acc.get((key, group))
        if cell is None:
            if value is None:
                acc[(key, group)] = [1, 0, _ZERO, None, None, None, None, 0]
            else:
                acc[(key, group)] = [1, 1, value, value, value, value, at, seq]
            continue
        cell[0] += 1
        if value is None:
            cell[2] = add(cell[2], _ZERO)
            continue
        cell[1] += 1
        cell[2] = add(cell[2], value)
        low, high = cell[3], cell[4]
        if low is None or value < low:
            cell[3] = value
        if high is None or value > high:
            cell[4] = value
        latest_at = cell[6]
        if latest_at is None or (at, seq) > (latest_at, cell[7]):
            cell[5], cell[6], cell[7] = value, at, seq
    if instant is not None:
        for cell in acc.values():
            if cell[6] is not None:
                cell[6] = instant(cell[6])
    return {k: Partial(*cell) for k, cell in acc.items()}


def merge_groups(parts: Iterable[Mapping[GroupKey, Partial]]) -> dict[GroupKey, Partial]:
    out: dict[GroupKey, Partial] = {}
    for part in parts:
        for key, partial in part.items():
            current = out.get(key)
            out[key] = partial if current is None else current.merge(partial)
    return out


def value_of(kind: Aggregation, partial: Partial) -> MeterValue:
    """The meter value of one merged partial, as `aggregate()` computes it."""
    assert kind not in _NOT_DECOMPOSABLE, f"{kind} does not roll up"
    count = partial.event_count
    if kind is Aggregation.COUNT:
        return MeterValue(Fraction(count), count)
    if partial.value_count == 0:
        return MeterValue(Fraction(0), count)
    if kind is Aggregation.SUM:
        exact = Fraction(partial.value_sum)
    elif kind is Aggregation.MAX:
        assert partial.value_max is not None
        exact = Fraction(partial.value_max)
    elif kind is Aggregation.MIN:
        assert partial.value_min is not None
        exact = Fraction(partial.value_min)
    elif kind is Aggregation.LATEST:
        assert partial.latest_value is not None
        exact = Fraction(partial.latest_value)
    else:
        assert kind is Aggregation.AVERAGE, kind
        exact = Fraction(partial.value_sum) / partial.value_count
    return MeterValue(exact, count)


def finish(spec: MeterSpec, groups: Mapping[GroupKey, Partial]) -> MeterResult:
    """The meter result (total and groups) of merged partials, rounded as the meter says."""
    kind = spec.aggregation
    total = Partial(0)
    for partial in groups.values():
        total = total.merge(partial)
    if not spec.group_by:
        return rounded(spec, MeterResult(value_of(kind, total)))
    ordered = sorted(groups.items(), key=lambda kv: group_order(kv[0]))
    return rounded(
        spec,
        MeterResult(
            value_of(kind, total), tuple((key, value_of(kind, part)) for key, part in ordered)
        ),
    )
