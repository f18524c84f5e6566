"""The raw event store: bulk, deduplicated writes and scoped reads (rollups: `rollup_store`).

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
import re
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
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
    func,
    literal_column,
    select,
    union_all,
)
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from ratecard.adapters.db import id_filter
from ratecard.adapters.db.id_filter import IdFilter
from ratecard.adapters.db.models import (
    EVENT_IDS,
    RECENT_EVENT_IDS,
    EventRow,
    event_scoped_id,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.types import dumps_text_map, loads, sqlite_instant_text
from ratecard.core.aggregation import Event

_LOOKUP_CHUNK = 500
# What each event brings; the scope and the instant of receipt are the batch's, written once
# in the statement rather than bound (SQLite) or copied and parsed (PostgreSQL) per row.
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


def meter_events(
    session: Session,
    scope: TenantScope,
    meter_code: str,
    *,
    since: datetime | None = None,
    up_to_seq: int | None = None,
) -> Generator[tuple[str, Event, int], None, None]:
    """Every counted event of a meter (from `since`, up to ``seq`` `up_to_seq`) as
    ``(customer_id, event, seq)``, in (customer, time, arrival) order: what a rebuild of its
    rollups reads. Streamed through the driver (a server-side cursor on PostgreSQL),
    `_REBUILD_FETCH` rows at a time."""
    postgres = session.get_bind().dialect.name == "postgresql"
    sql, mark = _counted_of_meter(postgres)
    params: list[Any] = [scope.tenant_id, scope.mode.value, meter_code]
    if since is not None:
        sql += f" AND occurred_at >= {mark}"
        params.append(since if postgres else sqlite_instant_text(since))
    if up_to_seq is not None:
        sql += f" AND seq <= {mark}"
        params.append(up_to_seq)
    dbapi: Any = session.connection().connection.dbapi_connection
    cursor = dbapi.cursor(name="ratecard_meter_events") if postgres else dbapi.cursor()
    try:
        if postgres:
            cursor.itersize = _REBUILD_FETCH
        cursor.execute(sql + " ORDER BY customer_id, occurred_at, seq", params)
        while rows := cursor.fetchmany(_REBUILD_FETCH):
            for customer_id, at, properties, seq in rows:
                event, number = _stored_event(postgres, at, properties, seq)
                yield str(customer_id), event, number
    finally:
        cursor.close()


_REBUILD_FETCH = 5_000


def _counted_of_meter(postgres: bool) -> tuple[str, str]:
    """A query of one meter's counted events, ``(customer_id, occurred_at, properties text,
    seq)``, the scope and the meter bound in that order; and the engine's bind mark."""
    mark = "%s" if postgres else "?"
    sql = (
        f"SELECT customer_id, occurred_at, {'properties::text' if postgres else 'properties'}, "
        f"seq FROM events WHERE tenant_id = {mark} AND mode = {mark} AND meter_code = {mark} "
        "AND customer_id IS NOT NULL"
    )
    return sql, mark


def last_seq(session: Session, scope: TenantScope) -> int:
    """The highest ``seq`` of the scope's events (0: none), through its ``(tenant_id, mode,
    seq)`` index."""
    found = session.scalar(
        select(func.max(EventRow.seq)).where(
            EventRow.tenant_id == scope.tenant_id, EventRow.mode == scope.mode
        )
    )
    return int(found or 0)


def held_seqs(session: Session, scope: TenantScope, meter_code: str, up_to_seq: int) -> list[int]:
    """The ``seq`` of the meter's events held (no customer yet) up to `up_to_seq`."""
    return [
        int(seq)
        for seq in session.scalars(
            select(EventRow.seq).where(
                EventRow.tenant_id == scope.tenant_id,
                EventRow.mode == scope.mode,
                EventRow.customer_id.is_(None),
                EventRow.meter_code == meter_code,
                EventRow.seq <= up_to_seq,
            )
        )
    ]


def counted_since(
    session: Session, scope: TenantScope, meter_code: str, after_seq: int, released: Sequence[int]
) -> list[tuple[str, Event, int]]:
    """The meter's counted events stored after `after_seq`, and those of `released` (``seq``
    of events that were held) counted now, in (customer, time, arrival) order: what arrived
    while a rebuild read the rest (`services.metering.rebuild`)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    select_, mark = _counted_of_meter(postgres)
    scoped = [scope.tenant_id, scope.mode.value, meter_code]
    rows = _fetch_all(session, f"{select_} AND seq > {mark}", [*scoped, after_seq])
    for chunk in _chunks([str(seq) for seq in released], _LOOKUP_CHUNK):
        marks = ", ".join([mark] * len(chunk))
        rows += _fetch_all(session, f"{select_} AND seq IN ({marks})", [*scoped, *map(int, chunk)])
    events = [
        (str(c), *_stored_event(postgres, at, properties, seq)) for c, at, properties, seq in rows
    ]
    return sorted(events, key=lambda e: (e[0], e[1].timestamp, e[2]))


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
