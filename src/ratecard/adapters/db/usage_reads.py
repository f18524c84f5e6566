"""Usage reads: every meter's value for a customer over a period, in one statement.

    >>> found = read_usage(session, scope, customer_id, [UsageRead(...), ...])  # doctest: +SKIP

A read takes the meter's sealed days from their daily rows, the whole hours not sealed from the
hourly rows, and the raw events at the period's edges (the parts of hours it cuts), and merges
them per meter and group: the database sums, Python merges what SQLite would sum through
floating point.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from ratecard.adapters.db.event_reads import _fetch_all, _stored_event
from ratecard.adapters.db.event_store import _TICK, hour_number
from ratecard.adapters.db.models import (
    ROLLUP_VALUES,
)
from ratecard.adapters.db.rollup_store import (
    _DAY,
    _MERGED_VALUES_POSTGRES,
    _SEALED,
    day_of,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.types import sqlite_instant_text
from ratecard.core.aggregation import Event, GroupKey
from ratecard.core.rollups import EXACT_SUM, Partial


class UsageRead(NamedTuple):
    """One meter's share of `read_usage`: its raw events in each of `spans` (disjoint
    ``[start, end)``: a period's edges, or all of a period shorter than its hours), and its
    rollups over the whole hours ``[hours[0], hours[1])`` (from the first when ``hours[0]`` is
    None; none when `hours` is None)."""

    meter_code: str
    spans: Sequence[tuple[datetime, datetime]]
    hours: tuple[datetime | None, datetime] | None


class UsageFound(NamedTuple):
    rollups: dict[GroupKey, Partial]  # merged per group
    events: list[list[tuple[Event, int]]]  # a list per span, in (time, arrival) order


def read_usage(
    session: Session, scope: TenantScope, customer_id: str, reads: Sequence[UsageRead]
) -> list[UsageFound]:
    """What a customer's usage of several meters is made of, in one statement.

    The usage hot path, where each statement is a round trip (most of a read's time on
    PostgreSQL): every meter's rollups, one row per group, and its raw events at the edges, one
    row each, come back together. A meter's whole sealed days are read from their daily rows,
    the hours around them from hourly rows (three indexed ranges, the seal read in the same
    statement, so a sealing that commits meanwhile is seen wholly or not at all). PostgreSQL
    merges the rollups in SQL (NUMERIC sums are exact). SQLite sums the counts and picks the
    latest row in SQL (text instants compare in time order), and hands the decimal texts over
    joined, to be added exactly here.
    """
    found = [UsageFound({}, [[] for _ in read.spans]) for read in reads]
    if not reads:
        return found
    postgres = session.get_bind().dialect.name == "postgresql"
    shape = tuple(
        (len(read.spans), read.hours is not None, read.hours is not None and read.hours[0] is None)
        for read in reads
    )
    params = {"tenant": scope.tenant_id, "mode": scope.mode.value, "customer": customer_id}
    instant = (lambda at: at) if postgres else sqlite_instant_text
    for i, read in enumerate(reads):
        params |= _usage_params(i, read, instant)
    merged = _postgres_merged if postgres else _sqlite_merged
    for row in _fetch_all(session, _usage_sql(postgres, shape), params):
        ask, into = row[0], found[row[0]]
        if row[2] is not None:  # a group's rollups (an event's row has no count)
            into.rollups[tuple(json.loads(row[1]))] = merged(row[1:])
            continue
        event, seq = _stored_event(postgres, row[8], row[1], row[9])
        spans = reads[ask].spans
        at = event.timestamp
        into.events[next(j for j, (s, e) in enumerate(spans) if s <= at < e)].append((event, seq))
    return found


def _usage_params(i: int, read: UsageRead, instant: Callable[[datetime], Any]) -> dict[str, Any]:
    """The values of the `i`-th read's marks in `_usage_sql`."""
    params: dict[str, Any] = {f"m{i}": read.meter_code}
    for j, (start, end) in enumerate(read.spans):
        params |= {f"h{i}_{j}": hour_number(start), f"k{i}_{j}": hour_number(end)}
        params |= {f"s{i}_{j}": instant(start), f"e{i}_{j}": instant(end)}
    if read.hours is not None:
        from_hour, to_hour = read.hours
        params |= {f"to{i}": instant(to_hour), f"last{i}": instant(day_of(to_hour))}
        if from_hour is not None:
            params[f"from{i}"] = instant(from_hour)
            params[f"first{i}"] = instant(day_of(from_hour + _DAY - _TICK))
    return params


@lru_cache(maxsize=512)
def _usage_sql(postgres: bool, shape: tuple[tuple[int, bool, bool], ...]) -> str:
    """The statement of `read_usage` for reads of this shape (per read: how many spans of raw
    events, whether it reads rollups, and whether from the first), made once: its text
    depends on nothing else, and building it cost a tenth of a millisecond a meter. Its rows:
    ``ask`` (the read's position), then a group's key and merged rollups (as
    `_MERGED_POSTGRES` or `_MERGED_SQLITE`), or an event's properties, blanks, its instant and
    its ``seq`` in the same columns as a group's latest instant and ``seq`` (the 9th and 10th).
    """

    def mark(name: str) -> str:
        return f"%({name})s" if postgres else f":{name}"

    if postgres:
        bottom, seal = "'-infinity'::timestamptz", f"coalesce({_SEALED}, '-infinity')"
        least, greatest, properties = "least", "greatest", "properties::text"
    else:
        bottom, seal = "''", f"coalesce({_SEALED}, '')"
        least, greatest, properties = "min", "max", "properties"
    scoped = (
        f"tenant_id = {mark('tenant')} AND mode = {mark('mode')} "
        f"AND customer_id = {mark('customer')}"
    )
    rollups: list[str] = []
    events: list[str] = []
    for i, (spans, has_hours, from_first) in enumerate(shape):
        where = f"{scoped} AND meter_code = {mark(f'm{i}')}"
        if spans:
            ranges = " OR ".join(
                f"(occurred_hour >= {mark(f'h{i}_{j}')} AND occurred_hour <= {mark(f'k{i}_{j}')} "
                f"AND occurred_at >= {mark(f's{i}_{j}')} AND occurred_at < {mark(f'e{i}_{j}')})"
                for j in range(spans)
            )
            events.append(
                f"SELECT {i}, {properties}, {'NULL, ' * 6}occurred_at, seq"
                f"{'' if postgres else ', NULL'} FROM events WHERE {where} AND ({ranges})"
            )
        if not has_hours:
            continue
        # Sealed days are read in [first_day, min(last_day, seal)); hours in [from_hour,
        # first_day) and from the end of the days read to the read's end.
        to, first = mark(f"to{i}"), bottom if from_first else mark(f"first{i}")
        days_to = f"{least}({mark(f'last{i}')}, {seal})"
        values = f"{i} AS ask, group_key, {', '.join(ROLLUP_VALUES)}"
        rollups += [
            f"SELECT day_at AS at, {values} FROM usage_rollups_daily WHERE {where} "
            f"AND day_at >= {first} AND day_at < {days_to}",
            f"SELECT hour_at, {values} FROM usage_rollups WHERE {where} "
            f"AND hour_at >= {greatest}({first}, {days_to}) AND hour_at < {to}",
        ]
        if not from_first:
            rollups.append(
                f"SELECT hour_at, {values} FROM usage_rollups WHERE {where} "
                f"AND hour_at >= {mark(f'from{i}')} AND hour_at < {least}({to}, {first})"
            )
    parts = events
    if rollups:
        merged = _MERGED_POSTGRES if postgres else _MERGED_SQLITE
        parts = [merged.format(" UNION ALL ".join(rollups)), *events]
    return " UNION ALL ".join(parts) + " ORDER BY 1, 9, 10"


def _postgres_merged(row: Sequence[Any]) -> Partial:
    _, events, values, total, low, high, latest, at, seq = row
    return Partial(int(events), int(values), total, low, high, latest, at, int(seq))


def _sqlite_merged(row: Sequence[Any]) -> Partial:
    _, events, values, totals, lows, highs, latest, at, seq, _newest = row
    return Partial(
        int(events),
        int(values),
        _sum_of(totals),
        _least(lows),
        _most(highs),
        None if latest is None else Decimal(latest),
        None if at is None else datetime.fromisoformat(at),
        int(seq or 0),
    )


_MERGED_POSTGRES = (
    f"SELECT ask, group_key, {_MERGED_VALUES_POSTGRES.format(at='at')} FROM ({{}}) AS u "
    "GROUP BY ask, group_key"
)
# The bare columns of an aggregate query with a single max() come from the row that has the
# maximum (SQLite documents this): here, the row with the latest (latest_at, latest_seq).
_MERGED_SQLITE = (
    "SELECT ask, group_key, sum(event_count), sum(value_count), group_concat(value_sum, ' '), "
    "group_concat(value_min, ' '), group_concat(value_max, ' '), latest_value, latest_at, "
    "latest_seq, max(latest_at || printf(' %020d', latest_seq)) "
    "FROM ({}) GROUP BY ask, group_key"
)


def _sum_of(texts: str) -> Decimal:
    add, total = EXACT_SUM.add, Decimal(0)
    for text in texts.split(" "):
        total = add(total, Decimal(text))
    return total


def _least(texts: str | None) -> Decimal | None:
    return None if texts is None else min(Decimal(t) for t in texts.split(" "))


def _most(texts: str | None) -> Decimal | None:
    return None if texts is None else max(Decimal(t) for t in texts.split(" "))
