"""Ingestion's writer in a process of its own: the API process validates, the writer stores.

    >>> committer = ProcessCommitter(url, clock, listeners=ingestion.listeners)  # doctest: +SKIP
    >>> result = await asyncio.wrap_future(committer.submit(scope, actor, prepared))

In one process, the request threads (HTTP, JSON, validation, answers) and the group commit's
writer share one interpreter lock, so ingestion uses one core however many the machine has:
the writer's Python work and SQLite's or psycopg's calls wait for the lock behind validation.
With ``RATECARD_INGEST_WRITER=process`` the writer runs in a child process with a lock of its
own: the API process validates a batch (`IngestionService.prepare`), sends its valid events
as columns of plain values (`batches.Columns`) over a pipe, and the child stores them with
the same `GroupCommitter` and `IngestionService.store_valid` as the in-process writer (the
same dedup, admission, late-event and rollup rules, one transaction per round) and answers
each batch after the commit that stored it. So an answer still means "durably stored".

- Each API process starts its own child on first use (`make run` and ``ratecard serve`` run one
  API process). On SQLite, several API processes mean several writers queueing for one write
  lock: run one.
- The listeners (entitlement cache, alerts) run in the API process, after the commit, with the
  pairs the round changed; a round's pairs reach them once per batch of the round.
- The child's clock is a copy of the API process's (`FixedClock` pickles as the instant it
  shows); each batch carries the instant it was received at, as in process.
- If the child dies, the batches it had not answered fail (503 ``ingestion_busy``, retry: a
  batch stored before the crash is then reported as duplicates, never counted twice), and the
  next batch starts a new child. Closing sends an end mark: the child stores what it received,
  answers it, and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from ratecard.adapters.clock import Clock
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.core.errors import ErrorCode, Problem, RatecardError
from ratecard.services.metering.batches import Columns, IngestResult, Listener, Prepared, Stored
from ratecard.services.metering.group_commit import MAX_QUEUED, IngestionBusy

log = logging.getLogger(__name__)

READY = -1  # the job number of the child's first message: it can store
SYNC_FAILED = 75  # the child's exit code when the disk failed to sync its commits

#: A batch's valid events as they cross the pipe: its `Columns` but the positions in the batch
#: (the API process keeps those), as they are: plain values pickle fast.
Message = tuple[int, str, str, str, datetime, tuple[Sequence[Any], ...]]
#: What the child answers for one batch: the statuses and problems of its valid events
#: (`Stored`), and the (customer, meter) pairs its round changed (None: those of the previous
#: answer); or the failure of the batch.
Outcome = tuple[list[str], dict[int, tuple[Problem, ...]], frozenset[tuple[str, str]] | None]


@dataclass(frozen=True, slots=True)
class _Failure:
    """An exception of the child, as plain values (exceptions with their own constructor
    arguments do not always survive pickling)."""

    message: str
    code: str | None

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        code = exc.code if isinstance(exc, RatecardError) else None
        return cls(str(exc), None if code is None else str(code))

    def error(self) -> Exception:
        if self.code is None:
            return RuntimeError(f"the ingestion writer failed: {self.message}")
        return RatecardError(self.message, code=ErrorCode(self.code))


class WriterGone(RatecardError):
    """The writer process died before it answered this batch (retry it)."""

    def __init__(self) -> None:
        super().__init__(
            "the ingestion writer restarted before it answered: retry the batch",
            code=ErrorCode.INGESTION_BUSY,
        )


class DiskFailed(RatecardError):
    """The writer process stopped because the disk failed to sync a commit: nothing more is
    taken until Ratecard is restarted."""

    def __init__(self) -> None:
        super().__init__(
            "the store's disk failed to sync a commit, so ingestion has stopped: restart "
            "Ratecard once the disk is sound, then send again what was not answered",
            code=ErrorCode.STORE_DISK_FAILED,
        )


class _Ready(threading.Event):
    """Set when the child said it is ready (`ok`), or when it is gone without saying so."""

    ok = False


@dataclass(slots=True)
class _Pending:
    scope: TenantScope
    batch: Prepared
    future: Future[IngestResult]
    size: int


class ProcessCommitter:
    """`GroupCommitter`'s interface, with the writer in a child process (started on first use)."""

    def __init__(
        self,
        database_url: str,
        clock: Clock,
        *,
        listeners: Sequence[Listener] = (),
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._url = database_url
        self._clock = clock
        self._listeners = listeners
        self._max_queued = max_queued
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._jobs = itertools.count()
        self._pending: dict[int, _Pending] = {}
        self._queued = 0  # events sent and not yet answered
        self._connection: Connection | None = None
        self._process: Any = None
        self._reader: threading.Thread | None = None
        self._ready = _Ready()
        self._closed = False
        self.starts = 0  # child processes started, for tests

    @property
    def pid(self) -> int | None:
        """The child's process id (None before it starts)."""
        return None if self._process is None else int(self._process.pid)

    def start(self, timeout: timedelta = timedelta(seconds=60)) -> None:
        """Start the child now rather than with the first batch, and wait until it is ready
        to store (a second or two: it imports and connects), so that a server does not take
        traffic before its writer can."""
        with self._lock:
            if self._closed:
                return
            self._started()
            ready, process = self._ready, self._process
        if not ready.wait(timeout.total_seconds()):
            raise RuntimeError(f"the ingestion writer was not ready within {timeout}")
        if not ready.ok:  # it exited before it was ready (the store unreachable?): its log says
            process.join(10)
            raise RuntimeError(f"the ingestion writer exited with code {process.exitcode}")

    def submit(self, scope: TenantScope, actor: str, batch: Prepared) -> Future[IngestResult]:
        """Send a prepared batch to the writer; the future resolves after its commit."""
        future: Future[IngestResult] = Future()
        # Running from the start: a client that goes away cancels its asyncio future, and this
        # one is answered all the same (a cancelled one would stop the answers' reader).
        future.set_running_or_notify_cancel()
        size = batch.size
        if not size:  # every event was refused in validation: nothing to store
            future.set_result(IngestResult(batch.filled(), frozenset()))
            return future
        with self._lock:
            if self._closed:
                raise RuntimeError("the process committer is closed")
            if self._queued and self._queued + size > self._max_queued:
                raise IngestionBusy(self._queued)
            connection = self._started()
            job = next(self._jobs)
            pending = self._pending
            pending[job] = _Pending(scope, batch, future, size)
            self._queued += size
        columns = tuple(batch.valid[1:])  # all but the positions in the batch
        message: Message = (
            job,
            scope.tenant_id,
            scope.mode.value,
            actor,
            batch.received_at,
            columns,
        )
        try:
            with self._sending:  # not under `_lock`: the answers' reader needs that one
                connection.send(message)
        except OSError:  # the child is gone; its reader fails what it had
            with self._lock:
                if pending.pop(job, None) is not None:
                    self._queued -= size
            raise WriterGone() from None
        return future

    def close(self) -> None:
        """Let the child store and answer what it received, then stop it."""
        with self._lock:
            self._closed = True
            connection, process, reader = self._connection, self._process, self._reader
        if connection is not None:
            with self._sending, contextlib.suppress(OSError):
                connection.send(None)
        if reader is not None:
            reader.join()
        if process is not None:
            process.join(30)
        if connection is not None:
            connection.close()

    def _started(self) -> Connection:
        """The pipe to a live child, starting one if there is none (holding the lock)."""
        if self._connection is not None and self._process.is_alive():
            return self._connection
        if self._process is not None and self._process.exitcode == SYNC_FAILED:
            raise DiskFailed()
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=serve,
            args=(self._url, self._clock, theirs),
            name="ratecard-writer",
            daemon=True,
        )
        process.start()
        theirs.close()
        self._connection, self._process = ours, process
        self._pending = {}  # this child's batches: if it dies, its reader fails just these
        self._ready = _Ready()
        self._reader = threading.Thread(
            target=self._read,
            args=(ours, self._pending, self._ready),
            name="ratecard-writer-answers",
            daemon=True,
        )
        self._reader.start()
        self.starts += 1
        return ours

    def _read(self, connection: Connection, waiting: dict[int, _Pending], ready: _Ready) -> None:
        touched: frozenset[tuple[str, str]] = frozenset()  # the last pairs the child sent
        while True:
            try:
                job, outcome = connection.recv()
            except (EOFError, OSError):
                break
            if job == READY:
                ready.ok = True
                ready.set()
                continue
            with self._lock:
                pending = waiting.pop(job)
                self._queued -= pending.size
            if isinstance(outcome, _Failure):
                pending.future.set_exception(outcome.error())
                continue
            statuses, problems, pairs = outcome
            fresh = pairs is not None
            if fresh:
                touched = pairs
            try:
                result = self._result(pending, Stored(statuses, problems, touched), tell=fresh)
            except Exception as exc:  # a bug here must not hang the caller
                log.exception("an answer of the ingestion writer could not be read")
                pending.future.set_exception(exc)
            else:
                pending.future.set_result(result)
        with self._lock:  # the child is gone: what it did not answer fails
            lost = list(waiting.values())
            waiting.clear()
            self._queued -= sum(p.size for p in lost)
            if self._connection is connection:
                self._connection = None
        for pending in lost:  # the pipe stays open until replaced: a send to it fails cleanly
            pending.future.set_exception(WriterGone())
        ready.set()  # whoever waits for the child to be ready need not wait any longer

    def _result(self, pending: _Pending, stored: Stored, *, tell: bool) -> IngestResult:
        result = pending.batch.answered(stored)
        if tell:  # the first batch of its round (`_answer`)
            for listener in self._listeners:
                listener(pending.scope, stored.touched)
        return result


# --- the child ---------------------------------------------------------------------------------


def serve(database_url: str, clock: Clock, connection: Connection) -> None:
    """The writer process: store the batches the pipe brings until an end mark or EOF."""
    from ratecard.adapters.db.engine import (
        Checkpointer,
        make_engine,
        make_session_factory,
        wal_sync,
    )
    from ratecard.config import get_settings
    from ratecard.runtime import tune_gc
    from ratecard.services.metering.group_commit import GroupCommitter, writers_for
    from ratecard.services.metering.ingestion import IngestionService

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the API process, which closes us
    _name_process(b"ratecard-writer")
    # Its commits hold SQLite's write lock without an fsync each; the committer syncs the WAL
    # in a thread of its own and answers after it (`group_commit`, "Durability").
    engine = make_engine(database_url, get_settings(), sync_later=True)
    checkpointer = Checkpointer(engine)
    checkpointer.start()
    committer = GroupCommitter(
        IngestionService(make_session_factory(engine), clock),
        writers=writers_for(engine.dialect.name, own_process=True),
        max_queued=sys.maxsize,  # the API process bounds what it sends
        durable=wal_sync(engine),
        on_unsafe=lambda: stop_writer(answers, answering),
    )
    tune_gc()  # as the API process: a young collection per 700 allocations walks the batches
    sending = threading.Lock()
    with engine.connect():  # the store is reachable: say so
        connection.send((READY, None))
    told: list[frozenset[tuple[str, str]]] = [frozenset()]  # the pairs last sent
    # Answers are built and sent by a thread of their own, in the order the batches were
    # stored: the writer goes on with the next round meanwhile (its database waits free the
    # interpreter lock for them).
    answers: queue.SimpleQueue[tuple[int, Future[Stored]] | None] = queue.SimpleQueue()

    def answer_all() -> None:
        while (item := answers.get()) is not None:
            try:
                _answer(connection, sending, told, *item)
            except Exception:  # one answer's bug must not silence the ones after it
                log.exception("the answer of batch %s could not be sent", item[0])

    answering = threading.Thread(target=answer_all, name="ratecard-writer-answers", daemon=True)
    answering.start()
    try:
        while True:
            try:
                message = connection.recv()
            except EOFError:  # the API process is gone: store what came, nobody to answer
                break
            if message is None:
                break
            job, tenant_id, mode, actor, received_at, columns = message
            try:
                prepared = Prepared(received_at, [], Columns((), *columns))
                future = committer.submit_valid(TenantScope(tenant_id, Mode(mode)), actor, prepared)
            except Exception as exc:  # this batch fails, not the writer
                log.exception("a batch could not be handed to the writer")
                future = Future()
                future.set_exception(exc)
            future.add_done_callback(partial(_queue_answer, answers, job))
    finally:
        committer.close()
        answers.put(None)  # after every stored batch's answer
        answering.join()
        checkpointer.stop()
        engine.dispose()
        connection.close()


def stop_writer(
    answers: queue.SimpleQueue[Any],
    answering: threading.Thread,
    exit_: Callable[[int], object] = os._exit,
) -> None:
    """End this process after a failed fsync, once the answers already made are sent (those
    of the batches that failed with it included). After a failed fsync the kernel may have
    dropped pages of the WAL that it will not report again: this writer must acknowledge
    nothing more, and the API process, seeing the exit code, takes no more events
    (`DiskFailed`)."""
    answers.put(None)
    answering.join(10)
    exit_(SYNC_FAILED)


def _name_process(name: bytes) -> None:
    """The name `ps`, `top` and /proc show for this process (Linux; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _queue_answer(
    answers: queue.SimpleQueue[tuple[int, Future[Stored]] | None],
    job: int,
    future: Future[Stored],
) -> None:
    answers.put((job, future))


def _answer(
    connection: Connection,
    sending: threading.Lock,
    told: list[frozenset[tuple[str, str]]],
    job: int,
    future: Future[Stored],
) -> None:
    """Send a batch's outcome. The batches of one round share one set of changed pairs (the
    same object): it goes with the first of them, which the API process reads first, and the
    others say "the same" (None), so the listeners run once per round, before any batch of the
    round is answered."""
    try:
        with sending:
            answer: Outcome | _Failure
            try:
                stored = future.result()
            except Exception as exc:
                answer = _Failure.of(exc)
            else:
                if stored.touched is told[0]:  # None: the pairs of the previous answer
                    answer = (stored.statuses, stored.problems, None)
                else:
                    told[0] = stored.touched
                    answer = (stored.statuses, stored.problems, stored.touched)
            connection.send((job, answer))
    except OSError:
        log.warning("the API process is gone: batch %s was stored but not answered", job)
