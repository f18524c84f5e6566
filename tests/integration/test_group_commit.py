"""Group commit, WAL checkpoints off the commit path, and readers without the write lock."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest
import sqlalchemy as sa

from ratecard.adapters.db import event_ids
from ratecard.adapters.db.engine import Checkpointer, make_engine, make_session_factory
from ratecard.adapters.db.models import CustomerRow
from ratecard.adapters.db.repositories import key_state
from ratecard.adapters.db.scope import Role, TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.errors import ErrorCode
from ratecard.services.metering.batches import IngestResult
from ratecard.services.metering.group_commit import GroupCommitter, IngestionBusy, writers_for
from ratecard.services.metering.ingestion import IngestionService
from ratecard.services.tenancy import TenancyService, hash_secret
from ratecard.web.problems import error_response
from tests.integration.metering_setup import event, setup


class Gate:
    """Holds the writer inside its first round (a listener runs after the round's commit)
    until the test has queued what the next round should carry."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, _scope: TenantScope, _touched: frozenset[tuple[str, str]]) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30), "the test never released the writer"


def _statuses(future: Future[IngestResult]) -> list[str]:
    return [str(r.status) for r in future.result(30).results]


def _writer_held_in_first_round(sessions):
    """A committer whose writer stores batch ``evt_a`` and waits inside that round (`Gate`):
    what is submitted next goes into the next round."""
    m = setup(sessions)
    gate = Gate()
    m.ingestion.listeners.append(gate)
    committer = GroupCommitter(m.ingestion)
    first = committer.submit(m.scope, "test", m.ingestion.prepare([event("a")]))
    assert gate.entered.wait(30)
    return m, gate, committer, first


def test_waiting_batches_share_one_commit_and_a_repeated_id_counts_once(sessions):
    m, gate, committer, first = _writer_held_in_first_round(sessions)
    try:
        # queued while the writer is busy: both go into the next round, in this order
        second = committer.submit(m.scope, "test", m.ingestion.prepare([event("b"), event("c")]))
        third = committer.submit(m.scope, "test", m.ingestion.prepare([event("c"), event("a")]))
        gate.release.set()
        assert _statuses(first) == ["accepted"]
        assert _statuses(second) == ["accepted", "accepted"]
        assert _statuses(third) == ["duplicate", "duplicate"]  # c: the second batch's; a: stored
        assert committer.rounds == 2
    finally:
        committer.close()
    with sessions() as session:
        stored = event_ids.existing_ids(session, m.scope, ["evt_a", "evt_b", "evt_c", "evt_d"])
    assert stored == {"evt_a", "evt_b", "evt_c"}


class Failing(IngestionService):
    """Fails any transaction that holds the event ``evt_boom``."""

    def _store(self, scope: TenantScope, **round_: Any) -> frozenset[tuple[str, str]]:
        if "evt_boom" in round_["columns"].ids:
            raise RuntimeError("boom")
        return super()._store(scope, **round_)


def test_a_failing_batch_fails_alone_and_its_round_mates_are_stored(sessions):
    m = setup(sessions)
    ingestion = Failing(m.sessions, m.clock)
    gate = Gate()
    ingestion.listeners.append(gate)
    committer = GroupCommitter(ingestion)
    try:
        first = committer.submit(m.scope, "test", ingestion.prepare([event(1)]))
        assert gate.entered.wait(30)
        bad = committer.submit(m.scope, "test", ingestion.prepare([event(2), event("boom")]))
        good = committer.submit(m.scope, "test", ingestion.prepare([event(3), event(2)]))
        gate.release.set()
        assert _statuses(first) == ["accepted"]
        with pytest.raises(RuntimeError, match="boom"):
            bad.result(30)
        # stored alone: evt_2 is new to the store (the failed batch wrote nothing)
        assert _statuses(good) == ["accepted", "accepted"]
    finally:
        committer.close()


def test_close_stores_what_is_queued_and_refuses_more(sessions):
    m = setup(sessions)
    committer = GroupCommitter(m.ingestion)
    futures = [committer.submit(m.scope, "test", m.ingestion.prepare([event(i)])) for i in range(5)]
    committer.close()
    assert [_statuses(f) for f in futures] == [["accepted"]] * 5
    with pytest.raises(RuntimeError, match="closed"):
        committer.submit(m.scope, "test", m.ingestion.prepare([event(9)]))


def _autocheckpoint(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def test_the_checkpointer_takes_wal_checkpoints_off_the_commit_path(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (v TEXT)")
        assert _autocheckpoint(engine) == 10_000  # commits checkpoint themselves
        checkpointer = Checkpointer(engine)
        checkpointer.start()
        try:
            assert _autocheckpoint(engine) == 0  # new connections leave it to the thread
            with engine.begin() as connection:
                connection.exec_driver_sql("INSERT INTO t VALUES ('x')")
            busy, frames, copied = checkpointer.checkpoint()
            assert busy == 0 and frames == copied  # everything copied back
        finally:
            checkpointer.stop()
        assert _autocheckpoint(engine) == 10_000
        assert checkpointer.runs >= 2  # ours, and the last one at stop
    finally:
        engine.dispose()


def test_the_checkpointer_has_nothing_to_do_on_postgresql_or_in_memory(database):
    engines = [make_engine("sqlite://")]
    if database.kind == "postgres":
        engines.append(database.engine)
    for engine in engines:
        checkpointer = Checkpointer(engine)
        checkpointer.start()
        checkpointer.stop()
        assert checkpointer.runs == 0


def test_readers_do_not_wait_for_the_write_lock(sessions, database):
    """A read-only unit of work reads while another transaction holds SQLite's write lock (a
    writing one would wait for it); it cannot commit, nor flush a change."""
    m = setup(sessions)
    holder = database.engine.connect()
    try:
        holder.begin()  # BEGIN IMMEDIATE on SQLite: the write lock, held
        holder.exec_driver_sql("SELECT 1")
        with UnitOfWork(
            make_session_factory(database.engine), m.scope, actor="t", clock=m.clock, read_only=True
        ) as reader:
            found = reader.session.scalar(
                sa.select(CustomerRow.external_id).where(CustomerRow.id == m.customer_id)
            )
            assert found == "acme"
            with pytest.raises(AssertionError, match="does not commit"):
                reader.commit()
    finally:
        holder.rollback()
        holder.close()
    # Nor does it flush a change (on PostgreSQL, without a transaction, it would be kept).
    with UnitOfWork(
        make_session_factory(database.engine), m.scope, actor="t", clock=m.clock, read_only=True
    ) as reader:
        reader.customers.get(m.customer_id).name = "Changed"
        with pytest.raises(AssertionError, match="writes nothing"):
            reader.session.flush()
    with UnitOfWork(
        make_session_factory(database.engine), m.scope, actor="t", clock=m.clock
    ) as uow:
        assert uow.customers.get(m.customer_id).name != "Changed"


def test_a_reader_on_postgresql_holds_no_transaction_open(sessions, database):
    """A read-only unit of work on PostgreSQL runs each statement on its own (autocommit):
    between its statements its connection is idle, not idle in a transaction, so it saves the
    round trips of BEGIN and COMMIT. A writing unit of work still opens one."""
    if database.kind != "postgres":
        pytest.skip("PostgreSQL's transactions")
    m = setup(sessions)

    def state(uow: UnitOfWork) -> str:
        pid = uow.session.scalar(sa.text("SELECT pg_backend_pid()"))
        with database.engine.connect() as other:
            return str(
                other.scalar(
                    sa.text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
                )
            )

    factory = make_session_factory(database.engine)
    with UnitOfWork(factory, m.scope, actor="t", clock=m.clock, read_only=True) as reader:
        assert state(reader) == "idle"
        found = reader.session.scalar(
            sa.select(CustomerRow.external_id).where(CustomerRow.id == m.customer_id)
        )
        assert found == "acme"
    with UnitOfWork(factory, m.scope, actor="t", clock=m.clock) as writer:
        assert state(writer) == "idle in transaction"


def test_an_api_key_is_read_in_one_statement_as_it_is_stored(sessions, database):
    """`key_state`, what every request's authentication reads: the key's tenant, mode, role
    and revocation as stored; None for a secret that no key has. A revocation shows at once."""
    m = setup(sessions)
    tenancy = TenancyService(sessions, m.clock)
    key = tenancy.create_api_key(m.scope.tenant_id, m.scope.mode, Role.INGEST, actor="t")
    found = key_state(database.engine, hash_secret(key.secret))
    assert found is not None
    assert (found.id, found.tenant_id, found.mode, found.role) == (
        key.key_id,
        m.scope.tenant_id,
        m.scope.mode,
        Role.INGEST,
    )
    assert found.revoked_at is None
    assert key_state(database.engine, hash_secret(key.secret + "x")) is None
    tenancy.revoke_api_key(m.scope.tenant_id, key.key_id, actor="t")
    revoked = key_state(database.engine, hash_secret(key.secret))
    assert revoked is not None and revoked.revoked_at == m.clock.now()
    assert tenancy.authenticate(key.secret) is None


def test_a_full_queue_refuses_a_batch_until_the_writer_catches_up(sessions):
    """Back-pressure: beyond `max_queued` waiting events a batch is refused whole (the API
    answers 503 with Retry-After), and taken again once the writer has caught up."""
    m = setup(sessions)
    gate = Gate()
    m.ingestion.listeners.append(gate)
    committer = GroupCommitter(m.ingestion, max_queued=3)
    try:
        first = committer.submit(m.scope, "test", m.ingestion.prepare([event(1)]))
        assert gate.entered.wait(30)  # the writer holds round 1; nothing is queued
        waiting = committer.submit(m.scope, "test", m.ingestion.prepare([event(2), event(3)]))
        with pytest.raises(IngestionBusy) as refused:
            committer.submit(m.scope, "test", m.ingestion.prepare([event(4), event(5)]))
        assert refused.value.code is ErrorCode.INGESTION_BUSY
        assert "2 events waiting" in refused.value.message
        gate.release.set()
        assert _statuses(first) == ["accepted"]
        assert _statuses(waiting) == ["accepted", "accepted"]
        again = committer.submit(m.scope, "test", m.ingestion.prepare([event(4), event(5)]))
        assert _statuses(again) == ["accepted", "accepted"]
    finally:
        committer.close()
    with sessions() as session:
        assert event_ids.existing_ids(session, m.scope, [f"evt_{i}" for i in range(1, 6)]) == {
            f"evt_{i}" for i in range(1, 6)
        }


def test_a_refused_batch_is_a_503_problem_with_retry_after():
    response = error_response(IngestionBusy(200_000), request_id="req_1")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.media_type == "application/problem+json"
    assert b'"code":"ingestion_busy"' in bytes(response.body).replace(b" ", b"")


class Broken(IngestionService):
    """A store that answers nothing on its first call (a bug), then works."""

    calls = 0

    def store_valid(self, scope, batches, *, actor="ingest"):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            return []
        return super().store_valid(scope, batches, actor=actor)


def test_a_bug_in_a_round_fails_its_batches_and_the_writer_goes_on(sessions):
    m = setup(sessions)
    ingestion = Broken(m.sessions, m.clock)
    committer = GroupCommitter(ingestion)
    try:
        broken = committer.submit(m.scope, "test", ingestion.prepare([event(1)]))
        with pytest.raises(ValueError):
            broken.result(30)
        after = committer.submit(m.scope, "test", ingestion.prepare([event(2)]))
        assert _statuses(after) == ["accepted"]
    finally:
        committer.close()


def test_writer_threads_per_engine_and_process():
    """SQLite has one write lock; PostgreSQL overlaps two writers in the API process, and
    takes one in a writer process of its own (two there halve the rounds)."""
    assert writers_for("sqlite") == writers_for("sqlite", own_process=True) == 1
    assert writers_for("postgresql") == 2
    assert writers_for("postgresql", own_process=True) == 1


class Sync:
    """A `durable` call that waits for the test, counting its calls."""

    def __init__(self, *, fails: bool = False) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.fails = fails

    def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(30), "the test never released the sync"
        if self.fails:
            raise OSError("EIO")


def test_with_durable_a_batch_is_answered_after_the_sync_that_follows_its_commit(sessions):
    m = setup(sessions)
    sync = Sync()
    committed = threading.Semaphore(0)
    m.ingestion.listeners.append(lambda _scope, _touched: committed.release())
    committer = GroupCommitter(m.ingestion, durable=sync)
    try:
        first = committer.submit(m.scope, "test", m.ingestion.prepare([event("a")]))
        assert sync.entered.wait(30)
        with sessions() as session:  # committed, and not answered before it is on disk
            assert event_ids.existing_ids(session, m.scope, ["evt_a"]) == {"evt_a"}
        assert not first.done()
        # the writer is not held by the sync: the next round commits meanwhile
        second = committer.submit(m.scope, "test", m.ingestion.prepare([event("b"), event("a")]))
        assert committed.acquire(timeout=30) and committed.acquire(timeout=30)
        assert not second.done()
        sync.release.set()
        assert _statuses(first) == ["accepted"]
        assert _statuses(second) == ["accepted", "duplicate"]
        assert sync.calls == 2  # the second round's answer waited for a sync after its commit
    finally:
        committer.close()


def test_with_durable_a_failed_sync_fails_its_batches_and_stores_nothing_after_it(sessions):
    """After a failed fsync the kernel may have dropped pages it will not report again: the
    batches waiting for it fail, and so does every later one, unstored."""
    m = setup(sessions)
    sync = Sync(fails=True)
    sync.release.set()
    told: list[bool] = []  # whether the failed batch was answered when `on_unsafe` ran
    committer = GroupCommitter(
        m.ingestion, durable=sync, on_unsafe=lambda: told.append(failed.done())
    )
    try:
        failed = committer.submit(m.scope, "test", m.ingestion.prepare([event("a")]))
        with pytest.raises(OSError, match="EIO"):
            failed.result(30)
        later = committer.submit(m.scope, "test", m.ingestion.prepare([event("b")]))
        with pytest.raises(RuntimeError, match="could not be synced to disk: EIO"):
            later.result(30)
        assert sync.calls == 1
        assert told == [True]  # once, after the batches waiting for the sync were failed
    finally:
        committer.close()
    with sessions() as session:
        assert event_ids.existing_ids(session, m.scope, ["evt_a", "evt_b"]) == {"evt_a"}


def test_a_batch_whose_caller_went_away_is_stored_and_its_round_mates_answered(sessions):
    """`asyncio.wrap_future` cancels the future when the request is cancelled: a batch once
    taken cannot be, and the batches after it in its round are answered."""
    m, gate, committer, first = _writer_held_in_first_round(sessions)
    try:
        second = committer.submit(m.scope, "test", m.ingestion.prepare([event("b")]))
        third = committer.submit(m.scope, "test", m.ingestion.prepare([event("c")]))
        assert not second.cancel()
        gate.release.set()
        assert _statuses(first) == ["accepted"]
        assert _statuses(second) == ["accepted"]
        assert _statuses(third) == ["accepted"]
    finally:
        committer.close()
