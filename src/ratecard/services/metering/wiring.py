"""The metering services of one process, wired together.

    >>> metering = MeteringServices.build(sessions, clock)                  # doctest: +SKIP
    >>> metering.ingestion.ingest(scope, events)   # then: entitlements dropped, alerts checked

After every committed batch the ingestion service tells the entitlement cache (drop the
customers whose usage changed) and the alerts (check the changed (customer, meter) pairs).
The cache is in-process unless a Redis URL is given, which API processes must share for an
invalidation in one of them to reach the others. With the JetStream buffer on, the worker
stores the events and announces whose usage changed; each API process hears it and calls
`usage_changed` (`adapters.usage_notices`).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.cache import HashCache, InProcessCache, RedisCache
from ratecard.adapters.clock import Clock
from ratecard.adapters.db.engine import sqlite_file
from ratecard.adapters.db.scope import TenantScope
from ratecard.services.metering.alerts import AlertService
from ratecard.services.metering.batches import IngestResult, Prepared
from ratecard.services.metering.entitlements import EntitlementService
from ratecard.services.metering.group_commit import GroupCommitter, writers_for
from ratecard.services.metering.ingestion import IngestionService
from ratecard.services.metering.usage import UsageService

#: Where ingestion's group commit runs (``RATECARD_INGEST_WRITER``).
Writer = Literal["auto", "thread", "process"]


def resolve_writer(engine: Engine, writer: Writer) -> Literal["thread", "process"]:
    """``auto``: a writer process of its own, except for an in-memory SQLite store (a child
    cannot share it).

    In one process the group commit's Python and the request threads' share one interpreter
    lock, so the server uses at most one core. Back to back through HTTP on 2026-12-06 (8
    connections): SQLite 18,900 events/s with the writer thread, 26,150 with the writer
    process; PostgreSQL 23,100 and 23,800 against 25,900 and 30,700.
    """
    if writer != "auto":
        return writer
    in_memory = engine.dialect.name == "sqlite" and sqlite_file(engine.url) is None
    return "thread" if in_memory else "process"


class Committer(Protocol):
    """Stores prepared batches: `GroupCommitter` (threads) or `ProcessCommitter`."""

    def submit(self, scope: TenantScope, actor: str, batch: Prepared) -> Future[IngestResult]: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class MeteringServices:
    ingestion: IngestionService
    usage: UsageService
    entitlements: EntitlementService
    alerts: AlertService
    #: The API's ingestion routes store through it: concurrent batches share a commit.
    committer: Committer

    @classmethod
    def build(
        cls,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        redis_url: str | None = None,
        writer: Writer = "thread",
    ) -> MeteringServices:
        cache: HashCache = RedisCache(redis_url) if redis_url else InProcessCache()
        entitlements = EntitlementService(sessions, clock, cache=cache)
        alerts = AlertService(sessions, clock)
        ingestion = IngestionService(
            sessions, clock, listeners=[entitlements.on_ingested, alerts.on_ingested]
        )
        engine = sessions.kw["bind"]
        committer: Committer
        if resolve_writer(engine, writer) == "process":
            from ratecard.services.metering.writer_process import ProcessCommitter

            if engine.dialect.name == "sqlite" and sqlite_file(engine.url) is None:
                raise ValueError("a writer process needs a database file, not an in-memory one")
            url = engine.url.render_as_string(hide_password=False)
            committer = ProcessCommitter(url, clock, listeners=ingestion.listeners)
        else:
            committer = GroupCommitter(ingestion, writers=writers_for(engine.dialect.name))
        return cls(ingestion, UsageService(sessions, clock), entitlements, alerts, committer)

    def usage_changed(self, scope: TenantScope, customer_ids: Iterable[str]) -> None:
        """Another process stored usage of these customers (a NATS worker's notice): drop their
        cached entitlements here. A customer this process never cached costs one dict miss."""
        for customer_id in customer_ids:
            self.entitlements.invalidate(scope, customer_id)
