"""The metering services of one process, wired together.

    >>> metering = MeteringServices.build(sessions, clock)                  # doctest: +SKIP
    >>> metering.ingestion.ingest(scope, events)   # then: entitlements dropped, alerts checked

After every committed batch the ingestion service tells the entitlement cache (drop the
customers whose usage changed) and the alerts (check the changed (customer, meter) pairs).
The cache is in-process unless a Redis URL is given, which API processes must share for an
invalidation in one of them to reach the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.cache import HashCache, InProcessCache, RedisCache
from ratecard.adapters.clock import Clock
from ratecard.services.metering.alerts import AlertService
from ratecard.services.metering.entitlements import EntitlementService
from ratecard.services.metering.group_commit import GroupCommitter
from ratecard.services.metering.ingestion import IngestionService
from ratecard.services.metering.usage import UsageService


@dataclass(frozen=True, slots=True)
class MeteringServices:
    ingestion: IngestionService
    usage: UsageService
    entitlements: EntitlementService
    alerts: AlertService
    #: The API's ingestion routes store through it: concurrent batches share a commit.
    committer: GroupCommitter

    @classmethod
    def build(
        cls, sessions: sessionmaker[Session], clock: Clock, *, redis_url: str | None = None
    ) -> MeteringServices:
        cache: HashCache = RedisCache(redis_url) if redis_url else InProcessCache()
        entitlements = EntitlementService(sessions, clock, cache=cache)
        alerts = AlertService(sessions, clock)
        ingestion = IngestionService(
            sessions, clock, listeners=[entitlements.on_ingested, alerts.on_ingested]
        )
        return cls(
            ingestion,
            UsageService(sessions, clock),
            entitlements,
            alerts,
            # PostgreSQL takes concurrent writers (one commit waits on disk while the next
            # round runs); SQLite has one write lock, so one writer.
            GroupCommitter(
                ingestion, writers=2 if sessions.kw["bind"].dialect.name == "postgresql" else 1
            ),
        )
