"""Group commit: the batches of concurrent requests stored together, one transaction each round.

    >>> committer = GroupCommitter(ingestion)                              # doctest: +SKIP
    >>> result = await asyncio.wrap_future(committer.submit(scope, actor, prepared))

Every commit costs a WAL sync and rewrites each index page it touched; random event ids touch
pages all over the dedup index. A writer thread takes every batch that is waiting when it is
free (up to `max_events`), stores them per scope with `IngestionService.store` (one
transaction, one commit, the pages shared by all the events in it), then answers each batch.
SQLite gets one writer (it has one write lock); PostgreSQL two in the API process, so that
one round's database work overlaps the next round's Python, and one in a writer process
(`writers_for`).
Under load the rounds grow by themselves: the longer a commit takes, the more batches the next
round carries. Nobody waits for a timer.

With ``RATECARD_INGEST_WRITER=process`` this runs in a child process instead, with an
interpreter lock of its own (`services.metering.writer_process`).

A batch is answered only after its round committed, so an answer still means "durably stored".
A round that fails is retried one batch at a time, so one batch's failure is its own.

Durability off the write lock (`durable`): a writer process's SQLite engine commits without
syncing its WAL (`engine.make_engine(sync_later=True)`), and a thread of its own here syncs
it once for every round committed since its last sync, and only then answers their batches.
The writer meanwhile stores the next round, instead of holding the write lock through each
fsync (an answer still waits for its fsync, as with ``synchronous=FULL``). A failed sync fails
the batches waiting for it and every later one: the kernel may have dropped pages it will not
report again (a writer process then exits, and ingestion stops until Ratecard is restarted:
`writer_process.DiskFailed`).

A batch once taken (`submit`) cannot be cancelled: it may be stored whatever its caller does,
and it is answered, so a caller that went away never stops the answers of the others.

Back-pressure: when more than `max_queued` events wait for the writer, `submit` refuses the
batch with `IngestionBusy` (the API answers 503 with ``Retry-After``) instead of letting the
queue, and the memory it holds, grow without bound; nothing of a refused batch is stored, so
sending it again is exact.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ratecard.adapters.db.scope import TenantScope
from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.services.metering.batches import IngestResult, Prepared, Stored
from ratecard.services.metering.ingestion import IngestionService

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_EVENTS = 20_000  # per round: a bound on one transaction's size and on the wait behind it
MAX_QUEUED = 200_000  # events waiting for the writer: a few seconds of work at full rate


def writers_for(dialect: str, *, own_process: bool = False) -> int:
    """How many writer threads an engine takes. SQLite one (it has one write lock). PostgreSQL
    two in the API process, where a round's Python waits for the interpreter lock anyway and
    the other writer's database work overlaps it; one in a writer process of its own, where
    two writers halve the rounds, so each event pays twice the per-round work (the rollup
    rows of a round, the lookups) and the second writer waits on the first's rollup rows
    (measured back to back: 33,500 events/s with one, 29,100 with two)."""
    if dialect != "postgresql":
        return 1
    return 1 if own_process else 2


class IngestionBusy(RatecardError):
    """The writer's queue is full; the batch was not taken (retry it)."""

    def __init__(self, queued: int) -> None:
        super().__init__(
            f"ingestion is busy ({queued:,} events waiting to be stored): retry in a moment",
            code=ErrorCode.INGESTION_BUSY,
        )


@dataclass(slots=True)
class _Job:
    scope: TenantScope
    actor: str
    batch: Prepared
    future: Future[Any] = field(default_factory=Future)
    raw: bool = False  # the future takes the `Stored` outcome rather than the `IngestResult`
    committed: bool = False  # its round committed: answered with its outcome, never failed

    def done(self, stored: Stored) -> None:
        """Answer with the batch's outcome; a bug in making the answer fails this batch alone."""
        try:
            self.future.set_result(stored if self.raw else self.batch.answered(stored))
        except Exception as exc:
            log.exception("a batch's answer could not be made")
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class GroupCommitter:
    """The writer threads for the ingestion of one process (started on first use)."""

    def __init__(
        self,
        ingestion: IngestionService,
        *,
        max_events: int = MAX_EVENTS,
        writers: int = 1,
        max_queued: int = MAX_QUEUED,
        durable: Callable[[], None] | None = None,
        on_unsafe: Callable[[], None] | None = None,
    ) -> None:
        """`durable`: when the commits return before they are on disk, the call that puts
        every one returned so far there (`engine.wal_sync`); batches are answered after it.
        `on_unsafe`: called once when `durable` failed, after the batches waiting for it
        were failed (a writer process stops there)."""
        self._ingestion = ingestion
        self._durable = durable
        self._on_unsafe = on_unsafe
        # Rounds committed, waiting for `durable` before their batches are answered.
        self._unsynced: queue.SimpleQueue[list[tuple[_Job, Stored]] | None] = queue.SimpleQueue()
        self._syncer: threading.Thread | None = None
        self._max_events = max_events
        self._max_queued = max_queued
        self._queued = 0  # events submitted and not yet taken into a round
        self._writers = writers
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._unsafe: BaseException | None = None  # a failed `durable`: nothing is stored after it
        self.rounds = 0  # committed rounds, for tests and metrics

    def submit(self, scope: TenantScope, actor: str, batch: Prepared) -> Future[IngestResult]:
        """Queue a prepared batch; the future resolves after the commit that stored it."""
        return self._submit(_Job(scope, actor, batch))

    def submit_valid(self, scope: TenantScope, actor: str, batch: Prepared) -> Future[Stored]:
        """`submit`, the future resolving to the outcome of the batch's valid events as plain
        values (`IngestionService.store_valid`), for a writer process to send back."""
        return self._submit(_Job(scope, actor, batch, raw=True))

    def _submit(self, job: _Job) -> Future[Any]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the group committer is closed")
            size = job.batch.size
            if self._queued and self._queued + size > self._max_queued:
                raise IngestionBusy(self._queued)
            self._queued += size
            self._start_threads()
            # Taken: from here the batch may be stored whatever becomes of the request (a client
            # that goes away cancels its asyncio future, not this one), and it is answered.
            job.future.set_running_or_notify_cancel()
            self._queue.put(job)
        return job.future

    def start(self) -> None:
        """Start the writers now rather than with the first batch."""
        with self._lock:
            if not self._closed:
                self._start_threads()

    def _start_threads(self) -> None:
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._run, name=f"ratecard-writer-{n}", daemon=True)
                for n in range(self._writers)
            ]
            for thread in self._threads:
                thread.start()
            if self._durable is not None:
                self._syncer = threading.Thread(
                    target=self._sync, name="ratecard-writer-sync", daemon=True
                )
                self._syncer.start()

    def close(self) -> None:
        """Store what is queued, then stop the writers."""
        with self._lock:
            self._closed = True
            threads = self._threads
            for _ in threads:
                self._queue.put(None)
        for thread in threads:
            thread.join()
        if self._syncer is not None:  # after the writers: their last rounds are answered
            self._unsynced.put(None)
            self._syncer.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            round_, stopping = _take_waiting(
                self._queue, first, lambda jobs: sum(j.batch.size for j in jobs) >= self._max_events
            )
            size = sum(job.batch.size for job in round_)
            with self._lock:
                self._queued -= size
            if self._unsafe is not None:
                for job in round_:
                    job.fail(RuntimeError(f"the store could not be synced to disk: {self._unsafe}"))
                continue
            try:
                self._store_round(round_)
            except Exception as exc:  # a bug here must not stop the writer and hang every caller
                log.exception("a group commit round failed")
                for job in round_:
                    if not job.committed:
                        job.fail(exc)

    def _store_round(self, jobs: Sequence[_Job]) -> None:
        by_scope: dict[tuple[TenantScope, str], list[_Job]] = {}
        for job in jobs:
            by_scope.setdefault((job.scope, job.actor), []).append(job)
        for (scope, actor), group in by_scope.items():
            try:
                outcomes = self._ingestion.store_valid(scope, [j.batch for j in group], actor=actor)
            except Exception as exc:
                busy = isinstance(exc, RatecardError) and exc.code is ErrorCode.INGESTION_BUSY
                if len(group) == 1 or busy:  # busy (a meter being redefined): all retry later
                    for job in group:
                        job.fail(exc)
                    continue
                log.warning("a group commit failed (%s); storing its batches one by one", exc)
                for job in group:  # every stored slot is written again: nothing stale remains
                    try:
                        (stored,) = self._ingestion.store_valid(scope, [job.batch], actor=actor)
                    except Exception as alone:
                        job.fail(alone)
                    else:
                        self._committed([(job, stored)])
                continue
            self.rounds += 1
            self._committed(list(zip(group, outcomes, strict=True)))
        try:  # between rounds, in the writer: sealing waits for rounds in flight anyway
            self._ingestion.seal_due()
        except Exception:  # the days stay unsealed (reads stay exact); the next round retries
            log.exception("sealing the daily rollups failed")

    def _committed(self, stored: list[tuple[_Job, Stored]]) -> None:
        """Answer batches whose commit returned: now, or once `durable` has run after it."""
        for job, _ in stored:
            job.committed = True
        if self._durable is not None:
            self._unsynced.put(stored)
            return
        for job, outcome in stored:
            job.done(outcome)  # fails this job alone if its answer cannot be made

    def _sync(self) -> None:
        """One `durable` call for every round committed since the last, then their answers,
        in commit order."""
        stopping = False
        while not stopping:
            first = self._unsynced.get()
            if first is None:
                return
            waiting, stopping = _take_waiting(self._unsynced, first)
            assert self._durable is not None
            try:
                if self._unsafe is None:
                    self._durable()
            except Exception as exc:
                # Not known to be on disk, and after a failed fsync the kernel may have
                # dropped pages it reports no more: nothing is acknowledged or stored from
                # here on (a writer process exits instead, and its successor reads the disk).
                log.critical("the committed rounds could not be synced to disk", exc_info=True)
                self._unsafe = exc
            for stored in waiting:
                for job, outcome in stored:
                    if self._unsafe is None:
                        job.done(outcome)
                    else:
                        job.fail(self._unsafe)
            if self._unsafe is not None and self._on_unsafe is not None:
                on_unsafe, self._on_unsafe = self._on_unsafe, None
                on_unsafe()


def _take_waiting(
    waiting: queue.SimpleQueue[T | None],
    first: T,
    full: Callable[[list[T]], bool] = lambda _: False,
) -> tuple[list[T], bool]:
    """`first` and what waits behind it in `waiting`, until it is empty or `full`; and whether
    a None (stop) was met."""
    taken = [first]
    while not full(taken):
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return taken, True
        taken.append(item)
    return taken, False
