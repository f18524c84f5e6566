"""The raw event store: bulk, deduplicated writes (the dedup keys and lookups by id:
`event_ids`; reads: `event_reads`; rollups: `rollup_store`).

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
  goes through `event_ids.id_hash` (48 bits of the scoped id) rather than a unique index on the ids
  themselves (80 bytes an entry): random ids rewrite random index pages at every commit, and
  a small key has fewer of them (migration 0005). The hashes are kept in two tiers, a small
  one that takes each commit's keys and a large one that takes them a slice of the hash range
  at a time, in key order (`event_ids.add_id_keys`, migration 0013). Most new ids skip the lookup: a
  Bloom filter of the stored ids, per engine, says they are not stored (`id_filter`).

Group commit is the caller's batch: the index pages a commit rewrites are shared by every event in
it. ``seq`` is the arrival order (it breaks ties between events at one instant).

The hot path binds values the column types would produce (instants as fixed-width UTC text,
properties as canonical JSON, decimals as exact text) straight through the DBAPI cursor: each
is serialized once per event, not once per column per row by SQLAlchemy's type processing.
PostgreSQL parses the same text in ``COPY``, so one serialization serves both engines.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import compress
from typing import Any, NamedTuple, cast

from sqlalchemy.orm import Session

from ratecard.adapters.db.event_ids import (
    add_id_keys,
    existing_sqlite,
    id_filter_at,
    id_hashes,
    scope_prefix,
    when_committed,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.types import dumps_text_map, sqlite_instant_text

_COLUMNS = "event_id, meter_code, customer_ref, customer_id, occurred_at, occurred_hour, properties"
_SQLITE_INSERT = (
    "INSERT INTO events (seq, tenant_id, mode, received_at, event_id, id_hash, meter_code, "
    "customer_ref, customer_id, occurred_at, occurred_hour, properties) "
    "VALUES (?, {}, {}, {}, ?, ?, ?, ?, ?, ?, ?, ?)"
)
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


def _utc(at: datetime) -> datetime:
    """psycopg gives instants in the session's time zone; the core wants `UTC` itself."""
    return at if at.tzinfo is UTC else at.astimezone(UTC)


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
    prefix = scope_prefix(scope.tenant_id, scope.mode.value)
    hashes = id_hashes(prefix, rows.ids)
    cursor: Any = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SELECT coalesce(max(seq), 0) FROM events")
        top = int(cursor.fetchone()[0])
        first = top + 1
        stored = id_filter_at(session, top)
        stored.catch_up(cursor, top)
        existing = existing_sqlite(cursor, scope, stored.candidates(hashes))
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
            add_id_keys(cursor, list(zip(columns[1], numbers, strict=True)))
            when_committed(session, stored.stored(first, columns[1]))
    finally:
        cursor.close()
    if not existing:
        return list(numbers)
    seqs = iter(numbers)
    return [next(seqs) if is_new else None for is_new in new]
