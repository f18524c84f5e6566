"""Usage rollups: per customer, meter, hour (and sealed day) and group, merged as batches are
stored, and read back for usage queries.

    >>> add_rollups(session, scope, partials)                   # doctest: +SKIP
    >>> read_rollups(session, scope, customer_id, meter_code, lower, upper)  # doctest: +SKIP

Rows hold the decomposable parts of an aggregation (`core.rollups.Partial`: counts, sums, min,
max, the latest value), so merging two rows is exact. PostgreSQL merges a round's rows with
``COPY`` into a staging table and one ``INSERT ... ON CONFLICT DO UPDATE``; SQLite reads the
round's stored rows, merges in Python (exact decimals) and writes them back. A day sealed
(`rollup_seal`) is read from its daily row; the hours of the days not yet sealed from theirs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from ratecard.adapters.db.event_store import (
    _EPOCH,
    _stage,
    _utc,
    copy_column,
    copy_text,
    stored_instant,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.types import sqlite_instant_text
from ratecard.core.aggregation import GroupKey
from ratecard.core.rollups import Partial

ROLLUP_COLUMNS = (
    "tenant_id, mode, customer_id, meter_code, hour_at, group_key, event_count, value_count, "
    "value_sum, value_min, value_max, latest_value, latest_at, latest_seq"
)
_ROLLUP_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS rollup_staging (LIKE usage_rollups) ON COMMIT DELETE ROWS;
"""
_NEWER = (
    "excluded.latest_at IS NOT NULL AND (r.latest_at IS NULL OR "
    "(excluded.latest_at, excluded.latest_seq) > (r.latest_at, r.latest_seq))"
)
_MERGE_SET = f"""event_count = r.event_count + excluded.event_count,
    value_count = r.value_count + excluded.value_count,
    value_sum = r.value_sum + excluded.value_sum,
    value_min = LEAST(r.value_min, excluded.value_min),
    value_max = GREATEST(r.value_max, excluded.value_max),
    latest_value = CASE WHEN {_NEWER} THEN excluded.latest_value ELSE r.latest_value END,
    latest_at = CASE WHEN {_NEWER} THEN excluded.latest_at ELSE r.latest_at END,
    latest_seq = CASE WHEN {_NEWER} THEN excluded.latest_seq ELSE r.latest_seq END"""
# The hourly merge, which also says whether the round's first hour is before the seal (then
# `_DAILY_MERGE` follows): the statement's snapshot is taken after its lock on the rollups, so
# the seal it reads stays until the commit (`seal_rollups` waits for that lock). A second
# statement in every round, for the rare late one, cost PostgreSQL 12 % of its throughput.
_SEAL = "SELECT sealed_before FROM rollup_seal WHERE id = 1"  # `seal_rollups`
_SEALED = f"({_SEAL})"
_ROLLUP_MERGE = f"""
WITH merged AS (
INSERT INTO usage_rollups AS r ({ROLLUP_COLUMNS})
SELECT {ROLLUP_COLUMNS} FROM rollup_staging
ORDER BY customer_id, meter_code, hour_at, group_key
ON CONFLICT (tenant_id, mode, customer_id, meter_code, hour_at, group_key) DO UPDATE SET
    {_MERGE_SET}
)
SELECT %s::timestamptz < {_SEALED}
"""
# The daily level (`models.DailyRollupRow`, migration 0016).
DAILY_COLUMNS = ROLLUP_COLUMNS.replace("hour_at", "day_at")
_DAY = timedelta(days=1)
# A day is sealed this long after it ended: the late events of its last minutes mostly arrive
# before, and are then written once rather than to their hour and their day.
SEAL_LAG = timedelta(hours=1)
# The merge of rollup rows ``r`` (hourly or daily, ``at`` their start) per key, as
# `Partial.merge` does it: the newest row of a group is the one that starts last, since each
# row's latest event lies within its own hour or day. ``max`` of ``[start, seq, value]`` arrays
# picks it in one pass (``array_agg(... ORDER BY ...)`` sorted each group twice). The start's
# epoch is whole seconds, exact in any PostgreSQL's ``extract``.
_NEWEST = (
    "max(ARRAY[extract(epoch FROM {at})::numeric, latest_seq, latest_value]) "
    "FILTER (WHERE latest_at IS NOT NULL)"
)
_MERGED_VALUES_POSTGRES = (
    "sum(event_count), sum(value_count), sum(value_sum), min(value_min), max(value_max), "
    f"({_NEWEST})[3], max(latest_at), coalesce(({_NEWEST})[2], 0)::bigint"
)
_DAY_OF_HOUR = "date_trunc('day', hour_at, 'UTC')"
# After a round's hourly merge, the round's rows of sealed days into their days' rows.
_DAILY_MERGE = f"""
INSERT INTO usage_rollups_daily AS r ({DAILY_COLUMNS})
SELECT tenant_id, mode, customer_id, meter_code, {_DAY_OF_HOUR}, group_key,
    {_MERGED_VALUES_POSTGRES.format(at="hour_at")}
FROM rollup_staging WHERE hour_at < {_SEALED}
GROUP BY tenant_id, mode, customer_id, meter_code, {_DAY_OF_HOUR}, group_key
ORDER BY customer_id, meter_code, {_DAY_OF_HOUR}, group_key
ON CONFLICT (tenant_id, mode, customer_id, meter_code, day_at, group_key) DO UPDATE SET
    {_MERGE_SET}
"""


class _Level(NamedTuple):
    """SQLite's statements for one level of rollups (hourly or daily)."""

    table: str
    read: str  # the stored rows of listed keys (`_stored_rollups`)
    write: str  # a row, merged already (``INSERT OR REPLACE``)
    insert: str  # a row of a key not stored (`insert_rollups`)


def _level(table: str, at: str) -> _Level:
    # The listed keys first (CROSS JOIN keeps that order), each looked up in the primary key;
    # ``(...) IN (VALUES ...)`` would scan the table.
    key = f"tenant_id, mode, customer_id, meter_code, {at}, group_key"
    read = (
        f"WITH k ({key}) AS (VALUES %s) "
        f"SELECT r.tenant_id, r.mode, r.customer_id, r.meter_code, r.{at}, r.group_key, "
        "r.event_count, r.value_count, r.value_sum, r.value_min, r.value_max, r.latest_value, "
        f"r.latest_at, r.latest_seq FROM k CROSS JOIN {table} AS r "
        "ON r.tenant_id = k.tenant_id AND r.mode = k.mode AND r.customer_id = k.customer_id "
        f"AND r.meter_code = k.meter_code AND r.{at} = k.{at} AND r.group_key = k.group_key"
    )
    columns = ROLLUP_COLUMNS.replace("hour_at", at)
    insert = f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * 14)})"
    return _Level(table, read, insert.replace("INSERT", "INSERT OR REPLACE", 1), insert)


HOURLY = _level("usage_rollups", "hour_at")
DAILY = _level("usage_rollups_daily", "day_at")
_ROLLUP_CHUNK = 150  # keys per read: 900 parameters


@lru_cache(maxsize=4_096)
def group_text(key: GroupKey) -> str:
    """A group's stored text (a JSON array); the same few groups recur in every round."""
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def sealed_before(session: Session) -> datetime | None:
    """The seal (`seal_rollups`), read in the session's transaction: the days before it have
    daily rows."""
    dbapi: Any = session.connection().connection.dbapi_connection
    return _seal(dbapi, session.get_bind().dialect.name == "postgresql")


def add_rollups(
    session: Session,
    scope: TenantScope,
    partials: Iterable[tuple[str, str, datetime, GroupKey, Partial]],
) -> int:
    """Merge partials ``(customer_id, meter_code, hour_at, group, partial)`` into the rollups
    (one row per key, `Partial.merge` semantics); return how many keys were written. Those of
    sealed days merge into their days' rows too (`seal_rollups`).

    PostgreSQL: ``COPY`` into a staging table, then one ``INSERT ... ON CONFLICT DO UPDATE``
    doing the merge in SQL (NUMERIC sums are exact; keys in one order, so concurrent writers
    do not deadlock), and one more for the days. SQLite: the transaction holds the write lock,
    so the rows are read, merged here and written back with one ``executemany``.
    """
    merged: dict[tuple[str, str, datetime, GroupKey], Partial] = {}
    for customer_id, meter_code, hour_at, key, partial in partials:
        at = (customer_id, meter_code, hour_at, key)
        merge_into(merged, at, partial)
    if not merged:
        return 0
    dbapi: Any = session.connection().connection.dbapi_connection
    if session.get_bind().dialect.name == "postgresql":
        _merge_rollups_postgres(session, dbapi, scope, merged)
    else:
        _merge_rollups_sqlite(dbapi, scope, merged, HOURLY)
        sealed = _sealed_before(dbapi)
        if sealed is not None and min(hour for _, _, hour, _ in merged) < sealed:
            days: dict[tuple[str, str, datetime, GroupKey], Partial] = {}
            for (customer_id, meter_code, hour_at, key), partial in merged.items():
                if hour_at < sealed:
                    at = (customer_id, meter_code, day_of(hour_at), key)
                    merge_into(days, at, partial)
            _merge_rollups_sqlite(dbapi, scope, days, DAILY)
    return len(merged)


def merge_into(merged: dict[Any, Partial], key: Any, partial: Partial) -> None:
    """Merge `partial` into ``merged[key]`` (`Partial.merge`), or put it there."""
    current = merged.get(key)
    merged[key] = partial if current is None else current.merge(partial)


def day_of(at: datetime) -> datetime:
    """The UTC midnight that starts `at`'s day: its daily rollup's key."""
    return _EPOCH + (at - _EPOCH) // _DAY * _DAY


def _sealed_before(dbapi: Any) -> datetime | None:
    """SQLite: the seal (`seal_rollups`), read in the caller's transaction."""
    return _seal(dbapi, postgres=False)


def _seal(dbapi: Any, postgres: bool) -> datetime | None:
    """The seal (`seal_rollups`), read in the caller's transaction: the days before it have
    daily rows."""
    cursor = dbapi.cursor()
    try:
        cursor.execute(_SEAL)
        row = cursor.fetchone()
    finally:
        cursor.close()
    if row is None or row[0] is None:
        return None
    return _utc(row[0]) if postgres else stored_instant(row[0])


def rollup_row(
    scope: TenantScope,
    key: tuple[str, str, datetime, GroupKey],
    p: Partial,
    instant: Callable[[datetime], str],
) -> tuple[Any, ...]:
    """A rollup row as the column types store it (`ExactDecimal`, `UtcDateTime` text)."""
    return _rollup_key(scope, key, instant) + _rollup_values(p, instant)


def _rollup_key(
    scope: TenantScope, key: tuple[str, str, datetime, GroupKey], instant: Callable[[datetime], str]
) -> tuple[Any, ...]:
    """The key columns of a rollup row (its primary key)."""
    customer_id, meter_code, hour_at, group = key
    return (
        scope.tenant_id,
        scope.mode.value,
        customer_id,
        meter_code,
        instant(hour_at),
        group_text(group),
    )


def _rollup_values(p: Partial, instant: Callable[[datetime], str]) -> tuple[Any, ...]:
    """The value columns of a rollup row."""
    return (
        p.event_count,
        p.value_count,
        _decimal_text(p.value_sum),
        None if p.value_min is None else _decimal_text(p.value_min),
        None if p.value_max is None else _decimal_text(p.value_max),
        None if p.latest_value is None else _decimal_text(p.latest_value),
        None if p.latest_at is None else instant(p.latest_at),
        p.latest_seq,
    )


def instants() -> Callable[[datetime], str]:
    texts: dict[datetime, str] = {}

    def instant(at: datetime) -> str:
        text = texts.get(at)
        if text is None:
            text = texts[at] = sqlite_instant_text(at)
        return text

    return instant


def _merge_rollups_postgres(
    session: Session,
    dbapi: Any,
    scope: TenantScope,
    merged: dict[tuple[str, str, datetime, GroupKey], Partial],
) -> None:
    instant = instants()
    rows = [rollup_row(scope, key, partial, instant) for key, partial in merged.items()]
    columns = [
        copy_column([None if value is None else str(value) for value in column])
        for column in zip(*rows, strict=True)
    ]
    with dbapi.cursor() as cursor:
        _stage(session, cursor, "rollup_staging", _ROLLUP_STAGING)
        with cursor.copy(f"COPY rollup_staging ({ROLLUP_COLUMNS}) FROM STDIN") as copy:
            copy.write(copy_text(columns))
        cursor.execute(_ROLLUP_MERGE, (min(hour for _, _, hour, _ in merged),))
        if cursor.fetchone()[0]:  # a round's hours before the seal: their days' rows too
            cursor.execute(_DAILY_MERGE)


def _merge_rollups_sqlite(
    dbapi: Any,
    scope: TenantScope,
    merged: dict[tuple[str, str, datetime, GroupKey], Partial],
    level: _Level,
) -> None:
    instant = instants()
    keys = [(_rollup_key(scope, key, instant), fresh) for key, fresh in merged.items()]
    cursor = dbapi.cursor()
    try:
        stored = _stored_rollups(cursor, level, [key for key, _ in keys])
        rows = []
        for key_columns, fresh in keys:
            row = stored.get(key_columns)
            partial = fresh if row is None else _stored_partial(row).merge(fresh)
            rows.append(key_columns + _rollup_values(partial, instant))
        cursor.executemany(level.write, rows)
    finally:
        cursor.close()


def _stored_rollups(
    cursor: Any, level: _Level, keys: Sequence[tuple[Any, ...]]
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The stored value columns of the rollup rows with these keys (`_rollup_key`), by key:
    a query per `_ROLLUP_CHUNK` keys, each key found through the primary key."""
    found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for start in range(0, len(keys), _ROLLUP_CHUNK):
        chunk = keys[start : start + _ROLLUP_CHUNK]
        values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
        cursor.execute(level.read % values, [value for key in chunk for value in key])
        for row in cursor.fetchall():
            found[tuple(row[:6])] = tuple(row[6:])
    return found


def _stored_partial(row: Sequence[Any]) -> Partial:
    """A partial from SQLite's stored text (the value columns `_Level.read` gives)."""
    events, values, total, low, high, latest, at, seq = row
    return Partial(
        int(events),
        int(values),
        Decimal(total),
        None if low is None else Decimal(low),
        None if high is None else Decimal(high),
        None if latest is None else Decimal(latest),
        None if at is None else datetime.fromisoformat(at),
        int(seq),
    )


def _decimal_text(value: Decimal) -> str:
    """What `ExactDecimal` stores: the exact plain text (PostgreSQL's NUMERIC parses it)."""
    if not value.is_finite():
        raise ValueError(f"ExactDecimal refuses {value}")
    return format(value, "f")
