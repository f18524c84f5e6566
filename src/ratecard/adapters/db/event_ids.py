"""SQLite's and PostgreSQL's dedup keys of stored events, and lookups of events by id.

    >>> existing_ids(session, scope, ["evt_1", "evt_7"])      # doctest: +SKIP
    {'evt_7'}

- SQLite: `id_hash` (48 bits of BLAKE2b of the scoped id) rather than a unique index on the ids
  themselves: random ids rewrite random index pages at every commit, and a small key has fewer
  of them (migration 0005). The hashes are kept in two tiers, a small one that takes each
  commit's keys and a large one that takes them a slice of the hash range at a time, in key
  order (`add_id_keys`, migration 0013); a Bloom filter of the stored ids, per engine, spares
  most new ids the lookup (`id_filter`). Rows that share a hash are told apart by their full id.
- PostgreSQL: an exclusion constraint on a hash index of the scoped id (`scoped_id`,
  `models.EVENT_SCOPED_ID`); a lookup written with the same expression goes through it.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from hashlib import blake2b
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    bindparam,
    delete,
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

LOOKUP_CHUNK = 500
# What each event brings; the scope and the instant of receipt are the batch's, written once
# in the statement rather than bound (SQLite) or copied and parsed (PostgreSQL) per row.


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def scope_prefix(tenant_id: str, mode: str) -> bytes:
    return f"{tenant_id}\x1f{mode}\x1f".encode()


def _hash(prefix: bytes, event_id: str) -> int:
    return int.from_bytes(blake2b(prefix + event_id.encode(), digest_size=6).digest(), "big")


def id_hashes(prefix: bytes, event_ids: Iterable[str]) -> list[int]:
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
    return _hash(scope_prefix(tenant_id, mode), event_id)


def existing_sqlite(cursor: Any, scope: TenantScope, hashes: Sequence[int]) -> set[str]:
    """The ids of `scope` stored under any of `hashes` (full ids compared)."""
    tenant_id, mode = scope.tenant_id, scope.mode.value
    found: set[str] = set()
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        chunk = hashes[start : start + LOOKUP_CHUNK]
        marks = ", ".join("?" * len(chunk))
        for tier in ID_TABLES:
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
ID_TABLES = (RECENT_EVENT_IDS, EVENT_IDS)  # a lookup reads both
_HASH_RANGE = 1 << 48  # `id_hash` is 48 bits
_FOLD_SLICES = 32
_folds = itertools.count()  # which slice the next commit moves (per process; any order is exact)


def add_id_keys(cursor: Any, keys: Sequence[tuple[int, int]]) -> None:
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


# A filter of the ids each SQLite database holds, per engine (`id_filter`).
_id_filters: weakref.WeakKeyDictionary[Any, IdFilter] = weakref.WeakKeyDictionary()


def when_committed(session: Session, call: Callable[[], None]) -> None:
    """`call` once the session's current transaction committed; never for a rollback, nor
    for a later transaction of the same session."""
    current = session.get_transaction()

    def after_commit(committed: Session) -> None:
        if committed.get_transaction() is current:
            call()

    sa_event.listen(session, "after_commit", after_commit)


def id_filter_at(session: Session, top: int) -> IdFilter:
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
        for table in ID_TABLES:
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
            *(select(tier.c.seq).where(tier.c.id_hash == hashed) for tier in ID_TABLES)
        )
        return and_(EventRow.seq.in_(keys), condition)
    return and_(scoped_id_text == scoped_id(scope, event_id), condition)


# PostgreSQL's dedup index is on this expression: a lookup written the same way goes through it
scoped_id_text: ColumnElement[str] = literal_column(event_scoped_id("events"), String)


def scoped_id(scope: TenantScope, event_id: str) -> str:
    """The text PostgreSQL's dedup index is on (`models.EVENT_SCOPED_ID`) for a scope and id."""
    return f"{scope.tenant_id}\x1f{scope.mode.value}\x1f{event_id}"


def existing_ids(session: Session, scope: TenantScope, event_ids: Sequence[str]) -> set[str]:
    """Which of `event_ids` the store already holds in this scope."""
    if session.get_bind().dialect.name == "sqlite":
        prefix = scope_prefix(scope.tenant_id, scope.mode.value)
        hashes = id_hashes(prefix, event_ids)
        cursor: Any = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            return existing_sqlite(cursor, scope, hashes) & set(event_ids)
        finally:
            cursor.close()
    found: set[str] = set()
    for chunk in chunks(event_ids, LOOKUP_CHUNK):
        statement = select(EventRow.event_id).where(
            scoped_id_text.in_([scoped_id(scope, event_id) for event_id in chunk]),
            EventRow.tenant_id == scope.tenant_id,
            EventRow.mode == scope.mode,
            EventRow.event_id.in_(chunk),
        )
        found.update(session.scalars(statement))
    return found
