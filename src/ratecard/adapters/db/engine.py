"""Engines and sessions for SQLite (embedded) and PostgreSQL (production), one code path.

    >>> engine = make_engine("sqlite:///./var/ratecard.db")   # doctest: +SKIP
    >>> migrate(engine)                                        # doctest: +SKIP
    >>> sessions = make_session_factory(engine)                # doctest: +SKIP

SQLite is opened in WAL mode with foreign keys on, a busy timeout, ``synchronous=FULL``
(``RATECARD_SQLITE_SYNCHRONOUS``: a commit returns only once the WAL is on disk, so an
acknowledged event survives a power loss, not just a crash of the process), a 64 MiB page
cache and a checkpoint every 10,000 WAL pages. Every transaction
starts with ``BEGIN IMMEDIATE``: writers queue on the database lock up front instead of failing
half-way with "database is locked" when a read turns into a write. PostgreSQL runs at READ
COMMITTED through psycopg 3 (``postgresql+psycopg://``); a ``search_path`` can ride in the URL
(``?options=-csearch_path%3Dmyschema``).

JSON columns are written with `types.dumps` (sorted keys, no floats) and read with `types.loads`
(decimals, never floats) on both engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ratecard.adapters.db import types
from ratecard.config import Settings, get_settings

_SQLITE_CACHE_KIB = -65_536  # negative: KiB, i.e. 64 MiB per connection
_SQLITE_CHECKPOINT_PAGES = 10_000


def make_engine(url: str | URL, settings: Settings | None = None) -> Engine:
    """An engine for ``url`` with the house settings for its dialect."""
    settings = settings or get_settings()
    parsed = make_url(url)
    common: dict[str, Any] = {
        "echo": settings.db_echo,
        "json_serializer": types.dumps,
        "json_deserializer": types.loads,
    }
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, settings, common)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(
            parsed,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=True,
            isolation_level="READ COMMITTED",
            **common,
        )
    raise ValueError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql"
    )


def _sqlite_engine(url: URL, settings: Settings, common: dict[str, Any]) -> Engine:
    database = url.database or ""
    in_memory = database in {"", ":memory:"} or database.startswith("file::memory:")
    if in_memory:
        engine = sa.create_engine(
            url,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            **common,
        )
    else:
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
                # Random event ids land on random index pages: a page cache that holds the
                # hot part of the indexes, and checkpoints every ~40 MB of WAL rather than
                # 4 MB (a page rewritten by many commits is copied back to the file once).
                cursor.execute(f"PRAGMA cache_size = {_SQLITE_CACHE_KIB}")
                cursor.execute(f"PRAGMA wal_autocheckpoint = {_SQLITE_CHECKPOINT_PAGES}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that do not expire loaded rows on commit (values stay readable after it)."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)
