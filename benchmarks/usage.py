"""Current-period usage of one customer with many events stored, SQLite and PostgreSQL.

    python -m benchmarks.usage [events] [customers] [sqlite|postgresql|both] [keep]

Seeds `events` (default 10 million) directly into the store, outside the ingest path (``COPY`` on
PostgreSQL, ``executemany`` on SQLite, indexes built after the load, then ``VACUUM (ANALYZE)``
on PostgreSQL as autovacuum would run it), with the hourly rollups
ingestion would have merged for them (a row per customer, meter, hour and group): 60 days up
to `NOW`, `customers` customers, a count meter
and a sum meter grouped by model. Then times `UsageService.meter_usage` of random customers over
the current period (month start to `NOW` + 17 minutes, so both edges read raw events) and prints
p50/p99, after checking one result against `aggregate()` over the raw events.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa

from benchmarks.ingest import _pct, _prepare, postgres_schema
from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db import event_ids, event_reads, event_store, rollup_seal, rollup_store
from ratecard.adapters.db.engine import make_engine, make_session_factory
from ratecard.adapters.db.models import (
    CustomerRow,
    DailyRollupRow,
    MeterRow,
    PlanRow,
    PlanVersionRow,
    RollupSealRow,
    SubscriptionRow,
)
from ratecard.adapters.db.schema import migrate
from ratecard.adapters.db.scope import Mode, Role, TenantScope
from ratecard.adapters.db.types import sqlite_instant_text
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import aggregate
from ratecard.core.periods import Period
from ratecard.runtime import tune_gc
from ratecard.services.metering.ingestion import rollup_partials
from ratecard.services.metering.usage import UsageService
from ratecard.services.metering.usage_reader import UsageReader
from ratecard.services.tenancy import TenancyService

NOW = datetime(2024, 1, 20, tzinfo=UTC)
HOURS = 60 * 24
END = NOW + timedelta(hours=1)  # the data runs past the period's end
# Reads before the timed ones, as a server in steady state has run them: each connection
# prepares a statement on its fifth run, and plans are cached.
WARM = 20
PERIOD = Period(datetime(2024, 1, 1, 0, 30, tzinfo=UTC), NOW + timedelta(minutes=17))
RENEWAL = PERIOD.start_at + timedelta(days=31)  # the end of the stored subscriptions' period
_EVENT_COLUMNS = (
    "seq, tenant_id, mode, event_id, id_hash, meter_code, customer_ref, customer_id, "
    "occurred_at, occurred_hour, received_at, properties"
)
_EVENT_INDEX = "ix_events_tenant_id_mode_customer_id_meter_code_occurred_hour"


def _hours(
    total: int,
    customers: list[str],
    scope: TenantScope,
    meters: dict[str, MeterRow],
    *,
    hashed: bool,
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Per hour of the 60 days: its event rows and its rollup rows, in time (= seq) order."""
    rng = random.Random(7)
    start = END - timedelta(hours=HOURS)
    per_hour = total // HOURS
    seq = 0
    prefix = secrets.token_hex(4)
    for h in range(HOURS):
        hour_at = start + timedelta(hours=h)
        offsets = sorted(rng.randrange(3_600_000_000) for _ in range(per_hour))
        events = []
        fresh = []
        for offset in offsets:
            seq += 1
            at = hour_at + timedelta(microseconds=offset)
            index = rng.randrange(len(customers))
            meter = "calls" if seq % 2 else "tokens"
            props = {"model": "abc"[rng.randrange(3)], "tokens": str(rng.randrange(1, 5000))}
            new = event_store.NewEvent(
                f"{prefix}{seq:012d}", meter, f"c{index}", customers[index], at, props
            )
            text = sqlite_instant_text(at)
            events.append(
                (
                    seq,
                    scope.tenant_id,
                    scope.mode.value,
                    new.event_id,
                    event_ids.id_hash(scope.tenant_id, scope.mode.value, new.event_id)
                    if hashed
                    else None,
                    meter,
                    new.customer_ref,
                    new.customer_id,
                    text,
                    event_store.hour_number(at),
                    text,
                    f'{{"model":"{props["model"]}","tokens":"{props["tokens"]}"}}',
                )
            )
            fresh.append((new, seq))
        yield events, [_rollup_row(scope, p) for p in rollup_partials(meters, fresh)]


def _rollup_row(scope: TenantScope, item: tuple[Any, ...]) -> tuple[Any, ...]:
    customer_id, code, hour_at, key, p = item

    def text(value: Any) -> str | None:
        return None if value is None else format(value, "f")

    return (
        scope.tenant_id,
        scope.mode.value,
        customer_id,
        code,
        sqlite_instant_text(hour_at),
        rollup_store.group_text(key),
        p.event_count,
        p.value_count,
        text(p.value_sum),
        text(p.value_min),
        text(p.value_max),
        text(p.latest_value),
        None if p.latest_at is None else sqlite_instant_text(p.latest_at),
        p.latest_seq,
    )


def _seed(
    sessions: Any, url: str, scope: TenantScope, customers: list[str], total: int
) -> tuple[int, int]:
    with sessions() as session:
        meters = {
            m.code: m
            for m in session.scalars(
                sa.select(MeterRow).where(MeterRow.tenant_id == scope.tenant_id)
            )
        }
        session.expunge_all()
    engine = sessions.kw["bind"]
    n_events = n_rollups = 0
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        postgres = engine.dialect.name == "postgresql"
        if not postgres:
            cursor.execute("BEGIN")
        cursor.execute(f"DROP INDEX {_EVENT_INDEX}")
        raw.commit()
        rollup_sql = f"usage_rollups ({rollup_store.ROLLUP_COLUMNS})"
        for events, rollups in _hours(total, customers, scope, meters, hashed=not postgres):
            if postgres:
                with cursor.copy(f"COPY events ({_EVENT_COLUMNS}) FROM STDIN") as copy:
                    for row in events:
                        copy.write_row(row)
                with cursor.copy(f"COPY {rollup_sql} FROM STDIN") as copy:
                    for row in rollups:
                        copy.write_row(row)
            else:
                cursor.execute("BEGIN")
                marks = ", ".join("?" * 12)
                cursor.executemany(
                    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({marks})", events
                )
                marks = ", ".join("?" * 14)
                cursor.executemany(f"INSERT INTO {rollup_sql} VALUES ({marks})", rollups)
            n_events += len(events)
            n_rollups += len(rollups)
            raw.commit()
        if postgres:
            cursor.execute("SELECT setval('events_seq_seq', (SELECT max(seq) FROM events))")
        if not postgres:
            cursor.execute("BEGIN")
        cursor.execute(
            f"CREATE INDEX {_EVENT_INDEX} ON events "
            "(tenant_id, mode, customer_id, meter_code, occurred_hour)"
        )
        if not postgres:  # SQLite's dedup keys (`event_ids.add_id_keys`), all in the large tier
            cursor.execute(
                "INSERT INTO event_ids (id_hash, seq) SELECT id_hash, seq FROM events "
                "ORDER BY id_hash, seq"
            )
            cursor.execute("ANALYZE")
        raw.commit()
        if postgres:
            # What autovacuum does within a minute of such a load: without it no page is
            # marked all-visible yet, and every index-only scan of the rollups reads the heap.
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
            cursor.execute("VACUUM (ANALYZE) events, usage_rollups")
            raw.driver_connection.autocommit = False  # type: ignore[union-attr]  # back to the pool
    finally:
        raw.close()
    return n_events, n_rollups


def _existing(url: str) -> tuple[Any, TenantScope, FixedClock, list[str]] | None:
    """A store seeded by an earlier run (kept with `keep`), or None."""
    engine = make_engine(url)
    if not sa.inspect(engine).has_table("events"):
        engine.dispose()
        return None
    migrate(engine)  # a store kept from before a migration
    sessions = make_session_factory(engine)
    with sessions() as session:
        tenant_id = session.scalar(sa.text("SELECT tenant_id FROM events LIMIT 1"))
    if tenant_id is None:
        engine.dispose()
        return None
    with sessions() as session:
        ids = list(
            session.scalars(sa.select(CustomerRow.id).where(CustomerRow.tenant_id == tenant_id))
        )
    return sessions, TenantScope(tenant_id, Mode.LIVE), FixedClock(NOW), ids


PLAN = {
    "code": "usage",
    "name": "Usage",
    "currency": "USD",
    "interval": "month",
    "charges": [
        {"code": "base", "model": "flat", "amount": "10.00"},
        {
            "code": "calls",
            "model": "graduated",
            "meter": "calls",
            "tiers": [
                {"up_to": "1000", "unit_price": "0"},
                {"up_to": None, "unit_price": "0.0125"},
            ],
        },
        {"code": "tokens", "model": "per_unit", "meter": "tokens", "unit_price": "0.000125"},
    ],
}


def _subscribe(sessions: Any, scope: TenantScope, clock: FixedClock, ids: list[str]) -> None:
    """Each customer on a plan pricing both meters, in its current period (`PERIOD`), once;
    then the tables it touched analyzed, as autovacuum would soon after."""
    with UnitOfWork(sessions, scope, actor="bench", clock=clock) as uow:
        if uow.session.scalar(sa.select(sa.func.count()).select_from(SubscriptionRow)):
            return
        uow.plans.add(PlanRow(code="usage", name="Usage", created_at=NOW))
        uow.plan_versions.add(
            PlanVersionRow(
                plan_code="usage",
                version=1,
                status="published",
                currency="USD",
                document=PLAN,
                created_at=NOW,
            )
        )
        uow.session.flush()
        rows = [
            SubscriptionRow(
                customer_id=customer_id,
                plan_code="usage",
                plan_version=1,
                quantity=Decimal(1),
                status="active",
                anchor_at=PERIOD.start_at,
                timezone="UTC",
                current_period_start_at=PERIOD.start_at,
                current_period_end_at=RENEWAL,
                created_at=PERIOD.start_at,
            )
            for customer_id in ids
        ]
        for row in rows:
            uow.subscriptions.add(row)
        uow.session.flush()
        start = {"plan_code": "usage", "plan_version": 1, "quantity": 1, "timezone": "UTC"}
        for row in rows:  # the timeline a renewal is replayed from
            uow.subscription_changes.append(
                row.id, "start", start, effective_at=PERIOD.start_at, recorded_at=NOW, actor="b"
            )
        uow.commit()
    engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":  # as autovacuum would, soon after
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE customers, subscriptions, plan_versions, meters")


def _seal(sessions: Any) -> str:
    """Seal the stored days, as the writer would have by `NOW` (`IngestionService.seal_due`),
    and on PostgreSQL ``VACUUM (ANALYZE)`` their rows as after the load."""
    with sessions() as session:
        if session.scalar(sa.select(RollupSealRow.sealed_before)) is not None:
            return ""
        started = time.perf_counter()
        rollup_seal.seal_rollups(session, NOW - rollup_store.SEAL_LAG)
        session.commit()
        spent = time.perf_counter() - started
    engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM (ANALYZE) usage_rollups_daily")
    with sessions() as session:
        days = session.scalar(sa.select(sa.func.count()).select_from(DailyRollupRow))
    return f" (every day before NOW's sealed in {spent:.1f} s: {days:,} daily rows)"


def bench_usage(name: str, url: str, total: int, customers: int, rounds: int = 1_000) -> None:
    found = _existing(url)
    seeded = ""
    if found is None:
        sessions, scope, clock, ids = _prepare(url, customers)
        started = time.perf_counter()
        _seed(sessions, url, scope, ids, total)
        seeded = f" (seeded in {time.perf_counter() - started:.0f} s)"
    else:
        sessions, scope, clock, ids = found
    seeded += _seal(sessions)
    with sessions() as session:
        n_events = session.scalar(sa.text("SELECT count(*) FROM events"))
        n_rollups = session.scalar(sa.text("SELECT count(*) FROM usage_rollups"))
    usage = UsageService(sessions, clock)
    rng = random.Random(3)
    for code in ("calls", "tokens"):  # one exact check against the raw events
        with sessions() as session:
            spec = UsageReader(session, scope).spec(code)
            raw = event_reads.read_events(
                session, scope, ids[0], code, start_at=PERIOD.start_at, end_at=PERIOD.end_at
            )
        expected = aggregate(spec, [e for e, _ in raw], PERIOD.start_at, PERIOD.end_at)
        assert usage.meter_usage(scope, ids[0], code, PERIOD) == expected, code
    tune_gc()  # as `ratecard serve` does: the collector's pauses are not the query's
    for customer in ids[:WARM]:
        for code in ("calls", "tokens"):
            usage.meter_usage(scope, customer, code, PERIOD)
    timings: dict[str, list[float]] = {"calls": [], "tokens": []}
    for _ in range(rounds):
        customer = ids[rng.randrange(len(ids))]
        for code, spent in timings.items():
            t0 = time.perf_counter()
            usage.meter_usage(scope, customer, code, PERIOD)
            spent.append(time.perf_counter() - t0)
    figures = ", ".join(f"{code} {_p50_p99(v)}" for code, v in timings.items())
    print(
        f"{name}: {n_events:,} events, {n_rollups:,} rollup rows, {len(ids):,} customers"
        f"{seeded}; one meter's current-period usage of one customer: {figures}"
    )
    _subscribe(sessions, scope, clock, ids)
    service, http = _customer_usage(url, sessions, scope, clock, ids, rounds=rounds)
    print(
        f"  a customer's usage report (both meters priced, as GET /v1/customers/{{id}}/usage "
        f"answers it): service {_p50_p99(service)}; over HTTP {_p50_p99(http)}"
    )
    renewed = _renewed(sessions, scope, ids, rounds)
    print(f"  the same report after a renewal nothing wrote: service {_p50_p99(renewed)}")
    sessions.kw["bind"].dispose()


def _renewed(sessions: Any, scope: TenantScope, ids: list[str], rounds: int) -> list[float]:
    """`UsageService.customer_usage` ten days into the next period, the subscriptions still
    stored with the last one: each read replays the timeline to find the period that holds
    now (`subscription_state.state_at`)."""
    usage = UsageService(sessions, FixedClock(RENEWAL + timedelta(days=10)))
    (report,) = usage.customer_usage(scope, ids[0])
    assert report.period.start_at == RENEWAL, report.period
    return _reports(usage, scope, ids, rounds, random.Random(7))


def _reports(
    usage: UsageService, scope: TenantScope, ids: list[str], rounds: int, rng: random.Random
) -> list[float]:
    """Time `rounds` reports of random customers, after `WARM` reads."""
    for customer in ids[:WARM]:
        usage.customer_usage(scope, customer)
    timings = []
    for _ in range(rounds):
        customer = ids[rng.randrange(len(ids))]
        t0 = time.perf_counter()
        usage.customer_usage(scope, customer)
        timings.append(time.perf_counter() - t0)
    return timings


def _p50_p99(timings: list[float]) -> str:
    return f"p50 {_pct(timings, 50) * 1000:.2f} ms p99 {_pct(timings, 99) * 1000:.2f} ms"


def _customer_usage(
    url: str, sessions: Any, scope: TenantScope, clock: FixedClock, ids: list[str], *, rounds: int
) -> tuple[list[float], list[float]]:
    """Time `UsageService.customer_usage` in process, then the endpoint through a server (one
    uvicorn worker, as `benchmarks.ingest_http` runs it), after checking both against
    `meter_usage` for one customer."""
    from benchmarks.ingest_http import _server

    usage = UsageService(sessions, clock)
    (report,) = usage.customer_usage(scope, ids[0])
    expected = {
        code: usage.meter_usage(scope, ids[0], code, report.period).total.value
        for code in ("calls", "tokens")
    }
    assert {m.meter_code: m.quantity for m in report.meters} == expected
    rng = random.Random(5)
    service = _reports(usage, scope, ids, rounds, rng)
    key = TenancyService(sessions, clock).create_api_key(
        scope.tenant_id, Mode.LIVE, Role.READ_ONLY, actor="bench"
    )
    http = []
    with (
        _server(url, "thread") as base,
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key.secret}"}) as client,
    ):
        (sub,) = client.get(f"/v1/customers/{ids[0]}/usage").json()["subscriptions"]
        got = {m["meter"]: Decimal(m["quantity"]) for m in sub["meters"]}
        assert got == expected, (got, expected)
        for _ in range(WARM):
            client.get(f"/v1/customers/{ids[0]}/usage")
        for _ in range(rounds):
            customer = ids[rng.randrange(len(ids))]
            t0 = time.perf_counter()
            response = client.get(f"/v1/customers/{customer}/usage")
            http.append(time.perf_counter() - t0)
            assert response.status_code == 200, response.text
    return service, http


def main(total: int, customers: int, which: str, keep: str | None) -> None:
    """`keep` names a SQLite file and a PostgreSQL schema that are kept (and reused) instead
    of thrown away, so one seeding serves several measurements."""
    if which in ("sqlite", "both"):
        if keep:
            bench_usage("SQLite", f"sqlite:///{keep}.db", total, customers)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                bench_usage("SQLite", f"sqlite:///{tmp}/usage.db", total, customers)
    if which in ("postgresql", "both"):
        with postgres_schema(keep.rsplit("/", 1)[-1] if keep else None) as url:
            if url is not None:
                bench_usage("PostgreSQL", url, total, customers)


if __name__ == "__main__":
    assert sqlite3.sqlite_version_info >= (3, 35)
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 1_000,
        sys.argv[3] if len(sys.argv) > 3 else "both",
        sys.argv[4] if len(sys.argv) > 4 else None,
    )
