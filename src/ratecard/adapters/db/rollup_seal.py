"""Sealing: the days before a point written as daily rollup rows, so a long period reads a row
a day rather than one an hour.

    >>> seal_rollups(session, before)                           # doctest: +SKIP

A day is sealed `SEAL_LAG` after it ended. Ingestion merges a round's rows of sealed days into
their days' rows too (`rollup_store.add_rollups`), so a sealed day stays exact through late
events.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    select,
    update,
)
from sqlalchemy.orm import Session

from ratecard.adapters.db.event_store import _utc, stored_instant
from ratecard.adapters.db.models import (
    ROLLUP_VALUES,
    RollupSealRow,
)
from ratecard.adapters.db.rollup_store import (
    _DAY,
    _MERGED_VALUES_POSTGRES,
    DAILY,
    DAILY_COLUMNS,
    _rollup_values,
    _stored_partial,
    day_of,
    instants,
    merge_into,
)
from ratecard.adapters.db.types import sqlite_instant_text
from ratecard.core.rollups import Partial


def seal_rollups(session: Session, before: datetime, *, one_day: bool = False) -> datetime:
    """Make the daily rollups of the UTC days that end by `before` and move the seal past
    them; return the seal. With `one_day`, stop after the first day that has hourly rows (a
    writer catching up a long history holds the lock a day's work at a time). The caller
    commits.

    A day's row is the merge of its hourly rows (`models.DailyRollupRow`). Once sealed, a day
    is kept whole by `add_rollups`, which merges every later write to its hours into it. On
    PostgreSQL the sealing locks the rollups against writers (``SHARE ROW EXCLUSIVE``: readers
    go on): it waits for the rounds in flight, which then are in its sums, and a round after
    it reads the new seal. On SQLite the write lock does the same. Hourly rows are found a
    (customer, meter) at a time through the primary key, not by a scan of them all.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    connection = session.connection()
    dbapi: Any = connection.connection.dbapi_connection
    seal = select(RollupSealRow.sealed_before).where(RollupSealRow.id == 1)
    end = day_of(before)
    sealed = session.scalar(seal)
    if sealed is not None and end <= sealed:  # the seal only moves on: no lock to take
        return sealed
    if postgres:
        connection.exec_driver_sql("LOCK TABLE usage_rollups IN SHARE ROW EXCLUSIVE MODE")
        sealed = session.scalar(seal)  # again, under the lock: another writer may have sealed
        if sealed is not None and end <= sealed:
            return sealed
    first = _first_hour(dbapi, postgres, sealed)
    if first is not None and first < end:
        if one_day:
            end = day_of(first) + _DAY
        if postgres:
            connection.exec_driver_sql(_SEAL_POSTGRES, {"start": first, "end": end})
        else:
            _seal_sqlite(dbapi, first, end)
    session.execute(update(RollupSealRow).where(RollupSealRow.id == 1).values(sealed_before=end))
    return end


_PREFIX = "tenant_id, mode, customer_id, meter_code"
# Each (customer, meter) of the rollups in turn: a recursive walk of the primary key, a seek a
# step, then a seek into its hours. Not a scan of every hourly row.
_PREFIXES_POSTGRES = f"""
WITH RECURSIVE p AS (
    (SELECT {_PREFIX} FROM usage_rollups ORDER BY {_PREFIX} LIMIT 1)
    UNION ALL
    SELECT n.* FROM p CROSS JOIN LATERAL (
        SELECT {_PREFIX} FROM usage_rollups
        WHERE ({_PREFIX}) > (p.tenant_id, p.mode, p.customer_id, p.meter_code)
        ORDER BY {_PREFIX} LIMIT 1
    ) AS n
)"""
_OWN_HOURS = (
    "u.tenant_id = p.tenant_id AND u.mode = p.mode AND u.customer_id = p.customer_id "
    "AND u.meter_code = p.meter_code AND u.hour_at >= %(start)s"
)
_FIRST_HOUR_POSTGRES = f"""{_PREFIXES_POSTGRES}
SELECT min(f.hour_at) FROM p CROSS JOIN LATERAL (
    SELECT hour_at FROM usage_rollups AS u WHERE {_OWN_HOURS} ORDER BY hour_at LIMIT 1
) AS f"""
_SEAL_POSTGRES = f"""{_PREFIXES_POSTGRES}
INSERT INTO usage_rollups_daily AS r ({DAILY_COLUMNS})
SELECT h.tenant_id, h.mode, h.customer_id, h.meter_code, date_trunc('day', h.hour_at, 'UTC'),
    h.group_key, {_MERGED_VALUES_POSTGRES.format(at="h.hour_at")}
FROM p CROSS JOIN LATERAL (
    SELECT * FROM usage_rollups AS u WHERE {_OWN_HOURS} AND u.hour_at < %(end)s
) AS h
GROUP BY h.tenant_id, h.mode, h.customer_id, h.meter_code, date_trunc('day', h.hour_at, 'UTC'),
    h.group_key
ON CONFLICT (tenant_id, mode, customer_id, meter_code, day_at, group_key) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in ROLLUP_VALUES)}
"""
_NEXT_PREFIX = (
    f"SELECT {_PREFIX} FROM usage_rollups WHERE ({_PREFIX}) > (?, ?, ?, ?) "
    f"ORDER BY {_PREFIX} LIMIT 1"
)
_FIRST_HOUR_SQLITE = (
    "SELECT min(hour_at) FROM usage_rollups WHERE tenant_id = ? AND mode = ? "
    "AND customer_id = ? AND meter_code = ? AND hour_at >= ?"
)
_PREFIX_HOURS = (
    "SELECT hour_at, group_key, event_count, value_count, value_sum, value_min, value_max, "
    "latest_value, latest_at, latest_seq FROM usage_rollups WHERE tenant_id = ? AND mode = ? "
    "AND customer_id = ? AND meter_code = ? AND hour_at >= ? AND hour_at < ?"
)


def _first_hour(dbapi: Any, postgres: bool, start: datetime | None) -> datetime | None:
    """The first hour at or after `start` (None: the first of all) that has a rollup row."""
    cursor = dbapi.cursor()
    try:
        if postgres:
            cursor.execute(
                _FIRST_HOUR_POSTGRES, {"start": start or datetime.min.replace(tzinfo=UTC)}
            )
            found = cursor.fetchone()[0]
            return None if found is None else _utc(found)
        lowest = None
        bound = "" if start is None else sqlite_instant_text(start)
        for prefix in _prefixes_sqlite(cursor):
            cursor.execute(_FIRST_HOUR_SQLITE, (*prefix, bound))
            (hour,) = cursor.fetchone()
            if hour is not None and (lowest is None or hour < lowest):
                lowest = hour
        return None if lowest is None else stored_instant(lowest)
    finally:
        cursor.close()


def _prefixes_sqlite(cursor: Any) -> Iterator[tuple[Any, ...]]:
    """SQLite: each (tenant, mode, customer, meter) of the rollups, a seek each."""
    prefix: tuple[Any, ...] = ("", "", "", "")
    while True:
        cursor.execute(_NEXT_PREFIX, prefix)
        found = cursor.fetchone()
        if found is None:
            return
        prefix = tuple(found)
        yield prefix


def _seal_sqlite(dbapi: Any, start: datetime, end: datetime) -> None:
    """SQLite: `seal_rollups`'s daily rows of ``[start, end)``, merged here (exact decimals)."""
    bounds = (sqlite_instant_text(start), sqlite_instant_text(end))
    instant = instants()
    cursor, reader = dbapi.cursor(), dbapi.cursor()
    try:
        for prefix in _prefixes_sqlite(cursor):
            days: dict[tuple[str, str], Partial] = {}
            reader.execute(_PREFIX_HOURS, (*prefix, *bounds))
            for row in reader.fetchall():
                key = (instant(day_of(stored_instant(row[0]))), row[1])
                partial = _stored_partial(row[2:])
                merge_into(days, key, partial)
            rows = [
                (*prefix, day, group, *_rollup_values(p, instant))
                for (day, group), p in days.items()
            ]
            reader.executemany(DAILY.write, rows)
    finally:
        cursor.close()
        reader.close()
