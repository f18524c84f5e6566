"""Settings read from the environment (prefix ``RATECARD_``) or a ``.env`` file.

    >>> Settings(database_url="sqlite:///./var/test.db").database_url
    'sqlite:///./var/test.db'

``RATECARD_DATABASE_URL`` picks the store: a SQLite file (the embedded default, under ``./var/``)
or PostgreSQL through psycopg 3, e.g. ``postgresql+psycopg://user@host:5432/ratecard``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/ratecard.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RATECARD_", env_file=".env", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    #: How long a SQLite writer waits for the lock before failing (milliseconds).
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    #: SQLite's ``synchronous`` pragma (WAL mode). FULL (the default) syncs the WAL at every
    #: commit, so an acknowledged event survives a power loss; NORMAL syncs only at checkpoints
    #: (faster; a crash of the process loses nothing, a power loss may lose the last commits).
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    #: Connection pool size for PostgreSQL (per process).
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    #: PostgreSQL's ``plan_cache_mode`` on Ratecard's connections. ``force_generic_plan``
    #: (the default) plans each statement once per connection: the statements repeat with new
    #: values and their plans do not depend on them, and planning cost more than running (a
    #: usage read). ``auto`` is PostgreSQL's default.
    pg_plan_cache_mode: Literal["force_generic_plan", "auto", "force_custom_plan"] = (
        "force_generic_plan"
    )
    #: Log every SQL statement (development only).
    db_echo: bool = False
    #: How long an idempotency key is remembered (hours).
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    #: Redis for the entitlement cache (shared by API processes); unset: in-process.
    redis_url: str | None = None
    #: Where ingestion's group commit runs: ``thread`` (the API process), ``process`` (a
    #: child process with an interpreter lock of its own; `services.metering.writer_process`),
    #: or ``auto``: ``process``, except ``thread`` for an in-memory SQLite store
    #: (`services.metering.wiring.resolve_writer`).
    ingest_writer: Literal["auto", "thread", "process"] = "auto"
    #: ``nats``: ingestion routes publish to NATS JetStream and answer 202 ``queued``;
    #: ``ratecard worker --consume nats`` writes the events. Unset: routes write to the store.
    event_buffer: Literal["nats"] | None = None
    nats_url: str = "nats://127.0.0.1:4222"
    #: The JetStream stream and subject prefix (``<prefix>.<tenant>.<mode>``) of the buffer.
    nats_stream: str = Field(default="RATECARD_EVENTS", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    nats_subject_prefix: str = Field(default="ratecard.events", pattern=r"^[A-Za-z0-9_.-]{1,64}$")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
