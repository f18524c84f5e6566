"""Rollup rows written whole and read back: what a rebuild writes once the old rows are deleted
(`insert_rollups`, in two steps for the online redefinition: `new_rows`, `write_new_rows`), and
a customer's hourly partials of one meter (`read_rollups`). Merging a round into the rows
already stored is `rollup_store.add_rollups`.

    >>> delete_rollups(session, scope, "api_calls", since=None)              # doctest: +SKIP
    >>> insert_rollups(session, scope, partials)                             # doctest: +SKIP
    1210
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import (
    delete,
    select,
)
from sqlalchemy.orm import Session

from ratecard.adapters.db import rollup_store
from ratecard.adapters.db.event_store import (
    copy_column,
    copy_text,
)
from ratecard.adapters.db.models import (
    DailyRollupRow,
    UsageRollupRow,
)
from ratecard.adapters.db.rollup_store import (
    DAILY,
    DAILY_COLUMNS,
    HOURLY,
    ROLLUP_COLUMNS,
    day_of,
    instants,
    merge_into,
    rollup_row,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.core.aggregation import GroupKey
from ratecard.core.rollups import Partial


def insert_rollups(
    session: Session,
    scope: TenantScope,
    partials: Sequence[tuple[str, str, datetime, GroupKey, Partial]],
) -> int:
    """Write partials ``(customer_id, meter_code, hour_at, group, partial)`` whose keys no
    stored row has, with plain inserts: what a rebuild writes after `delete_rollups`. The
    rows of sealed days go to their days' rows too, merged here, so every hour of a customer's
    day must be in the one call (a key written twice raises: the store's unique key). Returns
    how many hourly rows were written.

    `add_rollups` reads what is stored (SQLite) or merges in SQL (PostgreSQL) for every key;
    here nothing is stored yet, so each row is written once, as it is.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    made = new_rows(scope, partials, sealed=rollup_store.sealed_before(session), postgres=postgres)
    return write_new_rows(session, made)


class NewRows(NamedTuple):
    """`insert_rollups`'s rows, made before they are written (`new_rows`): SQLite's rows, or
    PostgreSQL's ``COPY`` texts, hourly and daily."""

    hours: list[tuple[Any, ...]] | str
    days: list[tuple[Any, ...]] | str
    hourly: int  # how many hourly rows


def new_rows(
    scope: TenantScope,
    partials: Sequence[tuple[str, str, datetime, GroupKey, Partial]],
    *,
    sealed: datetime | None,
    postgres: bool,
) -> NewRows:
    """The rows `insert_rollups` writes for `partials`, the days before `sealed` merged into
    daily rows as well."""
    instant = instants()
    hours: list[tuple[Any, ...]] = []
    days: dict[tuple[str, str, datetime, GroupKey], Partial] = {}
    for customer_id, meter_code, hour_at, group, partial in partials:
        key = (customer_id, meter_code, hour_at, group)
        hours.append(rollup_row(scope, key, partial, instant))
        if sealed is not None and hour_at < sealed:
            merge_into(days, (customer_id, meter_code, day_of(hour_at), group), partial)
    daily = [rollup_row(scope, key, partial, instant) for key, partial in days.items()]
    if not postgres:
        return NewRows(hours, daily, len(hours))
    return NewRows(_copy_rows(hours), _copy_rows(daily), len(hours))


def _copy_rows(rows: list[tuple[Any, ...]]) -> str:
    """Rows as ``COPY``'s text."""
    if not rows:
        return ""
    return copy_text(
        [
            copy_column([None if v is None else str(v) for v in column])
            for column in zip(*rows, strict=True)
        ]
    )


def write_new_rows(session: Session, rows: NewRows) -> int:
    """Write rows made by `new_rows` (their keys not stored); how many hourly rows."""
    dbapi: Any = session.connection().connection.dbapi_connection
    if isinstance(rows.hours, str):
        with dbapi.cursor() as cursor:
            for table, columns, text in (
                (HOURLY.table, ROLLUP_COLUMNS, rows.hours),
                (DAILY.table, DAILY_COLUMNS, rows.days),
            ):
                if text:
                    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        copy.write(text)
    else:
        cursor = dbapi.cursor()
        try:
            cursor.executemany(HOURLY.insert, rows.hours)
            cursor.executemany(DAILY.insert, rows.days)
        finally:
            cursor.close()
    return rows.hourly


def read_rollups(
    session: Session,
    scope: TenantScope,
    customer_id: str,
    meter_code: str,
    *,
    from_hour: datetime | None,
    to_hour: datetime,
) -> list[tuple[datetime, GroupKey, Partial]]:
    """The partials of hours in ``[from_hour, to_hour)`` (every hour before when from is None)."""
    r = UsageRollupRow
    statement = select(
        r.hour_at,
        r.group_key,
        r.event_count,
        r.value_count,
        r.value_sum,
        r.value_min,
        r.value_max,
        r.latest_value,
        r.latest_at,
        r.latest_seq,
    ).where(
        r.tenant_id == scope.tenant_id,
        r.mode == scope.mode,
        r.customer_id == customer_id,
        r.meter_code == meter_code,
        r.hour_at < to_hour,
    )
    if from_hour is not None:
        statement = statement.where(r.hour_at >= from_hour)
    out = []
    for row in session.execute(statement):
        key: GroupKey = tuple(json.loads(row.group_key))
        partial = Partial(
            int(row.event_count),
            int(row.value_count),
            Decimal(row.value_sum),
            row.value_min,
            row.value_max,
            row.latest_value,
            row.latest_at,
            int(row.latest_seq),
        )
        out.append((row.hour_at, key, partial))
    return out


def delete_rollups(
    session: Session, scope: TenantScope, meter_code: str | None, since: datetime | None
) -> None:
    """Drop rollups (of one meter, from the UTC midnight `since`), hourly and daily alike."""
    assert since is None or since == day_of(since), "whole days: a daily row is all or nothing"
    for table, at in (
        (UsageRollupRow, UsageRollupRow.hour_at),
        (DailyRollupRow, DailyRollupRow.day_at),
    ):
        statement = delete(table).where(
            table.tenant_id == scope.tenant_id, table.mode == scope.mode
        )
        if meter_code is not None:
            statement = statement.where(table.meter_code == meter_code)
        if since is not None:
            statement = statement.where(at >= since)
        session.execute(statement)
