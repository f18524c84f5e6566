"""A meter's redefinition that reads its history outside the lock.

    >>> prepared = prepare(uow, row, definition, at="body")              # doctest: +SKIP
    >>> row = uow.meters.get_for_update(row.id)                           # doctest: +SKIP
    >>> meters.redefine(uow, row, definition, prepared=prepared)          # doctest: +SKIP

Rebuilding a meter's rollups reads every raw event of it, and a redefinition holds the meter's
lock (PostgreSQL: that tenant's ingestion waits, then retries) or the store's write lock
(SQLite: every tenant's ingestion waits) while it does. `prepare` does that reading first,
outside any lock, in three steps:

1. **A mark.** Briefly under the meter's lock (so every ingestion round of the tenant that
   stored events before it has committed, and every later one stores them with a higher
   ``seq``), the highest ``seq`` of the tenant's events: `Prepared.last_seq`.
2. **The reading.** In a read transaction of its own, taking no lock: the meter's counted events
   up to that ``seq``, rolled up under the new definition into the rows the store will hold
   (`rollup_rows.new_rows`: hourly rows, and daily ones for the days sealed then), spilled to
   a temporary file a few customers' rows at a time; and the ``seq`` of its events then held.
3. **The swap** (`Prepared.finish`, called by `meters.redefine` under the meter's lock, in the
   request's transaction): the old rollups dropped, the prepared rows written as they are
   (``executemany``; ``COPY`` on PostgreSQL), and the events that arrived meanwhile (a higher
   ``seq``, or held then and released since) rolled up on top. If a day was sealed since the
   reading, its daily rows would be missing: the swap rebuilds under the lock instead.

Every counted event is in exactly one of the two reads: one stored by the mark either was
counted then (read in step 2) or held (its ``seq`` listed, read in step 3 if released since).
If the meter was redefined by someone else meanwhile, `meters.redefine` rebuilds it whole
under the lock instead.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ratecard.adapters.db import event_reads, rollup_rows, rollup_store
from ratecard.adapters.db.engine import READ_ONLY
from ratecard.adapters.db.models import MeterRow
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import MeterSpec
from ratecard.core.rollups import decomposable
from ratecard.services.metering.meters import (
    Definition,
    as_defined,
    meter_spec,
    needs_rebuild,
    rebuild_rollups,
    rollup_chunks,
)


@dataclass(slots=True)
class Prepared:
    """A meter's rollups under a new definition, read up to a mark (`prepare`)."""

    meter_id: str
    before: Definition  # the definition the reading saw replaced
    definition: Definition
    last_seq: int
    held: list[int]  # seq of the meter's events held at the reading
    sealed: datetime | None = None  # the seal its daily rows were made for
    spill: IO[bytes] = field(default_factory=tempfile.TemporaryFile)  # closed by `finish`
    chunks: int = 0

    def fits(self, before: Definition, definition: Definition) -> bool:
        """Whether this reading is of the change now being made (no other came between)."""
        return (self.before, self.definition) == (before, definition)

    def finish(self, uow: UnitOfWork, row: MeterRow) -> int:
        """Under the meter's lock, with its new definition flushed: swap the rollups; the
        number of hourly rows written."""
        assert row.id == self.meter_id
        session, scope = uow.session, uow.scope
        # The drop first: from it on no sealing can run (PostgreSQL: it waits for one under
        # way, whose daily rows it then drops too), so the seal read next stays.
        rollup_rows.delete_rollups(session, scope, row.code, None)
        if rollup_store.sealed_before(session) != self.sealed:  # a day was sealed meanwhile
            self.close()
            return rebuild_rollups(session, scope, row)
        written = sum(rollup_rows.write_new_rows(session, rows) for rows in self._read())
        self.close()
        late = event_reads.counted_since(session, scope, row.code, self.last_seq, self.held)
        spec = meter_spec(row)
        for chunk in rollup_chunks(spec, row.code, late):
            rollup_store.add_rollups(session, scope, chunk)  # merged with the rows above
        return written

    def close(self) -> None:
        """Drop the rows read (`finish` does, and so does whoever gives up on them)."""
        self.spill.close()

    def _write(self, rows: rollup_rows.NewRows) -> None:
        pickle.dump(rows, self.spill, protocol=pickle.HIGHEST_PROTOCOL)
        self.chunks += 1

    def _read(self) -> Iterator[rollup_rows.NewRows]:
        self.spill.seek(0)
        for _ in range(self.chunks):
            yield pickle.load(self.spill)


def prepare(
    uow: UnitOfWork, row: MeterRow, definition: Definition, *, at: str = ""
) -> Prepared | None:
    """Read the meter's history under `definition` before its lock is taken (see the module);
    None when the change rebuilds nothing, or nothing that has rollups. `ValidationFailed`
    (fields named under `at`) if `definition` is refused, before anything changes.

    Ends the unit of work's transaction (nothing may be pending in it): the mark is taken and
    released in one of its own, and the caller locks the meter again for the swap."""
    if not needs_rebuild(row, definition, at):
        return None
    return read_history(uow, row, definition)


def rebuild_meter(uow: UnitOfWork, row: MeterRow) -> int:
    """Rebuild the meter's rollups under its own definition (``ratecard rollups rebuild``), its
    history read outside the lock as a redefinition's is; the caller commits."""
    definition = Definition.of(row)
    prepared = read_history(uow, row, definition)
    locked = uow.meters.get_for_update(row.id)
    if prepared is None or not prepared.fits(Definition.of(locked), definition):
        if prepared is not None:
            prepared.close()
        return rebuild_rollups(uow.session, uow.scope, locked)
    return prepared.finish(uow, locked)


def read_history(uow: UnitOfWork, row: MeterRow, definition: Definition) -> Prepared | None:
    """Steps 1 and 2 for the meter under `definition` (checked already); None when it has no
    rollups, or when the meter changed before the mark."""
    spec = meter_spec(as_defined(row, definition))
    if not decomposable(spec):
        return None  # no rollups to build: the swap drops the old ones
    meter_id, before = row.id, Definition.of(row)
    session = uow.session
    assert not session.dirty and not session.new and not session.deleted, "nothing pending"
    uow.rollback()  # SQLite: the write lock is released here
    locked = uow.meters.get_for_update(meter_id)  # waits for the tenant's rounds in flight
    if Definition.of(locked) != before:
        uow.rollback()
        return None  # redefined meanwhile: the swap rebuilds under the lock
    last_seq = event_reads.last_seq(session, uow.scope)
    code = locked.code
    uow.rollback()  # nothing of the session is touched again here: it would begin anew
    prepared = Prepared(meter_id, before, definition, last_seq, [])
    bind = session.get_bind()
    assert isinstance(bind, Engine)
    try:
        _read_into(prepared, bind, uow.scope, code, spec)
    except BaseException:
        prepared.close()
        raise
    return prepared


def _read_into(
    prepared: Prepared, engine: Engine, scope: TenantScope, code: str, spec: MeterSpec
) -> None:
    """The reading (step 2): the rows, spilled as made, and the events then held."""
    postgres = engine.dialect.name == "postgresql"
    with _reader(engine) as reader:
        prepared.sealed = rollup_store.sealed_before(reader)
        prepared.held = event_reads.held_seqs(reader, scope, code, prepared.last_seq)
        events = event_reads.meter_events(reader, scope, code, up_to_seq=prepared.last_seq)
        with closing(events):  # its server-side cursor closed before the connection goes
            for chunk in rollup_chunks(spec, code, events):
                prepared._write(
                    rollup_rows.new_rows(scope, chunk, sealed=prepared.sealed, postgres=postgres)
                )


@contextmanager
def _reader(engine: Engine) -> Iterator[Session]:
    """A session for the reading, one snapshot for all of it (the held events and the counted
    ones, so none is in both): SQLite's deferred ``BEGIN`` (no write lock), PostgreSQL's
    ``REPEATABLE READ`` (a transaction, which its server-side cursor needs too)."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
        else:
            connection.execution_options(**{READ_ONLY: True})
        with Session(bind=connection) as session:
            yield session
