"""The group commit in a writer process of its own (`RATECARD_INGEST_WRITER=process`)."""

from __future__ import annotations

import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db import event_ids
from ratecard.config import Settings
from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.services.metering.batches import IngestResult, Prepared
from ratecard.services.metering.group_commit import GroupCommitter, IngestionBusy
from ratecard.services.metering.writer_process import (
    SYNC_FAILED,
    DiskFailed,
    ProcessCommitter,
    WriterGone,
    _Failure,
    stop_writer,
)
from tests.e2e.live import gone, wait_until
from tests.integration.metering_setup import Metering, event, setup

Touched = list[frozenset[tuple[str, str]]]


def _url(sessions: sessionmaker[Session]) -> str:
    return str(sessions.kw["bind"].url.render_as_string(hide_password=False))


@pytest.fixture
def metering(sessions: sessionmaker[Session]) -> Metering:
    return setup(sessions)


@pytest.fixture
def heard() -> Touched:
    return []


@pytest.fixture
def committer(metering: Metering, heard: Touched) -> Iterator[ProcessCommitter]:
    made = ProcessCommitter(
        _url(metering.sessions),
        metering.clock,
        listeners=[lambda _scope, touched: heard.append(touched)],
    )
    try:
        yield made
    finally:
        made.close()


def _statuses(future: Future[IngestResult]) -> list[str]:
    return [str(r.status) for r in future.result(60).results]


def _stopped_child(committer: ProcessCommitter) -> int:
    """Start the child and stop it (SIGSTOP): what is sent then waits, unanswered."""
    committer.start()
    pid = committer.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_batches_are_stored_once_with_a_result_each_and_the_listeners_hear_of_them(
    metering: Metering, committer: ProcessCommitter, heard: Touched
) -> None:
    m = metering
    first = m.ingestion.prepare(
        [event("a"), event("b"), event("a"), {"id": "no-type"}, event("t", "tokens", tokens="5")]
    )
    one = committer.submit(m.scope, "test", first)
    assert _statuses(one) == ["accepted", "accepted", "duplicate", "rejected", "accepted"]
    two = committer.submit(
        m.scope,
        "test",
        m.ingestion.prepare(
            [event("b"), event("c"), event("u", "nope"), event("v", customer="stranger")]
        ),
    )
    result = two.result(60)
    assert [(r.index, r.event_id, str(r.status)) for r in result.results] == [
        (0, "evt_b", "duplicate"),
        (1, "evt_c", "accepted"),
        (2, "evt_u", "rejected"),
        (3, "evt_v", "rejected"),
    ]
    assert [p.code for p in result.results[2].problems] == [ErrorCode.UNKNOWN_METER]
    assert [p.code for p in result.results[3].problems] == [ErrorCode.UNKNOWN_CUSTOMER]
    assert result.touched == {(m.customer_id, "api_calls")}
    assert heard == [
        {(m.customer_id, "api_calls"), (m.customer_id, "tokens")},
        {(m.customer_id, "api_calls")},
    ]
    with m.sessions() as session:
        stored = event_ids.existing_ids(
            session, m.scope, ["evt_a", "evt_b", "evt_c", "evt_t", "evt_u"]
        )
    assert stored == {"evt_a", "evt_b", "evt_c", "evt_t"}
    assert committer.starts == 1


def test_a_batch_with_nothing_to_store_is_answered_without_the_child(
    metering: Metering, committer: ProcessCommitter
) -> None:
    answered = committer.submit(metering.scope, "t", metering.ingestion.prepare([{"id": "x"}]))
    assert _statuses(answered) == ["rejected"]
    assert committer.starts == 0 and committer.pid is None


def test_close_stores_and_answers_what_was_sent_then_refuses_more(
    metering: Metering, committer: ProcessCommitter
) -> None:
    m = metering
    futures = [committer.submit(m.scope, "t", m.ingestion.prepare([event(i)])) for i in range(6)]
    committer.close()
    assert [_statuses(f) for f in futures] == [["accepted"]] * 6
    with pytest.raises(RuntimeError, match="closed"):
        committer.submit(m.scope, "t", m.ingestion.prepare([event(9)]))


def test_a_killed_child_fails_what_it_did_not_answer_and_the_next_batch_starts_another(
    metering: Metering, committer: ProcessCommitter
) -> None:
    m = metering
    pid = _stopped_child(committer)
    lost = committer.submit(m.scope, "t", m.ingestion.prepare([event(1), event(2)]))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WriterGone) as failed:
        lost.result(60)
    assert failed.value.code is ErrorCode.INGESTION_BUSY  # a 503: send it again
    wait_until(lambda: gone(pid), seconds=30)
    again = committer.submit(m.scope, "t", m.ingestion.prepare([event(1), event(2)]))
    assert _statuses(again) == ["accepted", "accepted"]  # the lost batch stored nothing
    assert committer.starts == 2 and committer.pid != pid


def test_too_many_events_waiting_refuses_a_batch_whole(
    metering: Metering, sessions: sessionmaker[Session]
) -> None:
    m = metering
    committer = ProcessCommitter(_url(sessions), m.clock, max_queued=3)
    try:
        pid = _stopped_child(committer)
        waiting = committer.submit(m.scope, "t", m.ingestion.prepare([event(1), event(2)]))
        with pytest.raises(IngestionBusy):
            committer.submit(m.scope, "t", m.ingestion.prepare([event(3), event(4)]))
        os.kill(pid, signal.SIGCONT)
        assert _statuses(waiting) == ["accepted", "accepted"]
        taken = committer.submit(m.scope, "t", m.ingestion.prepare([event(3), event(4)]))
        assert _statuses(taken) == ["accepted", "accepted"]
    finally:
        committer.close()


def test_a_batch_the_child_cannot_read_fails_alone(
    metering: Metering, committer: ProcessCommitter
) -> None:
    m = metering
    prepared = m.ingestion.prepare([event(1)])
    broken = Prepared(
        prepared.received_at,
        prepared.results,
        prepared.valid._replace(hours=["not an hour"]),
    )
    failed = committer.submit(m.scope, "t", broken)
    with pytest.raises(RuntimeError, match="the ingestion writer failed"):
        failed.result(60)
    after = committer.submit(m.scope, "t", m.ingestion.prepare([event(2)]))
    assert _statuses(after) == ["accepted"]
    assert committer.starts == 1


def test_failures_cross_the_pipe_as_plain_values() -> None:
    busy = _Failure.of(IngestionBusy(12)).error()
    assert isinstance(busy, RatecardError) and busy.code is ErrorCode.INGESTION_BUSY
    assert "12 events waiting" in busy.message
    other = _Failure.of(ValueError("boom")).error()
    assert isinstance(other, RuntimeError) and "boom" in str(other)
    assert pickle.loads(pickle.dumps(_Failure.of(IngestionBusy(1)))) == _Failure.of(
        IngestionBusy(1)
    )


def test_a_fixed_clock_pickles_as_the_instant_it_shows() -> None:
    clock = FixedClock(datetime(2024, 5, 1, tzinfo=UTC))
    copy = pickle.loads(pickle.dumps(clock))
    assert copy.now() == clock.now()
    copy.set(datetime(2024, 6, 1, tzinfo=UTC))  # moves on its own
    assert clock.now() == datetime(2024, 5, 1, tzinfo=UTC)


def test_a_writer_that_cannot_start_says_so_at_once() -> None:
    """A store it cannot reach (nothing listens on port 1): `start` fails without waiting out
    its timeout."""
    committer = ProcessCommitter(
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
        FixedClock(datetime(2024, 1, 1, tzinfo=UTC)),
    )
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with code"):
        committer.start()
    assert time.monotonic() - started < 30
    committer.close()


def test_an_in_memory_store_cannot_have_a_writer_process() -> None:
    from ratecard.adapters.db.engine import make_engine, make_session_factory
    from ratecard.services.metering.wiring import MeteringServices

    sessions = make_session_factory(make_engine("sqlite://"))
    clock = FixedClock(datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="database file"):
        MeteringServices.build(sessions, clock, writer="process")
    assert isinstance(MeteringServices.build(sessions, clock).committer, GroupCommitter)
    auto = MeteringServices.build(sessions, clock, writer="auto")
    assert isinstance(auto.committer, GroupCommitter)


def test_auto_puts_the_writer_in_a_process_of_its_own_unless_the_store_is_in_memory(
    tmp_path,
) -> None:
    from ratecard.adapters.db.engine import make_engine
    from ratecard.services.metering.wiring import resolve_writer

    on_file = make_engine(f"sqlite:///{tmp_path / 'auto.db'}")
    in_memory = make_engine("sqlite://")
    postgres = make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")  # not connected
    try:
        assert resolve_writer(on_file, "auto") == "process"
        assert resolve_writer(in_memory, "auto") == "thread"
        assert resolve_writer(postgres, "auto") == "process"
        for engine in (on_file, in_memory, postgres):
            assert resolve_writer(engine, "thread") == "thread"
            assert resolve_writer(engine, "process") == "process"
        assert Settings.model_fields["ingest_writer"].default == "auto"
    finally:
        for engine in (on_file, in_memory, postgres):
            engine.dispose()


def test_a_batch_whose_caller_went_away_is_stored_and_later_ones_are_answered(
    metering: Metering, committer: ProcessCommitter
) -> None:
    """A request cancelled while its batch is with the writer cannot cancel the batch: its
    answer still comes (and the answers' reader goes on with the others)."""
    m = metering
    gone = committer.submit(m.scope, "t", m.ingestion.prepare([event(1)]))
    assert not gone.cancel()
    after = committer.submit(m.scope, "t", m.ingestion.prepare([event(2)]))
    assert _statuses(after) == ["accepted"]
    assert _statuses(gone) == ["accepted"]


def test_the_writer_process_stops_after_sending_the_answers_it_made() -> None:
    """After a failed fsync the child sends the answers already made, then exits with its
    own code."""
    answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sent: list[Any] = []

    def answer_all() -> None:
        while (item := answers.get()) is not None:
            sent.append(item)

    answering = threading.Thread(target=answer_all)
    answering.start()
    answers.put("failed batch 7")
    exits: list[int] = []
    stop_writer(answers, answering, exits.append)
    assert sent == ["failed batch 7"]
    assert not answering.is_alive()
    assert exits == [SYNC_FAILED]


class _Exited:
    """A child process that exited with `exitcode`."""

    def __init__(self, exitcode: int) -> None:
        self.exitcode = exitcode
        self.pid = 1

    def is_alive(self) -> bool:
        return False


def test_after_the_disk_failed_no_writer_is_started_and_nothing_is_taken(
    metering: Metering,
) -> None:
    m = metering
    committer = ProcessCommitter(_url(m.sessions), m.clock)
    committer._process = _Exited(SYNC_FAILED)
    try:
        with pytest.raises(DiskFailed) as refused:
            committer.submit(m.scope, "t", m.ingestion.prepare([event(1)]))
        assert refused.value.code is ErrorCode.STORE_DISK_FAILED
        assert "restart Ratecard" in refused.value.message
        assert committer.starts == 0
        committer._process = _Exited(-9)  # killed: a new writer starts, as before
        assert _statuses(committer.submit(m.scope, "t", m.ingestion.prepare([event(1)]))) == [
            "accepted"
        ]
        assert committer.starts == 1
    finally:
        committer.close()
