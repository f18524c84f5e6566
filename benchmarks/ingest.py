"""Ingestion throughput at the service layer, SQLite and PostgreSQL, with 10% duplicates.

    python -m benchmarks.ingest [events] [batch]     # `make bench` calls `bench_ingest()`

Random event ids, 100 customers, two meters (a count and a grouped sum), timestamps as live
traffic has them (the run's events span the time they take to send at 50,000 a second, each up
to 5 seconds late); every tenth event repeats an id already sent. Prints events/s, the p50/p99
time of one batch, and the p50/p99 of a current-period usage query for one customer (on
PostgreSQL after ``VACUUM (ANALYZE)``, as autovacuum would run it).
"""

from __future__ import annotations

import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db.engine import make_engine, make_session_factory
from ratecard.adapters.db.models import CustomerRow, MeterRow
from ratecard.adapters.db.schema import migrate
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.periods import Period
from ratecard.services.metering.batches import EventStatus
from ratecard.services.metering.ingestion import IngestionService
from ratecard.services.metering.usage import UsageService
from ratecard.services.tenancy import TenancyService

POSTGRES_URL = os.environ.get(
    "RATECARD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
NOW = datetime(2024, 1, 20, tzinfo=UTC)


def _events(total: int, seed: int = 1, rate: int = 50_000) -> list[dict[str, Any]]:
    return list(_event_stream(total, seed, rate))


def _event_stream(total: int, seed: int = 1, rate: int = 50_000) -> Iterator[dict[str, Any]]:
    """The events of `_events`, one at a time (a sustained run need not hold them all)."""
    rng = random.Random(seed)
    sent: list[str] = []
    for i in range(total):
        if i % 10 == 9 and sent:
            event_id = rng.choice(sent)
        else:
            event_id = secrets.token_hex(12)
            sent.append(event_id)
        late = rng.randrange(5_000_000)
        at = NOW - timedelta(microseconds=(total - i) * 1_000_000 // rate + late)
        meter = "calls" if i % 2 else "tokens"
        yield (
            {
                "id": event_id,
                "type": meter,
                "customer": f"c{rng.randrange(100)}",
                "timestamp": at.isoformat(),
                "properties": {"tokens": rng.randrange(1, 5000), "model": rng.choice("abc")},
            }
        )


def _prepare(url: str, customers: int = 100) -> tuple[Any, TenantScope, FixedClock, list[str]]:
    """A migrated store with a tenant, a count meter, a grouped sum meter and customers."""
    engine = make_engine(url)
    migrate(engine)
    sessions = make_session_factory(engine)
    clock = FixedClock(NOW)
    tenant = TenancyService(sessions, clock).create_tenant("Bench")
    scope = TenantScope(tenant.id, Mode.LIVE)
    with UnitOfWork(sessions, scope, actor="bench", clock=clock) as uow:
        uow.meters.add(MeterRow(code="calls", name="c", aggregation="count", created_at=NOW))
        uow.meters.add(
            MeterRow(
                code="tokens",
                name="t",
                aggregation="sum",
                value_field="tokens",
                group_by=["model"],
                created_at=NOW,
            )
        )
        rows = [
            CustomerRow(
                external_id=f"c{i}", name=f"c{i}", currency="USD", timezone="UTC", created_at=NOW
            )
            for i in range(customers)
        ]
        for row in rows:
            uow.customers.add(row)
        uow.commit()
        ids = [row.id for row in rows]
    return sessions, scope, clock, ids


@contextmanager
def postgres_schema(keep: str | None = None) -> Iterator[str | None]:
    """A PostgreSQL URL on a schema of its own (dropped afterwards unless `keep` names it), or
    None when PostgreSQL cannot be reached."""
    schema = keep or f"rc_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(POSTGRES_URL, poolclass=sa.NullPool)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL: skipped ({exc.orig})")
        admin.dispose()
        yield None
        return
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def _vacuum_analyze(engine: Any) -> None:
    """What autovacuum does within a minute of a load (this machine's server runs without it).
    Without statistics the planner reads a customer's edge events through the event log's
    index, `(tenant_id, mode, seq)`, every event of the tenant: 20-40 ms a query here instead
    of 1 ms."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM (ANALYZE) events, usage_rollups")


def bench_engine(name: str, url: str, total: int, batch: int) -> dict[str, float]:
    sessions, scope, clock, _ids = _prepare(url)
    service = IngestionService(sessions, clock)
    events = _events(total)
    latencies = []
    accepted = duplicates = 0
    started = time.perf_counter()
    for start in range(0, total, batch):
        t0 = time.perf_counter()
        result = service.ingest(scope, events[start : start + batch])
        latencies.append(time.perf_counter() - t0)
        accepted += result.count(EventStatus.ACCEPTED)
        duplicates += result.count(EventStatus.DUPLICATE)
    elapsed = time.perf_counter() - started
    if sessions.kw["bind"].dialect.name == "postgresql":
        _vacuum_analyze(sessions.kw["bind"])
    usage = UsageService(sessions, clock)
    with sessions() as session:
        customer_id = session.scalar(
            sa.select(CustomerRow.id).where(CustomerRow.tenant_id == scope.tenant_id).limit(1)
        )
    assert customer_id is not None
    period = Period(datetime(2024, 1, 1, 0, 30, tzinfo=UTC), NOW + timedelta(minutes=17))
    query = []
    for _ in range(50):
        t0 = time.perf_counter()
        usage.meter_usage(scope, customer_id, "tokens", period)
        query.append(time.perf_counter() - t0)
    rate = total / elapsed
    print(
        f"{name}: {total:,} events in batches of {batch:,}: {rate:,.0f} events/s "
        f"({accepted:,} accepted, {duplicates:,} duplicates); batch p50 "
        f"{_pct(latencies, 50) * 1000:.0f} ms, p99 {_pct(latencies, 99) * 1000:.0f} ms; "
        f"usage query p50 {_pct(query, 50) * 1000:.1f} ms, p99 {_pct(query, 99) * 1000:.1f} ms"
    )
    return {"events_per_s": rate}


def bench_ingest(total: int = 100_000, batch: int = 5_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench_engine("SQLite", f"sqlite:///{tmp}/bench.db", total, batch)
    with postgres_schema() as url:
        if url is not None:
            bench_engine("PostgreSQL", url, total, batch)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    bench_ingest(*args)
