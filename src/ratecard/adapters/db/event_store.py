"""The raw event store and its rollups: bulk, deduplicated writes and scoped reads.

    >>> inserted = insert_events(session, scope, events)       # doctest: +SKIP
    >>> {e.event_id for e in events} - inserted.keys()         # the duplicates
    {'evt_7'}

An id is refused for as long as its event is kept. How a batch gets in, per engine (one
transaction, one commit per batch; `services.metering.group_commit` makes one batch of many):

- PostgreSQL: ``COPY`` into a session-local staging table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING event_id, seq``: the database tells us
  which ids were new, and concurrent writers of the same id wait on each other instead of
  double-counting. The arbiter is an exclusion constraint on a hash index of the scoped id
  (`models.EVENT_SCOPED_ID`, one word an entry; migration 0012), exact like a unique index.
- SQLite: the transaction already holds the write lock (``BEGIN IMMEDIATE``), so a lookup of the
  batch's ids, then one ``executemany`` with explicit sequence numbers, is exact. The lookup
  goes through `id_hash` (48 bits of the scoped id) rather than a unique index on the ids
  themselves (80 bytes an entry): random ids rewrite random index pages at every commit, and
  a small key has fewer of them (migration 0005). The hashes are kept in two tiers, a small
  one that takes each commit's keys and a large one that takes them a slice of the hash range
  at a time, in key order (`_add_id_keys`, migration 0013). Most new ids skip the lookup: a
  Bloom filter of the stored ids, per engine, says they are not stored (`id_filter`).

Group commit is the caller's batch: the index pages a commit rewrites are shared by every event in
it. ``seq`` is the arrival order (it breaks ties between events at one instant).

The hot path binds values the column types would produce (instants as fixed-width UTC text,
properties as canonical JSON, decimals as exact text) straight through the DBAPI cursor: each
is serialized once per event, not once per column per row by SQLAlchemy's type processing.
PostgreSQL parses the same text in ``COPY``, so one serialization serves both engines.
"""

from __future__ import annotations

import itertools
import json
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from hashlib import blake2b
from itertools import compress
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    bindparam,
    delete,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from ratecard.adapters.db import id_filter
from ratecard.adapters.db.id_filter import IdFilter
from ratecard.adapters.db.models import (
    EVENT_IDS,
    RECENT_EVENT_IDS,
    ROLLUP_VALUES,
    DailyRollupRow,
    EventRow,
    RollupSealRow,
    UsageRollupRow,
    event_scoped_id,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.types import dumps_text_map, loads, sqlite_instant_text
from ratecard.core.aggregation import Event, GroupKey
from ratecard.core.rollups import EXACT_SUM, Partial

_LOOKUP_CHUNK = 500
# What each event brings; the scope and the instant of receipt are the batch's, written once
# in the statement rather than bound (SQLite) or copied and parsed (PostgreSQL) per row.
_COLUMNS = "event_id, meter_code, customer_ref, customer_id, occurred_at, occurred_hour, properties"
_SQLITE_INSERT = (
    "INSERT INTO events (seq, tenant_id, mode, received_at, event_id, id_hash, meter_code, "
    "customer_ref, customer_id, occurred_at, occurred_hour, properties) "
    "VALUES (?, {}, {}, {}, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ROLLUP_COLUMNS = (
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
INSERT INTO usage_rollups AS r ({_ROLLUP_COLUMNS})
SELECT {_ROLLUP_COLUMNS} FROM rollup_staging
ORDER BY customer_id, meter_code, hour_at, group_key
ON CONFLICT (tenant_id, mode, customer_id, meter_code, hour_at, group_key) DO UPDATE SET
    {_MERGE_SET}
)
SELECT %s::timestamptz < {_SEALED}
"""
# The daily level (`models.DailyRollupRow`, migration 0016).
_DAILY_COLUMNS = _ROLLUP_COLUMNS.replace("hour_at", "day_at")
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
INSERT INTO usage_rollups_daily AS r ({_DAILY_COLUMNS})
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
    columns = _ROLLUP_COLUMNS.replace("hour_at", at)
    write = f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({', '.join('?' * 14)})"
    return _Level(table, read, write)


_HOURLY = _level("usage_rollups", "hour_at")
_DAILY = _level("usage_rollups_daily", "day_at")
_ROLLUP_CHUNK = 150  # keys per read: 900 parameters
_STAGING_TABLE = "event_staging_v3"
_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGING_TABLE} (
    event_id text, meter_code text, customer_ref text, customer_id text,
    occurred_at timestamptz, occurred_hour integer, properties jsonb
) ON COMMIT DELETE ROWS;
"""
_MERGE = f"""
INSERT INTO events (tenant_id, mode, received_at, {_COLUMNS})
SELECT %s, %s, %s::timestamptz, {_COLUMNS} FROM {_STAGING_TABLE}
ON CONFLICT DO NOTHING
RETURNING event_id, seq
"""
_COPY = f"COPY {_STAGING_TABLE} ({_COLUMNS}) FROM STDIN"


class Encoded(NamedTuple):
    """An event's values as the store writes them, made before the writer needs them.

    `encode` runs where the batch is validated (request threads), while the single writer is
    busy with the previous commit: the writer's own work per event is what bounds ingestion.
    """

    occurred_text: str  # `UtcDateTime`'s stored text (PostgreSQL's COPY parses the same)
    occurred_hour: int  # `hour_number`
    hour_at: datetime  # the start of that hour, the rollup bucket
    properties_json: str  # `dumps_text_map`


def encode(occurred_at: datetime, properties: dict[str, str], stamp: object = None) -> Encoded:
    """The stored forms; `stamp` is the timestamp text `occurred_at` was read from, if any."""
    hour = hour_number(occurred_at)
    return Encoded(
        stored_instant_text(occurred_at, stamp),
        hour,
        hour_start(hour),
        dumps_text_map(properties),
    )


def stored_instant_text(at: datetime, stamp: object = None) -> str:
    """`sqlite_instant_text(at)`, taken from `stamp` (the RFC 3339 text `at` was read from)
    when that is already the stored form, as live traffic mostly sends it (formatting an
    instant costs ten times these checks)."""
    if (
        type(stamp) is str
        and len(stamp) == 32  # 2024-03-01T11:00:00.250000+00:00: six digits, T, UTC
        and stamp[19] == "."
        and stamp[10] == "T"
        and stamp.endswith("+00:00")
        and stamp[0] != "0"  # a year before 1000 is stored unpadded
        and stamp.isascii()  # digits of other scripts are not the stored form
    ):
        return stamp
    return sqlite_instant_text(at)


def stored_instant(text: str) -> datetime:
    """The instant a `stored_instant_text` holds (a year before 1000 is stored unpadded)."""
    return datetime.fromisoformat(text if len(text) == 32 else text.zfill(32))


class NewEvent(NamedTuple):
    event_id: str
    meter_code: str
    customer_ref: str
    customer_id: str | None  # None: held
    occurred_at: datetime
    properties: dict[str, str]
    encoded: Encoded | None = None  # made ahead (`encode`), or here when None


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Rows(NamedTuple):
    """Events to store, as columns in the order they are stored (`insert_rows`): the values
    `_COLUMNS` names, each made once per event where the batch was validated."""

    ids: Sequence[str]
    meters: Sequence[str]
    refs: Sequence[str]  # the customer's external id, or the subscription's id, as sent
    customer_ids: Sequence[str | None]  # None: held
    occurred: Sequence[str]  # `stored_instant_text`
    hours: Sequence[int]  # `hour_number`
    properties: Sequence[str]  # `dumps_text_map`


def insert_rows(
    session: Session, scope: TenantScope, rows: Rows, received_at: datetime
) -> list[int | None]:
    """Store the events whose ids are new, all received at `received_at`: the ``seq`` of each
    row, None for an id the store already held.

    Ids within `rows` must be distinct (the caller admits one event per id).
    """
    assert len(set(rows.ids)) == len(rows.ids), "ids within a batch are distinct"
    if not rows.ids:
        return []
    received_text = sqlite_instant_text(received_at)
    if session.get_bind().dialect.name == "postgresql":
        return _insert_postgres(session, scope, rows, received_text)
    return _insert_sqlite(session, scope, rows, received_text)


def insert_events(
    session: Session, scope: TenantScope, events: Sequence[NewEvent], received_at: datetime
) -> dict[str, int]:
    """`insert_rows` of events one by one: the new ones' ``event_id -> seq``."""
    stored = [e.encoded or encode(e.occurred_at, e.properties) for e in events]
    rows = Rows(
        [e.event_id for e in events],
        [e.meter_code for e in events],
        [e.customer_ref for e in events],
        [e.customer_id for e in events],
        [s.occurred_text for s in stored],
        [s.occurred_hour for s in stored],
        [s.properties_json for s in stored],
    )
    seqs = insert_rows(session, scope, rows, received_at)
    return {e.event_id: seq for e, seq in zip(events, seqs, strict=True) if seq is not None}


def _insert_postgres(
    session: Session, scope: TenantScope, rows: Rows, received_text: str
) -> list[int | None]:
    dbapi: Any = session.connection().connection.dbapi_connection
    with dbapi.cursor() as cursor:
        _stage(session, cursor, _STAGING_TABLE, _STAGING)
        # Row by row: PostgreSQL parses the rows sent while the next ones are formatted (one
        # text of the whole batch, `copy_text`, waited longer for the parse).
        with cursor.copy(_COPY) as copy:
            write = copy.write_row
            for row in zip(*rows, strict=True):
                write(row)
        cursor.execute(_MERGE, (scope.tenant_id, scope.mode.value, received_text))
        inserted: dict[str, int] = dict(cursor.fetchall())  # event_id -> seq
    return [inserted.get(event_id) for event_id in rows.ids]


def _stage(session: Session, cursor: Any, table: str, create: str) -> None:
    """Make a staging table (session-local, ``ON COMMIT DELETE ROWS``) ready, and empty, for a
    ``COPY``. ``CREATE ... IF NOT EXISTS`` runs in every transaction, which may be on another
    server connection than the last behind a transaction-pooling proxy (PgBouncer). The table
    is emptied only when this transaction filled it already: a commit empties it in place, and
    a rollback takes its rows away. (A ``TRUNCATE`` each round gave the table a new file and a
    new catalog row every time.)"""
    cursor.execute(create)
    info = session.connection().connection.info
    transaction = session.get_transaction()
    filled = info.get(f"{table}:filled")
    if filled is not None and filled() is transaction:
        cursor.execute(f"TRUNCATE {table}")
    info[f"{table}:filled"] = weakref.ref(transaction) if transaction is not None else None


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def copy_column(values: Sequence[str | None]) -> Sequence[str]:
    """Text values (None for NULL) as ``COPY``'s text format writes them: the characters it
    gives a meaning (backslash, tab, newline, carriage return) escaped, NULL as ``\\N``.

    Checked once for the whole column: escaping is rare (ids, codes, canonical JSON), and
    needless for most columns."""
    if None not in values:
        texts = cast(Sequence[str], values)
        if _COPY_SPECIAL.search("".join(texts)) is None:
            return texts
        return [v.translate(_COPY_ESCAPES) for v in texts]
    escape = _COPY_SPECIAL.search("".join(v for v in values if v is not None)) is not None
    return ["\\N" if v is None else v.translate(_COPY_ESCAPES) if escape else v for v in values]


def copy_text(columns: Sequence[Sequence[str]]) -> str:
    """Columns of `copy_column` values as ``COPY ... FROM STDIN`` text: a line a row, the
    values separated by tabs. Made in C, far cheaper than writing it row by row."""
    if not columns or not columns[0]:
        return ""
    return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)
_TICK = timedelta(microseconds=1)


def hour_number(at: datetime) -> int:
    """Whole hours from the Unix epoch to `at`: what the events' time index is keyed on.

    Within one (customer, meter, hour) index entries are ordered by arrival, so events that
    arrive in time order append to a few pages instead of landing anywhere in the last seconds
    of the customer's range (migration 0008).
    """
    return (at - _EPOCH) // _HOUR


@lru_cache(maxsize=4096)
def hour_start(hour: int) -> datetime:
    """The start of hour number `hour` (`hour_number`), in UTC: what
    ``at.replace(minute=0, second=0, microsecond=0)`` gives for an instant in it. Cached: live
    traffic falls in a few hours, and ``replace`` costs ten times the lookup."""
    return _EPOCH + hour * _HOUR


def _scope_prefix(tenant_id: str, mode: str) -> bytes:
    return f"{tenant_id}\x1f{mode}\x1f".encode()


def _hash(prefix: bytes, event_id: str) -> int:
    return int.from_bytes(blake2b(prefix + event_id.encode(), digest_size=6).digest(), "big")


def _hashes(prefix: bytes, event_ids: Iterable[str]) -> list[int]:
    """`_hash` of each id: the prefix is hashed once, and each id continues a copy of it."""
    scoped = blake2b(prefix, digest_size=6)
    out = []
    for event_id in event_ids:
        hasher = scoped.copy()
        hasher.update(event_id.encode())
        out.append(int.from_bytes(hasher.digest(), "big"))
    return out


def id_hash(tenant_id: str, mode: str, event_id: str) -> int:
    """48 bits of BLAKE2b of the scoped event id: the key of SQLite's dedup index.

    Rows that share a hash are told apart by their full id, so a collision costs a comparison,
    never an event.
    """
    return _hash(_scope_prefix(tenant_id, mode), event_id)


def _existing_sqlite(cursor: Any, scope: TenantScope, hashes: Sequence[int]) -> set[str]:
    """The ids of `scope` stored under any of `hashes` (full ids compared)."""
    tenant_id, mode = scope.tenant_id, scope.mode.value
    found: set[str] = set()
    for start in range(0, len(hashes), _LOOKUP_CHUNK):
        chunk = hashes[start : start + _LOOKUP_CHUNK]
        marks = ", ".join("?" * len(chunk))
        for tier in _ID_TABLES:
            cursor.execute(
                f"SELECT e.tenant_id, e.mode, e.event_id FROM {tier.name} AS i "
                "CROSS JOIN events AS e "
                f"ON e.seq = i.seq WHERE i.id_hash IN ({marks})",
                chunk,
            )
            found.update(e for t, m, e in cursor.fetchall() if t == tenant_id and m == mode)
    return found


# SQLite's dedup key (`models.EVENT_IDS`, migration 0013). A commit adds its keys to the small
# recent tier, where its random inserts share a few hundred pages, and moves the next of
# `_FOLD_SLICES` slices of the hash range into the large tier, in key order: a page of the large
# tier is then written about once per `_FOLD_SLICES` commits rather than at nearly every one.
_ID_TABLES = (RECENT_EVENT_IDS, EVENT_IDS)  # a lookup reads both
_HASH_RANGE = 1 << 48  # `id_hash` is 48 bits
_FOLD_SLICES = 32
_folds = itertools.count()  # which slice the next commit moves (per process; any order is exact)


def _add_id_keys(cursor: Any, keys: Sequence[tuple[int, int]]) -> None:
    """Record ``(id_hash, seq)`` of newly stored events, then move one slice of recent keys."""
    cursor.executemany("INSERT INTO event_ids_recent (id_hash, seq) VALUES (?, ?)", keys)
    slice_ = next(_folds) % _FOLD_SLICES
    low = slice_ * _HASH_RANGE // _FOLD_SLICES
    high = (slice_ + 1) * _HASH_RANGE // _FOLD_SLICES
    cursor.execute(
        "INSERT INTO event_ids (id_hash, seq) SELECT id_hash, seq FROM event_ids_recent "
        "WHERE id_hash >= ? AND id_hash < ?",
        (low, high),
    )
    cursor.execute("DELETE FROM event_ids_recent WHERE id_hash >= ? AND id_hash < ?", (low, high))


def _sql_text(value: str) -> str:
    """A string as an SQL literal (for values of our own making: ids, modes, instants)."""
    return "'" + value.replace("'", "''") + "'"


def sqlite_insert(scope: TenantScope, received_text: str) -> str:
    """SQLite's insert of a round's events, the values the round shares written in: it binds
    ``(seq, event_id, id_hash, meter_code, customer_ref, customer_id, occurred_at,
    occurred_hour, properties)``."""
    shared = (scope.tenant_id, scope.mode.value, received_text)
    return _SQLITE_INSERT.format(*(_sql_text(value) for value in shared))


def _insert_sqlite(
    session: Session, scope: TenantScope, rows: Rows, received_text: str
) -> list[int | None]:
    """Check, then insert: exact because the transaction holds SQLite's write lock."""
    prefix = _scope_prefix(scope.tenant_id, scope.mode.value)
    hashes = _hashes(prefix, rows.ids)
    cursor: Any = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SELECT coalesce(max(seq), 0) FROM events")
        top = int(cursor.fetchone()[0])
        first = top + 1
        stored = _id_filter(session, top)
        stored.catch_up(cursor, top)
        existing = _existing_sqlite(cursor, scope, stored.candidates(hashes))
        columns: tuple[Sequence[Any], ...] = (rows.ids, hashes, *rows[1:])
        if existing:  # the new ones only, each column filtered in C
            new = [event_id not in existing for event_id in rows.ids]
            columns = tuple(list(compress(column, new)) for column in columns)
        count = len(columns[0])
        numbers = range(first, first + count)
        if count:
            cursor.executemany(
                sqlite_insert(scope, received_text), zip(numbers, *columns, strict=True)
            )
            _add_id_keys(cursor, list(zip(columns[1], numbers, strict=True)))
            _when_committed(session, stored.stored(first, columns[1]))
    finally:
        cursor.close()
    if not existing:
        return list(numbers)
    seqs = iter(numbers)
    return [next(seqs) if is_new else None for is_new in new]


# A filter of the ids each SQLite database holds, per engine (`id_filter`).
_id_filters: weakref.WeakKeyDictionary[Any, IdFilter] = weakref.WeakKeyDictionary()


def _when_committed(session: Session, call: Callable[[], None]) -> None:
    """`call` once the session's current transaction committed; never for a rollback, nor
    for a later transaction of the same session."""
    current = session.get_transaction()

    def after_commit(committed: Session) -> None:
        if committed.get_transaction() is current:
            call()

    sa_event.listen(session, "after_commit", after_commit)


def _id_filter(session: Session, top: int) -> IdFilter:
    """The engine's id filter, made on first use (under the write lock, like its use)."""
    bind = session.get_bind()
    found = _id_filters.get(bind)
    if found is None:
        found = _id_filters[bind] = IdFilter.sized_for(top, top=top)
    return found


def count_deletion(session: Session) -> None:
    """Record, in the transaction that deleted events, that events were deleted: SQLite's id
    filters then read the store again (`id_filter.DELETIONS`)."""
    if session.get_bind().dialect.name == "sqlite":
        connection = session.connection()
        count = int(connection.exec_driver_sql(id_filter.DELETIONS).scalar_one())
        connection.exec_driver_sql(f"{id_filter.DELETIONS} = {count + 1}")


def drop_id_keys(session: Session, where: ColumnElement[bool], *, chunk: int = 10_000) -> None:
    """SQLite: remove the dedup keys of the events `where` selects, before they are deleted
    (a key left behind would never match: a lookup compares the full id of its event)."""
    if session.get_bind().dialect.name != "sqlite":
        return
    after = 0
    while keys := session.execute(
        select(EventRow.id_hash, EventRow.seq)
        .where(where, EventRow.seq > after)
        .order_by(EventRow.seq)
        .limit(chunk)
    ).all():
        after = keys[-1].seq
        for table in _ID_TABLES:
            session.execute(
                delete(table).where(
                    table.c.id_hash == bindparam("h"), table.c.seq == bindparam("s")
                ),
                [{"h": h, "s": seq} for h, seq in keys],
            )


def id_matches(session: Session, scope: TenantScope, event_id: str) -> ColumnElement[bool]:
    """A condition on `EventRow` for the scope's event with this id, through the engine's
    dedup index (SQLite: the id hash, then the full id; PostgreSQL: the scoped id's hash
    index)."""
    condition = and_(
        EventRow.tenant_id == scope.tenant_id,
        EventRow.mode == scope.mode,
        EventRow.event_id == event_id,
    )
    if session.get_bind().dialect.name == "sqlite":
        hashed = id_hash(scope.tenant_id, scope.mode.value, event_id)
        keys = union_all(
            *(select(tier.c.seq).where(tier.c.id_hash == hashed) for tier in _ID_TABLES)
        )
        return and_(EventRow.seq.in_(keys), condition)
    return and_(_scoped_id_text == scoped_id(scope, event_id), condition)


# PostgreSQL's dedup index is on this expression: a lookup written the same way goes through it
_scoped_id_text: ColumnElement[str] = literal_column(event_scoped_id("events"), String)


def scoped_id(scope: TenantScope, event_id: str) -> str:
    """The text PostgreSQL's dedup index is on (`models.EVENT_SCOPED_ID`) for a scope and id."""
    return f"{scope.tenant_id}\x1f{scope.mode.value}\x1f{event_id}"


def existing_ids(session: Session, scope: TenantScope, event_ids: Sequence[str]) -> set[str]:
    """Which of `event_ids` the store already holds in this scope."""
    if session.get_bind().dialect.name == "sqlite":
        prefix = _scope_prefix(scope.tenant_id, scope.mode.value)
        hashes = _hashes(prefix, event_ids)
        cursor: Any = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            return _existing_sqlite(cursor, scope, hashes) & set(event_ids)
        finally:
            cursor.close()
    found: set[str] = set()
    for chunk in _chunks(event_ids, _LOOKUP_CHUNK):
        statement = select(EventRow.event_id).where(
            _scoped_id_text.in_([scoped_id(scope, event_id) for event_id in chunk]),
            EventRow.tenant_id == scope.tenant_id,
            EventRow.mode == scope.mode,
            EventRow.event_id.in_(chunk),
        )
        found.update(session.scalars(statement))
    return found


def read_events(
    session: Session,
    scope: TenantScope,
    customer_id: str,
    meter_code: str,
    *,
    start_at: datetime | None,
    end_at: datetime,
    received_by: datetime | None = None,
) -> list[tuple[Event, int]]:
    """A customer's events of one meter in ``[start_at, end_at)`` in (time, arrival) order.

    ``received_by`` keeps only events counted at or before that instant (usage as of then): an
    event counts from its receipt, or from its release if it was held (``counted_at``).
    On the usage hot path (a period's edges): one range read of the hour-keyed index through
    the DBAPI cursor, properties parsed by `types.loads` (decimals, never floats).
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    mark = "%s" if postgres else "?"

    def bound(at: datetime) -> Any:
        return at if postgres else sqlite_instant_text(at)

    sql = (
        f"SELECT occurred_at, {'properties::text' if postgres else 'properties'}, seq "
        f"FROM events WHERE tenant_id = {mark} AND mode = {mark} AND customer_id = {mark} "
        f"AND meter_code = {mark} AND occurred_hour <= {mark} AND occurred_at < {mark}"
    )
    params: list[Any] = [
        scope.tenant_id,
        scope.mode.value,
        customer_id,
        meter_code,
        hour_number(end_at),  # the index's range
        bound(end_at),
    ]
    if start_at is not None:
        sql += f" AND occurred_hour >= {mark} AND occurred_at >= {mark}"
        params += [hour_number(start_at), bound(start_at)]
    if received_by is not None:
        sql += f" AND coalesce(counted_at, received_at) <= {mark}"
        params.append(bound(received_by))
    return _fetch_events(session, sql + " ORDER BY occurred_at, seq", params)


def _fetch_all(session: Session, sql: str, params: Any) -> list[Any]:
    """The rows of `sql` run on the session's driver connection (no ORM on the read path)."""
    dbapi: Any = session.connection().connection.dbapi_connection
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _stored_event(postgres: bool, at: Any, properties: str, seq: Any) -> tuple[Event, int]:
    """A stored event's instant (as the driver gives it), properties text and ``seq``, as a
    core event and its arrival number."""
    return Event(_utc(at) if postgres else datetime.fromisoformat(at), loads(properties)), int(seq)


def _fetch_events(session: Session, sql: str, params: Sequence[Any]) -> list[tuple[Event, int]]:
    """Rows ``(occurred_at, properties text, seq)`` of a raw events query, as core events."""
    postgres = session.get_bind().dialect.name == "postgresql"
    return [_stored_event(postgres, *row) for row in _fetch_all(session, sql, params)]


def _utc(at: datetime) -> datetime:
    """psycopg gives instants in the session's time zone; the core wants `UTC` itself."""
    return at if at.tzinfo is UTC else at.astimezone(UTC)


def group_text(key: GroupKey) -> str:
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


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
        _merge_into(merged, at, partial)
    if not merged:
        return 0
    dbapi: Any = session.connection().connection.dbapi_connection
    if session.get_bind().dialect.name == "postgresql":
        _merge_rollups_postgres(session, dbapi, scope, merged)
    else:
        _merge_rollups_sqlite(dbapi, scope, merged, _HOURLY)
        sealed = _sealed_before(dbapi)
        if sealed is not None and min(hour for _, _, hour, _ in merged) < sealed:
            days: dict[tuple[str, str, datetime, GroupKey], Partial] = {}
            for (customer_id, meter_code, hour_at, key), partial in merged.items():
                if hour_at < sealed:
                    at = (customer_id, meter_code, day_of(hour_at), key)
                    _merge_into(days, at, partial)
            _merge_rollups_sqlite(dbapi, scope, days, _DAILY)
    return len(merged)


def _merge_into(merged: dict[Any, Partial], key: Any, partial: Partial) -> None:
    """Merge `partial` into ``merged[key]`` (`Partial.merge`), or put it there."""
    current = merged.get(key)
    merged[key] = partial if current is None else current.merge(partial)


def day_of(at: datetime) -> datetime:
    """The UTC midnight that starts `at`'s day: its daily rollup's key."""
    return _EPOCH + (at - _EPOCH) // _DAY * _DAY


def _sealed_before(dbapi: Any) -> datetime | None:
    """SQLite: the seal (`seal_rollups`), read in the caller's transaction."""
    cursor = dbapi.cursor()
    try:
        cursor.execute(_SEAL)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None or row[0] is None else stored_instant(row[0])


def _rollup_row(
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


def _instants() -> Callable[[datetime], str]:
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
    instant = _instants()
    rows = [_rollup_row(scope, key, partial, instant) for key, partial in merged.items()]
    columns = [
        copy_column([None if value is None else str(value) for value in column])
        for column in zip(*rows, strict=True)
    ]
    with dbapi.cursor() as cursor:
        _stage(session, cursor, "rollup_staging", _ROLLUP_STAGING)
        with cursor.copy(f"COPY rollup_staging ({_ROLLUP_COLUMNS}) FROM STDIN") as copy:
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
    instant = _instants()
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
INSERT INTO usage_rollups_daily AS r ({_DAILY_COLUMNS})
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
    instant = _instants()
    cursor, reader = dbapi.cursor(), dbapi.cursor()
    try:
        for prefix in _prefixes_sqlite(cursor):
            days: dict[tuple[str, str], Partial] = {}
            reader.execute(_PREFIX_HOURS, (*prefix, *bounds))
            for row in reader.fetchall():
                key = (instant(day_of(stored_instant(row[0]))), row[1])
                partial = _stored_partial(row[2:])
                _merge_into(days, key, partial)
            rows = [
                (*prefix, day, group, *_rollup_values(p, instant))
                for (day, group), p in days.items()
            ]
            reader.executemany(_DAILY.write, rows)
    finally:
        cursor.close()
        reader.close()
