"""A redefinition reads the meter's history before it takes the meter's lock
(`services.metering.rebuild`), both engines: events stored and held events released while it
reads are counted once, under the new definition, and its rows are those of a rebuild under
the lock."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from ratecard.adapters.db import event_reads, rollup_rows, rollup_seal, rollup_store
from ratecard.adapters.db.models import MeterRow
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.services.metering import meters, rebuild
from ratecard.services.metering.lifecycle import release_held
from ratecard.services.metering.meters import Definition, rebuild_rollups
from ratecard.services.metering.policy import Unknown, load_policy, save_policy
from tests.e2e.test_meter_lock_busy import blocked_by
from tests.integration.factories import customer, uow
from tests.integration.metering_setup import PERIOD_START, Metering, event, setup

MAX_BY_REGION = Definition("max", "tokens", {}, ("region",))


CUSTOMERS = ("acme", "beta", "gamma")


def _tokens(
    tag: str, n: int, rng: random.Random, who: str | None = None, base: datetime = PERIOD_START
) -> list[dict]:
    return [
        event(
            f"{tag}-{i}",
            meter="tokens",
            at=base + timedelta(hours=rng.randrange(24 * 15), minutes=rng.randrange(60)),
            customer=who or rng.choice(CUSTOMERS),
            tokens=str(rng.randrange(1, 10_000)),
            model=rng.choice("ab"),
            region=rng.choice("xy"),
        )
        for i in range(n)
    ]


def _rows(m: Metering) -> set[tuple[str, ...]]:
    with m.sessions() as session:
        rows = session.execute(
            text(
                "SELECT * FROM usage_rollups WHERE tenant_id = :t AND meter_code = 'tokens' "
                "UNION ALL SELECT * FROM usage_rollups_daily WHERE tenant_id = :t "
                "AND meter_code = 'tokens'"
            ),
            {"t": m.scope.tenant_id},
        )
        return {tuple(str(v) for v in row) for row in rows}


def _held_setup(sessions) -> Metering:
    with sessions() as session:  # days with daily rows, whatever ran before (it never moves back)
        rollup_seal.seal_rollups(session, PERIOD_START + timedelta(days=7))
        session.commit()
    m = setup(sessions, "Online")
    with uow(m.sessions, m.scope, m.clock) as work:
        policy = load_policy(work.session, m.scope)
        save_policy(work.session, m.scope, replace(policy, unknown_customer=Unknown.HOLD))
        for name in CUSTOMERS[1:]:
            work.customers.add(customer(name, m.clock.now()))
        work.commit()
    return m


def _prepare_tokens(work: UnitOfWork) -> tuple[MeterRow, rebuild.Prepared]:
    row = work.meters.get_by_code("tokens")
    prepared = rebuild.prepare(work, row, MAX_BY_REGION)
    assert prepared is not None
    return row, prepared


def _rebuilt_under_the_lock(m: Metering) -> set[tuple[str, ...]]:
    with uow(m.sessions, m.scope, m.clock) as work:
        rebuild_rollups(work.session, m.scope, work.meters.get_by_code("tokens"))
        work.commit()
    return _rows(m)


def test_what_arrives_while_the_history_is_read_is_counted_once(sessions, monkeypatch):
    monkeypatch.setattr(meters, "_FLUSH_EVERY", 3)  # the reading spills many chunks
    m = _held_setup(sessions)
    rng = random.Random(3)
    assert set(m.ingest(*_tokens("a", 120, rng))) == {"accepted"}
    assert set(m.ingest(*_tokens("h", 5, rng, who="newco"))) == {"held"}
    with uow(m.sessions, m.scope, m.clock) as work:
        row = work.meters.get_by_code("tokens")
        prepared = rebuild.prepare(work, row, MAX_BY_REGION)
        assert prepared is not None and prepared.chunks > 1 and len(prepared.held) == 5
        # No lock is held now: ingestion goes on (on SQLite it would wait for the write
        # lock; on PostgreSQL it would be refused after a second), a held customer appears.
        assert set(m.ingest(*_tokens("b", 40, rng))) == {"accepted"}
        with uow(m.sessions, m.scope, m.clock) as other:
            other.customers.add(customer("newco", m.clock.now()))
            other.session.flush()
            assert release_held(other) == 5
            other.commit()
        locked = work.meters.get_for_update(row.id)
        assert meters.redefine(work, locked, MAX_BY_REGION, prepared=prepared) > 0
        work.commit()
    online = _rows(m)
    with m.sessions() as session:
        newco = session.scalar(text("SELECT id FROM customers WHERE external_id = 'newco'"))
    assert any(row[2] == newco for row in online)  # the released events, counted once
    assert online == _rebuilt_under_the_lock(m)  # the same rows as read whole under the lock


def test_a_redefinition_that_came_between_is_rebuilt_under_the_lock(sessions):
    m = _held_setup(sessions)
    assert set(m.ingest(*_tokens("c", 60, random.Random(4)))) == {"accepted"}
    with uow(m.sessions, m.scope, m.clock) as work:
        row, prepared = _prepare_tokens(work)
        with uow(m.sessions, m.scope, m.clock) as other:  # another PATCH, done first
            meters.redefine_meter(other, "tokens", group_by=[])
            other.commit()
        locked = work.meters.get_for_update(row.id)
        assert not prepared.fits(Definition.of(locked), MAX_BY_REGION)
        meters.redefine(work, locked, MAX_BY_REGION, prepared=prepared)
        work.commit()
        assert Definition.of(work.meters.get_by_code("tokens")) == MAX_BY_REGION
    assert _rows(m) == _rebuilt_under_the_lock(m)


@pytest.mark.parametrize(
    ("definition", "prepared"),
    [
        (Definition("max", "tokens", {}, ("model",)), False),  # the same partials: no rebuild
        (Definition("unique_count", "tokens", {}, ()), False),  # read from raw events
        (MAX_BY_REGION, True),
    ],
)
def test_only_a_rebuild_with_rollups_is_prepared(sessions, definition, prepared):
    m = setup(sessions, "Prepared")
    with uow(m.sessions, m.scope, m.clock) as work:
        got = rebuild.prepare(work, work.meters.get_by_code("tokens"), definition)
        assert (got is not None) == prepared
        if got is not None:
            got.close()


def test_ingestion_goes_on_while_the_history_is_read(sessions, monkeypatch):
    """Events stored in the middle of the reading (SQLite: while its read transaction is
    open; PostgreSQL: before its cursor reads) are counted once, by the swap."""
    m = _held_setup(sessions)
    rng = random.Random(5)
    assert set(m.ingest(*_tokens("d", 80, rng))) == {"accepted"}
    real = event_reads.meter_events
    during: list[list[str]] = []

    def reading(*args, **kwargs):
        during.append(m.ingest(*_tokens("e", 30, rng)))  # would wait on a held lock
        yield from real(*args, **kwargs)

    monkeypatch.setattr(event_reads, "meter_events", reading)
    with uow(m.sessions, m.scope, m.clock) as work:
        row = work.meters.get_by_code("tokens")
        prepared = rebuild.prepare(work, row, MAX_BY_REGION)
        assert prepared is not None and set(during[0]) == {"accepted"}
        monkeypatch.setattr(event_reads, "meter_events", real)
        locked = work.meters.get_for_update(row.id)
        meters.redefine(work, locked, MAX_BY_REGION, prepared=prepared)
        work.commit()
    assert _rows(m) == _rebuilt_under_the_lock(m)


def test_a_day_sealed_while_the_history_is_read_makes_the_swap_rebuild_under_the_lock(
    sessions, monkeypatch
):
    m = _held_setup(sessions)
    assert set(m.ingest(*_tokens("f", 60, random.Random(6)))) == {"accepted"}
    with uow(m.sessions, m.scope, m.clock) as work:
        row, prepared = _prepare_tokens(work)
        real = rollup_store.sealed_before
        asked: list[object] = []

        def moved_once(session):  # the swap's check sees one more day sealed meanwhile
            asked.append(session)
            now = real(session)
            return now + timedelta(days=1) if len(asked) == 1 and now else now

        monkeypatch.setattr(rollup_store, "sealed_before", moved_once)
        locked = work.meters.get_for_update(row.id)
        meters.redefine(work, locked, MAX_BY_REGION, prepared=prepared)
        monkeypatch.setattr(rollup_store, "sealed_before", real)
        assert prepared.spill.closed and len(asked) > 1  # the rebuild read the seal again
        work.commit()
    assert _rows(m) == _rebuilt_under_the_lock(m)


def test_a_release_in_the_middle_of_the_reading_is_counted_once(sessions, monkeypatch):
    """Held events released after the reading listed them as held, before it read the
    counted ones: one snapshot for both reads, so the swap counts them, once."""
    m = _held_setup(sessions)
    rng = random.Random(7)
    assert set(m.ingest(*_tokens("g", 40, rng))) == {"accepted"}
    assert set(m.ingest(*_tokens("k", 4, rng, who="newco"))) == {"held"}
    real = event_reads.meter_events

    def reading(*args, **kwargs):
        with uow(m.sessions, m.scope, m.clock) as other:
            other.customers.add(customer("newco", m.clock.now()))
            other.session.flush()
            assert release_held(other) == 4
            other.commit()
        yield from real(*args, **kwargs)

    monkeypatch.setattr(event_reads, "meter_events", reading)
    with uow(m.sessions, m.scope, m.clock) as work:
        row, prepared = _prepare_tokens(work)
        monkeypatch.setattr(event_reads, "meter_events", real)
        assert len(prepared.held) == 4
        meters.redefine(work, work.meters.get_for_update(row.id), MAX_BY_REGION, prepared=prepared)
        work.commit()
    assert _rows(m) == _rebuilt_under_the_lock(m)


def test_a_day_sealed_while_the_swap_waits_is_in_its_daily_rows(sessions, database):
    """PostgreSQL: a sealing under way when the swap starts is waited for by the swap's drop,
    which then drops its daily rows of the meter too; the swap sees the new seal and rebuilds
    (a check of the seal before the drop lost that day's daily rows)."""
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's write lock serializes a sealing and the swap by itself")
    m = _held_setup(sessions)
    with sessions() as session:
        seal = rollup_store.sealed_before(session)
    assert seal is not None
    m.clock.set(max(m.clock.now(), seal + timedelta(days=8)))  # events around the seal: recent
    base = seal - timedelta(days=7)
    assert set(m.ingest(*_tokens("s", 80, random.Random(9), base=base))) == {"accepted"}
    with uow(m.sessions, m.scope, m.clock) as work:
        row, prepared = _prepare_tokens(work)
        assert prepared.sealed == seal
        sealer = m.sessions()
        rollup_seal.seal_rollups(sealer, seal + timedelta(days=1))  # under way: not committed
        blocker = sealer.execute(text("SELECT pg_backend_pid()")).scalar()
        failed: list[BaseException] = []

        def swap() -> None:
            try:
                meters.redefine(
                    work, work.meters.get_for_update(row.id), MAX_BY_REGION, prepared=prepared
                )
                work.commit()
            except BaseException as exc:
                failed.append(exc)

        swapping = threading.Thread(target=swap)
        swapping.start()
        deadline = time.monotonic() + 30
        while not blocked_by(database.engine, blocker):  # the swap's drop waits for the sealing
            assert swapping.is_alive() and time.monotonic() < deadline, failed
            swapping.join(0.01)
        sealer.commit()
        sealer.close()
        swapping.join(30)
        assert not failed, failed
        assert prepared.spill.closed
    assert _rows(m) == _rebuilt_under_the_lock(m)


def test_a_reading_that_fails_changes_nothing_and_leaves_no_file(sessions, monkeypatch):
    m = _held_setup(sessions)
    assert set(m.ingest(*_tokens("x", 30, random.Random(8)))) == {"accepted"}
    before = _rows(m)
    closed: list[bool] = []
    real_close = rebuild.Prepared.close

    def close(self: rebuild.Prepared) -> None:
        closed.append(True)
        real_close(self)

    def broken(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(rebuild.Prepared, "close", close)
    monkeypatch.setattr(rollup_rows, "new_rows", broken)
    with uow(m.sessions, m.scope, m.clock) as work:
        with pytest.raises(OSError, match="no space"):
            rebuild.prepare(work, work.meters.get_by_code("tokens"), MAX_BY_REGION)
        assert closed == [True]  # its temporary file
        assert Definition.of(work.meters.get_by_code("tokens")) != MAX_BY_REGION
    assert _rows(m) == before


def test_a_rebuild_by_hand_reads_while_ingestion_goes_on(sessions, monkeypatch):
    """``ratecard rollups rebuild`` (`rebuild.rebuild_meter`): the same definition, the same
    three steps; events stored during the reading are counted once."""
    m = _held_setup(sessions)
    rng = random.Random(12)
    assert set(m.ingest(*_tokens("r", 50, rng))) == {"accepted"}
    with uow(m.sessions, m.scope, m.clock) as work:  # the rollups lost, as the CLI's test has it
        rollup_rows.delete_rollups(work.session, m.scope, "tokens", None)
        work.commit()
    real = event_reads.meter_events
    during: list[list[str]] = []

    def reading(*args, **kwargs):
        during.append(m.ingest(*_tokens("s", 20, rng)))
        yield from real(*args, **kwargs)

    monkeypatch.setattr(event_reads, "meter_events", reading)
    with uow(m.sessions, m.scope, m.clock) as work:
        assert rebuild.rebuild_meter(work, work.meters.get_by_code("tokens")) > 0
        work.commit()
    monkeypatch.setattr(event_reads, "meter_events", real)
    assert set(during[0]) == {"accepted"}
    assert _rows(m) == _rebuilt_under_the_lock(m)
