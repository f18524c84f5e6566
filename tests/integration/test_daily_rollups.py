"""Daily rollups: a sealed day is read from one row a group, and stays exact through late events,
rebuilds and concurrent rounds (`rollup_seal.seal_rollups`, migration 0016).

The test databases are shared by the session, and so is the seal: each test here works on days
of its own, years after any other test's, and states what it expects of the seal relative to
where it found it.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.db import rollup_rows, rollup_seal, rollup_store, usage_reads
from ratecard.adapters.db.models import DailyRollupRow, MeterRow, RollupSealRow
from ratecard.adapters.db.scope import TenantScope
from ratecard.core.periods import Period
from ratecard.core.rollups import Partial
from ratecard.services.metering import meters
from ratecard.services.metering.group_commit import GroupCommitter
from ratecard.services.metering.meters import rebuild_rollups
from ratecard.services.metering.usage_reader import UsageReader
from tests.integration.factories import customer, uow
from tests.integration.metering_setup import Metering, counted, event, raw_usage, setup

DAY = timedelta(days=1)
VALUES = ["-0.5", "1", "2.25", "1e-3", "7", "0.1", "12345678901234567890.123456789"]
# Decomposable meters, each read from rollups: count, sum (grouped), max, min, latest, average,
# and a cumulative sum (its reads have no lower bound).
READ = ("api_calls", "tokens", "payments", "peak", "low", "last", "mean", "total")


def _seal(sessions: sessionmaker[Session], before: datetime, **kw: bool) -> datetime:
    with sessions() as session:
        sealed = rollup_seal.seal_rollups(session, before, **kw)
        session.commit()
    return sealed


def _sealed(sessions: sessionmaker[Session]) -> datetime | None:
    with sessions() as session:
        return session.scalar(select(RollupSealRow.sealed_before))


def _metering(sessions: sessionmaker[Session], name: str, now: datetime) -> Metering:
    m = setup(sessions, name)
    m.clock.set(now)  # the events are recent for the ingestion policy
    with uow(sessions, m.scope, m.clock) as work:
        for code, aggregation, reset in (
            ("low", "min", "monthly"),
            ("last", "latest", "monthly"),
            ("mean", "average", "monthly"),
            ("total", "sum", "never"),
        ):
            work.meters.add(
                MeterRow(
                    code=code,
                    name=code,
                    aggregation=aggregation,
                    value_field="v",
                    group_by=["region"],
                    reset=reset,
                    created_at=m.clock.now(),
                )
            )
        work.commit()
    return m


def _events(rng: random.Random, tag: str, base: datetime, days: int, n: int) -> list[dict]:
    out = []
    for i in range(n):
        at = base + timedelta(seconds=rng.randrange(days * 86400))
        meter = READ[i % len(READ)]
        value = rng.choice(VALUES)
        props = {"v": value, "tokens": value, "amount": value, "gb": value}
        props |= {"model": rng.choice("ab"), "region": rng.choice("xy")}
        out.append(event(f"{tag}-{i}", meter=meter, at=at, **props))
    # Two events at one instant: the later arrival is the latest.
    out.append(event(f"{tag}-tie1", meter="last", at=base + DAY, v="3", region="x"))
    out.append(event(f"{tag}-tie2", meter="last", at=base + DAY, v="4", region="x"))
    return out


def _ingest(m: Metering, events: list[dict]) -> None:
    assert m.ingestion.ingest(m.scope, events).count("accepted") == len(events)


def _daily_rows(sessions: sessionmaker[Session], scope: TenantScope) -> dict[tuple, Partial]:
    d = DailyRollupRow
    with sessions() as session:
        rows = session.scalars(select(d).where(d.tenant_id == scope.tenant_id)).all()
        return {
            (r.customer_id, r.meter_code, r.day_at, r.group_key): Partial(
                r.event_count,
                r.value_count,
                r.value_sum,
                r.value_min,
                r.value_max,
                r.latest_value,
                r.latest_at,
                r.latest_seq,
            )
            for r in rows
        }


def _hours_by_day(m: Metering, before: datetime) -> dict[tuple, Partial]:
    """The hourly rollups of the days before `before`, merged per day: what the daily rows
    must hold."""
    out: dict[tuple, Partial] = {}
    with m.sessions() as session:
        for code in READ:
            for hour_at, key, p in rollup_rows.read_rollups(
                session, m.scope, m.customer_id, code, from_hour=None, to_hour=before
            ):
                at = (
                    m.customer_id,
                    code,
                    rollup_store.day_of(hour_at),
                    rollup_store.group_text(key),
                )
                out[at] = p if at not in out else out[at].merge(p)
    return out


def _check(m: Metering, base: datetime, sealed: datetime) -> None:
    """Daily rows hold exactly the merged hours of each sealed day (and no other day), and
    usage over spans that cut days anywhere reads as the raw events aggregate, a meter at a
    time and every meter in one statement (as a subscription's report reads them)."""
    daily = _daily_rows(m.sessions, m.scope)
    assert daily == _hours_by_day(m, sealed)
    assert all(day < sealed for _, _, day, _ in daily)
    spans = [
        (base, base + 6 * DAY),
        (base + timedelta(hours=1, minutes=30), base + 5 * DAY + timedelta(hours=7)),
        (base + 2 * DAY + timedelta(hours=5), base + 4 * DAY),
        (base + 3 * DAY - timedelta(microseconds=1), base + 3 * DAY + timedelta(hours=2)),
        (base + DAY, base + 2 * DAY),
        (base - DAY, base + 9 * DAY),
        (base + 2 * DAY + timedelta(minutes=10), base + 2 * DAY + timedelta(minutes=50)),
    ]
    codes = [*READ, "users"]  # a unique count is read from raw events, apart
    for start, end in spans:
        period = Period(start, end)
        expected = {code: raw_usage(m, code, period) for code in codes}
        for code in READ:
            got = m.usage.meter_usage(m.scope, m.customer_id, code, period)
            assert got == expected[code], (code, start, end, sealed)
        with m.sessions() as session, counted(usage_reads, "read_usage") as calls:
            reader = UsageReader(session, m.scope)
            reader.load_specs(codes)
            reader.prefetch(m.customer_id, [(code, period) for code in codes])
            got_all = {code: reader.result(m.customer_id, code, period) for code in codes}
        assert got_all == expected, (start, end, sealed)
        assert calls == [len(READ)], "every decomposable meter in one statement"


def test_sealed_days_read_exactly_through_late_events_and_rebuilds(sessions, monkeypatch):
    base = datetime(2031, 3, 1, tzinfo=UTC)
    before = _sealed(sessions)
    assert before is None or before <= base, "no other test seals this far"
    m = _metering(sessions, "Daily", base + 10 * DAY)
    rng = random.Random(5)
    _ingest(m, _events(rng, "a", base, days=6, n=400))
    assert _seal(sessions, base + 3 * DAY) == base + 3 * DAY
    _check(m, base, base + 3 * DAY)
    # Late events: into sealed days (their days' rows follow) and into open ones.
    _ingest(m, _events(rng, "late", base, days=6, n=120))
    _check(m, base, base + 3 * DAY)
    # A day at a time: up to the next day that has rollups, then none past `before`.
    for day in (4, 5, 6):
        assert _seal(sessions, base + 6 * DAY, one_day=True) == base + day * DAY
        _check(m, base, base + day * DAY)
    assert _seal(sessions, base + 6 * DAY, one_day=True) == base + 6 * DAY
    assert _seal(sessions, base + 2 * DAY) == base + 6 * DAY  # a seal never moves back
    # A rebuild from an instant inside a sealed day rebuilds that whole day.
    with uow(sessions, m.scope, m.clock) as work:
        meter = work.meters.get_by_code("tokens")
        rebuild_rollups(work.session, m.scope, meter, since=base + 2 * DAY + timedelta(hours=5))
        work.commit()
    _check(m, base, base + 6 * DAY)
    # Sealing past days that hold nothing moves the seal alone.
    assert _seal(sessions, base + 9 * DAY) == base + 9 * DAY
    _check(m, base, base + 9 * DAY)
    # A whole rebuild, its rows written a few at a time (each customer's in one write, so
    # its days' rows are whole): the same hours and days again.
    monkeypatch.setattr(meters, "_FLUSH_EVERY", 2)
    with uow(sessions, m.scope, m.clock) as work:
        written = rebuild_rollups(work.session, m.scope, work.meters.get_by_code("tokens"))
        work.commit()
    assert written > 2
    _check(m, base, base + 9 * DAY)


def test_the_writer_seals_each_day_once_it_is_over(sessions):
    base = datetime(2033, 1, 2, tzinfo=UTC)
    m = _metering(
        sessions, "Writer", base + 2 * DAY + rollup_store.SEAL_LAG - timedelta(microseconds=1)
    )
    _ingest(m, _events(random.Random(9), "w", base, days=2, n=80))
    committer = GroupCommitter(m.ingestion)
    try:
        committer.submit(m.scope, "ingest", m.ingestion.prepare([event("w-x", at=base)])).result()
    finally:
        committer.close()
    # The round sealed up to a day with rollups (a store sealed behind catches up a day a
    # round); calling on, it reaches the last day that ended SEAL_LAG ago, and stops there.
    for _ in range(10_000):
        sealed = m.ingestion.seal_due()
        if sealed >= base + DAY:
            break
    assert sealed == base + DAY  # the second day ended less than SEAL_LAG ago
    m.clock.advance(timedelta(microseconds=1))
    assert m.ingestion.seal_due() == base + 2 * DAY
    assert m.ingestion.seal_due() == base + 2 * DAY
    _check(m, base, base + 2 * DAY)


def test_sealing_waits_for_a_round_in_flight_and_counts_it(database, sessions):
    if database.kind != "postgres":
        pytest.skip("SQLite's write lock serializes a sealing and a round by itself")
    base = datetime(2035, 6, 1, tzinfo=UTC)
    m = _metering(sessions, "Locks", base + 10 * DAY)
    _ingest(m, [event("l-1", meter="tokens", at=base + timedelta(hours=3), tokens="2", model="a")])
    hour = base + timedelta(hours=5)
    late = Partial(1, 1, Decimal(5), Decimal(5), Decimal(5), Decimal(5), hour, 99)
    done: list[datetime] = []
    sealer = threading.Thread(target=lambda: done.append(_seal(sessions, base + DAY)))
    with sessions() as round_, sessions() as watcher:
        rollup_store.add_rollups(round_, m.scope, [(m.customer_id, "tokens", hour, ("a",), late)])
        sealer.start()
        waiting = 0
        while not waiting and not done:  # until the sealing queues behind the round's lock
            waiting = watcher.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'LOCK TABLE usage_rollups%'"
                )
            )
            watcher.rollback()
        assert waiting == 1
        assert not done
        round_.commit()
    sealer.join()
    assert done == [base + DAY]
    (row,) = _daily_rows(sessions, m.scope).values()
    assert (row.event_count, row.value_sum, row.latest_seq) == (2, Decimal(7), 99)


def _rollup_rows(sessions: sessionmaker[Session], scope: TenantScope) -> dict[str, set]:
    """Every hourly and daily rollup row of the scope, as stored."""
    out = {}
    with sessions() as session:
        for table in ("usage_rollups", "usage_rollups_daily"):
            rows = session.execute(
                text(f"SELECT * FROM {table} WHERE tenant_id = :t"), {"t": scope.tenant_id}
            )
            out[table] = {tuple(str(v) for v in row) for row in rows}
    return out


def test_a_rebuild_writes_the_rows_ingestion_wrote(sessions, monkeypatch):
    """Rebuilt from raw events, a few customers' rows a write (`meters._FLUSH_EVERY`), the
    hourly and daily rows are the ones ingestion merged round after round."""
    base = datetime(2034, 2, 1, tzinfo=UTC)
    m = _metering(sessions, "Rebuilt", base + 4 * DAY)
    with uow(sessions, m.scope, m.clock) as work:
        for name in ("beta", "gamma"):
            work.customers.add(customer(name, m.clock.now()))
        work.commit()
    rng = random.Random(11)
    for tag, who in (("r", "acme"), ("s", "beta"), ("t", "gamma")):
        batch = _events(rng, tag, base, days=4, n=90)
        for raw in batch:
            raw["customer"] = who
        _ingest(m, batch[:60])
        if who == "acme":
            assert _seal(sessions, base + 2 * DAY) >= base + 2 * DAY
        _ingest(m, batch[60:])  # after the seal: merged into the sealed days' rows too
    ingested = _rollup_rows(sessions, m.scope)
    assert ingested["usage_rollups_daily"], "the sealed days have daily rows"
    monkeypatch.setattr(meters, "_FLUSH_EVERY", 1)
    with uow(sessions, m.scope, m.clock) as work:
        for code in READ:
            rebuild_rollups(work.session, m.scope, work.meters.get_by_code(code))
        work.commit()
    assert _rollup_rows(sessions, m.scope) == ingested
