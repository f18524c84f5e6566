"""Meter aggregation: events in, one exact value per period (and per group) out.

Worked example — Lago's weighted sum: event values are increments to a running level and the
result is the time-weighted mean level over the period. A level of 2 held for the first two hours
of August 2023, then 1 for the rest of the month::

    >>> from datetime import UTC, datetime
    >>> from decimal import Decimal
    >>> spec = MeterSpec(Aggregation.WEIGHTED_SUM, value_property="gb")
    >>> events = [Event(datetime(2023, 8, 1, 0, tzinfo=UTC), {"gb": Decimal(2)}),
    ...           Event(datetime(2023, 8, 1, 2, tzinfo=UTC), {"gb": Decimal(-1)})]
    >>> result = aggregate(spec, events, datetime(2023, 8, 1, tzinfo=UTC),
    ...                    datetime(2023, 9, 1, tzinfo=UTC))
    >>> result.total.exact
    Fraction(373, 372)
    >>> result.total.event_count
    2

Kinds: count, sum, max, min, unique_count, latest, average, weighted_sum. Periods are half-open
`[start, end)`. `MeterSpec.filters` keep only matching events (every filter must match);
`group_by` gives one result per combination of property values beside the total. A meter with
`reset=NEVER` is cumulative: it reads every event before `end` (Stripe's `last_ever`; for a
weighted sum, the events before `start` set the level carried into the period). Results are
exact `Fraction`s, with a `Decimal` beside them (exact whenever the fraction is a finite decimal,
else 60 significant digits). Empty periods aggregate to 0; `event_count` tells them apart.

Rounding. A meter may round its period quantity (`MeterSpec.rounding`): the total and each group
are rounded from their own exact values, once, at the end, with the mode named — 2.1 GB held
rounds up to 3 for billing, while raw events and rollups keep every digit::

    >>> up = MeterSpec(Aggregation.SUM, value_property="gb",
    ...                rounding=MeterRounding(RoundingMode.UP, 0))
    >>> held = [Event(datetime(2023, 8, 2, tzinfo=UTC), {"gb": Decimal("2.1")})]
    >>> billed = aggregate(up, held, datetime(2023, 8, 1, tzinfo=UTC),
    ...                    datetime(2023, 9, 1, tzinfo=UTC))
    >>> billed.total.value, billed.total.unrounded
    (Decimal('3'), Fraction(21, 10))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from ratecard.core.errors import ErrorCode, RatecardError, invalid
from ratecard.core.money import D, RoundingMode, quantize, to_decimal

GroupKey = tuple[str | None, ...]
#: The most decimal places a meter may round its quantity to.
MAX_ROUNDING_PRECISION = 18
_MICROSECOND = timedelta(microseconds=1)
_ZERO = Decimal(0)


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    MIN = "min"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"
    AVERAGE = "average"
    WEIGHTED_SUM = "weighted_sum"


class MeterReset(StrEnum):
    PERIOD = "period"  # each billing period starts from nothing
    NEVER = "never"  # cumulative: every event before the period's end counts


@dataclass(frozen=True, slots=True)
class Event:
    """A usage event: an aware UTC instant and its properties (numbers as Decimal or text)."""

    timestamp: datetime
    properties: Mapping[str, str | Decimal]

    def __post_init__(self) -> None:
        assert self.timestamp.utcoffset() == timedelta(0), "event timestamps are aware UTC"


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    """Keep events whose `property` is one of `values` (compared as text)."""

    property: str
    values: tuple[str, ...]

    def matches(self, event: Event) -> bool:
        value = event.properties.get(self.property)
        return value is not None and _text(value) in self.values


@dataclass(frozen=True, slots=True)
class MeterRounding:
    """Round a period's quantity to `precision` decimal places (0: whole units) with `mode`.

    >>> MeterRounding(RoundingMode.HALF_EVEN, 1).round(Fraction(25, 100))
    Fraction(1, 5)
    """

    mode: RoundingMode
    precision: int

    def __post_init__(self) -> None:
        assert isinstance(self.mode, RoundingMode), self.mode
        if (
            not isinstance(self.precision, int)
            or isinstance(self.precision, bool)
            or not 0 <= self.precision <= MAX_ROUNDING_PRECISION
        ):
            raise invalid(
                f"decimal places from 0 to {MAX_ROUNDING_PRECISION}, not {self.precision!r}",
                "rounding.precision",
            )

    def round(self, exact: Fraction) -> Fraction:
        """`exact` rounded once, exactly (no intermediate decimal)."""
        return Fraction(quantize(exact, self.precision, self.mode))


@dataclass(frozen=True, slots=True)
class MeterSpec:
    aggregation: Aggregation
    value_property: str | None = None
    filters: tuple[PropertyFilter, ...] = ()
    group_by: tuple[str, ...] = ()
    reset: MeterReset = MeterReset.PERIOD
    rounding: MeterRounding | None = None  # of the period's quantity (total and each group)

    def __post_init__(self) -> None:
        needs_value = self.aggregation is not Aggregation.COUNT
        assert not needs_value or self.value_property, f"{self.aggregation} needs value_property"


@dataclass(frozen=True, slots=True)
class MeterValue:
    exact: Fraction
    event_count: int
    #: The exact value before the meter's rounding (None: the meter does not round).
    unrounded: Fraction | None = None

    @property
    def value(self) -> Decimal:
        """The value as a Decimal: exact for finite decimals, else 60 significant digits."""
        return to_decimal(self.exact)


@dataclass(frozen=True, slots=True)
class MeterResult:
    total: MeterValue
    groups: tuple[tuple[GroupKey, MeterValue], ...] = field(default=())

    def group(self, *values: str | None) -> MeterValue:
        """The result of one group, by its `group_by` values in order (zero if it had no events)."""
        for key, value in self.groups:
            if key == values:
                return value
        return MeterValue(Fraction(0), 0)


#: Stripe's legacy `recurring.aggregate_usage` modes as meter settings.
STRIPE_AGGREGATE_USAGE: dict[str, tuple[Aggregation, MeterReset]] = {
    "sum": (Aggregation.SUM, MeterReset.PERIOD),
    "max": (Aggregation.MAX, MeterReset.PERIOD),
    "last_during_period": (Aggregation.LATEST, MeterReset.PERIOD),
    "last_ever": (Aggregation.LATEST, MeterReset.NEVER),
}


def stripe_meter(aggregate_usage: str, value_property: str) -> MeterSpec:
    """The meter behind a Stripe legacy metered price (`sum`, `max`, `last_during_period`, ...)."""
    if aggregate_usage not in STRIPE_AGGREGATE_USAGE:
        raise RatecardError(
            f"unknown aggregate_usage {aggregate_usage!r}",
            code=ErrorCode.INVALID_VALUE,
            field="aggregate_usage",
        )
    kind, reset = STRIPE_AGGREGATE_USAGE[aggregate_usage]
    return MeterSpec(kind, value_property=value_property, reset=reset)


def rounded(spec: MeterSpec, result: MeterResult) -> MeterResult:
    """`result` with the meter's rounding applied to the total and to each group, each from
    its own exact value (so rounded groups need not add up to the rounded total)."""
    rounding = spec.rounding
    if rounding is None:
        return result

    def one(value: MeterValue) -> MeterValue:
        assert value.unrounded is None, "a meter value is rounded once"
        return MeterValue(rounding.round(value.exact), value.event_count, value.exact)

    return MeterResult(one(result.total), tuple((key, one(v)) for key, v in result.groups))


def _text(value: str | Decimal) -> str:
    return value if isinstance(value, str) else str(value.normalize())


def property_text(value: str | Decimal) -> str:
    """A property value as filters and groups compare it (numbers normalized)."""
    return _text(value)


def group_key(spec: MeterSpec, event: Event) -> GroupKey:
    """The event's group: its `group_by` property values as text (None where absent)."""
    return tuple(
        None if (v := event.properties.get(name)) is None else _text(v) for name in spec.group_by
    )


def group_order(key: GroupKey) -> str:
    """The order groups are reported in."""
    return repr(key)


def event_value(event: Event, name: str) -> Decimal | None:
    """The numeric property `name` of an event; None when absent, an error when not a number."""
    return property_value(event.properties, name)


def property_value(properties: Mapping[str, str | Decimal], name: str) -> Decimal | None:
    """`event_value` of a properties map."""
    raw = properties.get(name)
    if raw is None or isinstance(raw, Decimal):
        return raw
    if type(raw) is str and raw.isdigit() and raw.isascii():  # a whole number: nothing to refuse
        return Decimal(raw)
    try:
        return D(raw)
    except RatecardError:
        raise RatecardError(
            f"event property {name!r} is not a number: {raw!r}",
            code=ErrorCode.INVALID_VALUE,
            field=f"properties.{name}",
        ) from None


def aggregate(
    spec: MeterSpec,
    events: Iterable[Event],
    start: datetime,
    end: datetime,
    *,
    initial_levels: Mapping[GroupKey, Decimal] | None = None,
) -> MeterResult:
    """Aggregate `events` over `[start, end)` (or everything before `end` when cumulative).

    `initial_levels` carries a weighted sum's level into the period, keyed by group (the key
    `()` is the total), for when the earlier events are not at hand.
    """
    if start.utcoffset() is None or end.utcoffset() is None or not start < end:
        raise RatecardError(
            f"invalid period [{start}, {end})", code=ErrorCode.INVALID_PERIOD, field="period"
        )
    levels = initial_levels or {}
    kept = [e for e in events if e.timestamp < end and all(f.matches(e) for f in spec.filters)]
    kept.sort(key=lambda e: e.timestamp)  # stable: ties keep their arrival order
    total = _aggregate_one(spec, kept, start, end, levels.get((), _ZERO))
    if not spec.group_by:
        return rounded(spec, MeterResult(total))
    partitions: dict[GroupKey, list[Event]] = {}
    for event in kept:
        partitions.setdefault(group_key(spec, event), []).append(event)
    groups = tuple(
        (key, _aggregate_one(spec, partition, start, end, levels.get(key, _ZERO)))
        for key, partition in sorted(partitions.items(), key=lambda kv: group_order(kv[0]))
    )
    return rounded(spec, MeterResult(total, groups))


def _aggregate_one(
    spec: MeterSpec, events: Sequence[Event], start: datetime, end: datetime, level: Decimal
) -> MeterValue:
    """One aggregation over time-ordered events that all fall before `end`."""
    if spec.aggregation is Aggregation.WEIGHTED_SUM:
        return _weighted_sum(spec, events, start, end, level)
    cumulative = spec.reset is MeterReset.NEVER
    window = [e for e in events if cumulative or e.timestamp >= start]
    if spec.aggregation is Aggregation.COUNT:
        return MeterValue(Fraction(len(window)), len(window))
    name = spec.value_property
    assert name is not None
    if spec.aggregation is Aggregation.UNIQUE_COUNT:
        present = [v for e in window if (v := e.properties.get(name)) is not None]
        return MeterValue(Fraction(len({_text(v) for v in present})), len(window))
    values = [v for e in window if (v := event_value(e, name)) is not None]
    return MeterValue(_combine(spec.aggregation, values), len(window))


def _combine(kind: Aggregation, values: Sequence[Decimal]) -> Fraction:
    if not values:
        return Fraction(0)
    if kind is Aggregation.SUM:
        return sum((Fraction(v) for v in values), Fraction(0))
    if kind is Aggregation.MAX:
        return Fraction(max(values))
    if kind is Aggregation.MIN:
        return Fraction(min(values))
    if kind is Aggregation.LATEST:
        return Fraction(values[-1])
    assert kind is Aggregation.AVERAGE, kind
    return sum((Fraction(v) for v in values), Fraction(0)) / len(values)


def _weighted_sum(
    spec: MeterSpec, events: Sequence[Event], start: datetime, end: datetime, level: Decimal
) -> MeterValue:
    """Σ level × time held / period length, the level starting at `level` (plus earlier events
    when cumulative). Events at the same instant combine: the zero-length segment adds nothing."""
    name = spec.value_property
    assert name is not None
    cumulative = spec.reset is MeterReset.NEVER
    running = Fraction(level)
    weighted = Fraction(0)
    held_since = start
    count = 0
    for event in events:
        value = event_value(event, name)
        if event.timestamp < start:
            if cumulative and value is not None:
                running += Fraction(value)
            continue
        count += 1
        if value is None:
            continue
        weighted += running * ((event.timestamp - held_since) // _MICROSECOND)
        running += Fraction(value)
        held_since = event.timestamp
    weighted += running * ((end - held_since) // _MICROSECOND)
    return MeterValue(weighted / ((end - start) // _MICROSECOND), count)
