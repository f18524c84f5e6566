"""Engines and sessions for SQLite (embedded) and PostgreSQL (production), one code path.

    >>> engine = make_engine("sqlite:///./var/ratecard.db")   # doctest: +SKIP
    >>> migrate(engine)                                        # doctest: +SKIP
    >>> sessions = make_session_factory(engine)                # doctest: +SKIP

SQLite is opened in WAL mode with foreign keys on, a busy timeout, ``synchronous=FULL``
(``RATECARD_SQLITE_SYNCHRONOUS``: a commit returns only once the WAL is on disk, so an
acknowledged event survives a power loss, not just a crash of the process), a 64 MiB page
cache and a checkpoint every 10,000 WAL pages (a serving process moves checkpoints off the
commit path with a `Checkpointer`). Every transaction
starts with ``BEGIN IMMEDIATE``: writers queue on the database lock up front instead of failing
half-way with "database is locked" when a read turns into a write. PostgreSQL runs at READ
COMMITTED through psycopg 3 (``postgresql+psycopg://``); a ``search_path`` can ride in the URL
(``?options=-csearch_path%3Dmyschema``).

JSON columns are written with `types.dumps` (sorted keys, no floats) and read with `types.loads`
(decimals, never floats) on both engines.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ratecard.adapters.db import types
from ratecard.config import Settings, get_settings

log = logging.getLogger(__name__)

_SQLITE_CACHE_KIB = -65_536  # negative: KiB, i.e. 64 MiB per connection
_SQLITE_CHECKPOINT_PAGES = 10_000


def make_engine(
    url: str | URL, settings: Settings | None = None, *, sync_later: bool = False
) -> Engine:
    """An engine for ``url`` with the house settings for its dialect.

    `sync_later`, for a writer that waits for durability in a thread of its own: on a SQLite
    file at ``synchronous=FULL``, its commits return before the WAL is on disk, so the write
    lock is free for the next transaction during the fsync, and `wal_sync` gives the call
    that puts every commit returned from so far on disk. Anything that answers for a commit
    must wait for that call. Elsewhere commits are durable when they return and it changes
    nothing.
    """
    settings = settings or get_settings()
    parsed = make_url(url)
    common: dict[str, Any] = {
        "echo": settings.db_echo,
        "json_serializer": types.dumps,
        "json_deserializer": types.loads,
    }
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, settings, common, sync_later=sync_later)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(
            parsed,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            isolation_level="READ COMMITTED",
            **common,
        )
        _ping_when_idle(engine)
        _plan_cache_mode(engine, settings.pg_plan_cache_mode)
        return engine
    raise ValueError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql"
    )


def _plan_cache_mode(engine: Engine, mode: str) -> None:
    """Set ``plan_cache_mode`` on each new connection (`Settings.pg_plan_cache_mode`).

    psycopg prepares a statement on the server once a connection has run it five times. Under
    PostgreSQL's ``auto`` the server still plans it anew at each run whenever its plan made for
    the values at hand is estimated cheaper than the generic one, and a usage read, a dozen
    index ranges in one statement, took longer to plan than to run: 1.4 ms against 0.7 ms a
    read of one meter with generic plans (the rollups and events of a customer's meter are
    found by the same key ranges whatever the values). A ``SET`` in the connection's first
    transaction, not a startup option: connection poolers refuse unknown startup options.
    """
    if mode == "auto":
        return

    @event.listens_for(engine, "connect")
    def _set(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET plan_cache_mode = {mode}")
        dbapi_connection.commit()  # else the pool's rollback on return undoes it


# A pooled PostgreSQL connection idle this long is pinged before it is handed out.
PING_IDLE_AFTER_NS = 1_000_000_000  # a second


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only if it sat idle for `PING_IDLE_AFTER_NS`.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: one more round trip for every
    request's API key, every alerts check, every usage query (four round trips instead of three).
    A connection used a moment ago is as alive as a ping would show; one that sat idle may have
    been dropped (a restarted server, a proxy's idle timeout), so it is pinged, and replaced if
    the ping fails. A server restarted within the second after a connection's last use fails
    that connection's next statement instead; SQLAlchemy then discards every pooled connection.
    """

    @event.listens_for(engine.pool, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic_ns()

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic_ns() - since < PING_IDLE_AFTER_NS:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise sa_exc.DisconnectionError(str(exc)) from exc  # the pool takes a new one


def sqlite_file(url: URL) -> str | None:
    """The path of the SQLite database file `url` names (a ``file:`` URI's path too); None
    for an in-memory SQLite database, and for any other engine."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in {"", ":memory:"}:
        return None
    if database.startswith("file:"):  # sqlite:///file:/path/db?uri=true
        if database.startswith("file::memory:") or url.query.get("mode") == "memory":
            return None
        path = unquote(urlsplit(database).path)
        return path or None
    return database


def _sqlite_engine(
    url: URL, settings: Settings, common: dict[str, Any], *, sync_later: bool
) -> Engine:
    database = sqlite_file(url)
    in_memory = database is None
    if in_memory:
        engine = sa.create_engine(
            url,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            **common,
        )
    else:
        assert database is not None
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            connect_args={"check_same_thread": False},
            **common,
        )
    busy_timeout_ms = settings.sqlite_busy_timeout_ms
    synchronous = settings.sqlite_synchronous
    assert synchronous in ("FULL", "NORMAL", "EXTRA"), synchronous
    wal: _Wal | None = None
    if sync_later and database is not None and synchronous == "FULL":
        # NORMAL syncs the WAL before each checkpoint, the database file after it, and the
        # WAL's header when the WAL starts over; the fsync FULL adds to every commit is then
        # `wal_sync`'s, made by the caller outside the write lock.
        synchronous = "NORMAL"
        wal = _SYNCED_LATER[engine] = _Wal()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute(f"PRAGMA synchronous = {synchronous}")
                if wal is not None:  # the file SQLite opened, whatever form the URL named it in
                    cursor.execute("PRAGMA database_list")
                    wal.path = (
                        next(f for _, name, f in cursor.fetchall() if name == "main") + "-wal"
                    )
                # Random event ids land on random index pages: a page cache that holds the
                # hot part of the indexes, and checkpoints every ~40 MB of WAL rather than
                # 4 MB (a page rewritten by many commits is copied back to the file once).
                cursor.execute(f"PRAGMA cache_size = {_SQLITE_CACHE_KIB}")
                # With a `Checkpointer` running, commits never copy the WAL back themselves.
                pages = 0 if engine in _CHECKPOINTED else _SQLITE_CHECKPOINT_PAGES
                cursor.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")  # a reader: WAL readers never wait for writers
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class _Wal:
    """The WAL file of an engine whose commits return before they are on disk, and a
    descriptor kept open on it: an error of a failed write-back is reported to the descriptors
    open when it happened, so one opened afresh for each fsync could miss it."""

    def __init__(self) -> None:
        self.path: str | None = None  # set by the first connection (`PRAGMA database_list`)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            if self.path is None:  # no connection yet: nothing was committed
                return
            try:
                inode = os.stat(self.path).st_ino
            except FileNotFoundError:  # the last connection closed: its checkpoint synced all
                return
            if self._fd is not None:
                kept = os.fstat(self._fd)
                if kept.st_nlink == 0 or kept.st_ino != inode:  # removed and made anew
                    os.close(self._fd)
                    self._fd = None
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            os.fsync(self._fd)  # the file's pages, whoever wrote them


_SYNCED_LATER: weakref.WeakKeyDictionary[Engine, _Wal] = weakref.WeakKeyDictionary()


def wal_sync(engine: Engine) -> Callable[[], None] | None:
    """For an engine made with `make_engine(sync_later=True)` whose commits return before
    they are on disk: the call that makes all of them durable (an fsync of the WAL file, as
    ``synchronous=FULL`` makes inside each commit). It raises `OSError` if the disk failed:
    the caller must then acknowledge nothing more. None when the engine's commits are durable,
    or as durable as configured, when they return."""
    wal = _SYNCED_LATER.get(engine)
    return None if wal is None else wal.sync


_CHECKPOINTED: weakref.WeakSet[Engine] = weakref.WeakSet()
_RESTART_FRAMES = 2_000  # ~8 MB of WAL
_CHECKPOINT_BUSY_MS = 10_000


class Checkpointer:
    """Copies SQLite's WAL back into the database file in a thread of its own.

    Left to itself, SQLite checkpoints inside the commit that crosses the WAL size limit:
    that commit then waits for ~40 MB of page writes and an fsync of the database file, and so
    does every request behind it. A serving process starts one of these instead: connections
    made afterwards do not checkpoint on commit, and a ``PASSIVE`` checkpoint (which never
    blocks writers or readers) runs every `every` on a connection of its own. Once a
    checkpoint has copied everything, the next commit starts the WAL over, so it stays about
    one interval of writes long. PostgreSQL and in-memory databases need none: `start` is a
    no-op for them.
    """

    def __init__(self, engine: Engine, *, every: timedelta = timedelta(milliseconds=250)) -> None:
        self._engine = engine
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._path = sqlite_file(engine.url)
        self.runs = 0
        self.restart_frames = _RESTART_FRAMES

    def start(self) -> None:
        if self._path is None or self._thread is not None:
            return
        _CHECKPOINTED.add(self._engine)
        self._engine.dispose()  # pooled connections were made to checkpoint on commit
        self._thread = threading.Thread(
            target=self._run, name="ratecard-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after a last checkpoint; commits checkpoint themselves again."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        _CHECKPOINTED.discard(self._engine)
        self._engine.dispose()

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL back: (busy, WAL frames, frames copied back).

        A ``PASSIVE`` checkpoint copies what writers have committed without blocking them.
        Writers that never pause would keep it from ever finishing, and a WAL that is never
        started over grows without end (and every page read searches its index), so a
        ``RESTART`` follows when more than `restart_frames` remain: it waits for the current
        commit, blocks the next one while it copies the little that is left, and lets the
        next commit start the WAL over.
        """
        assert self._path is not None
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute(f"PRAGMA busy_timeout = {_CHECKPOINT_BUSY_MS}")
            busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames - copied > self.restart_frames or frames > self.restart_frames:
                busy, frames, copied = connection.execute(
                    "PRAGMA wal_checkpoint(RESTART)"
                ).fetchone()
        finally:
            connection.close()
        self.runs += 1
        return int(busy), int(frames), int(copied)

    def _run(self) -> None:
        while not self._stop.wait(self._every.total_seconds()):
            try:
                self.checkpoint()
            except sqlite3.Error as exc:  # e.g. the file is gone at shutdown: try again later
                log.warning("WAL checkpoint failed: %s", exc)
        try:
            self.checkpoint()
        except sqlite3.Error as exc:
            log.warning("final WAL checkpoint failed: %s", exc)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that do not expire loaded rows on commit (values stay readable after it)."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


READ_ONLY = "ratecard_read_only"
_READERS: weakref.WeakKeyDictionary[Engine, sessionmaker[Session]] = weakref.WeakKeyDictionary()


_STATEMENT_READERS: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def statement_reader(engine: Engine) -> Engine:
    """The engine for reads of one statement each, outside any unit of work (the API key of
    every request, the alerts after every ingestion round). On SQLite they read in a read-only
    transaction (no write lock, as `read_only`); on PostgreSQL in no transaction at all, so a
    read is one round trip where ``BEGIN``, the query and ``COMMIT`` took three."""
    found = _STATEMENT_READERS.get(engine)
    if found is None:
        options: dict[str, Any] = {READ_ONLY: True}
        if engine.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        found = _STATEMENT_READERS[engine] = engine.execution_options(**options)
    return found


def read_only(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions of the same store for units of work that only read (`statement_reader`).

    On SQLite they begin deferred (plain ``BEGIN``) instead of ``BEGIN IMMEDIATE``: they take
    no write lock, so usage queries and entitlement checks never queue behind ingestion's
    commits (WAL readers read the last committed snapshot). On PostgreSQL they run without a
    transaction: under ``READ COMMITTED`` each statement reads a snapshot of its own anyway,
    and a usage query saves the round trips of ``BEGIN`` and ``COMMIT`` (its two statements
    take two round trips, not four). Nothing may be written in them: a flush is refused.
    """
    engine = sessions.kw["bind"]
    assert isinstance(engine, Engine)
    found = _READERS.get(engine)
    if found is None:
        found = _READERS[engine] = sessionmaker(
            bind=statement_reader(engine),
            expire_on_commit=False,
            autoflush=True,
        )
    return found
