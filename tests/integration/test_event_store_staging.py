"""PostgreSQL stages events and rollup rows in session-local tables, made if need be in each
transaction and emptied by each commit: two uses in one transaction, and a transaction rolled
back, leave nothing behind (SQLite writes straight, and runs the same checks)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from ratecard.adapters.db import event_store, rollup_rows, rollup_store
from ratecard.core.rollups import Partial
from tests.integration.factories import uow
from tests.integration.metering_setup import PERIOD_END, PERIOD_START, setup


def _new(m, event_id: str) -> event_store.NewEvent:
    at = PERIOD_START + timedelta(days=3)
    return event_store.NewEvent(event_id, "api_calls", "acme", m.customer_id, at, {})


def _partial(count: int) -> Partial:
    return Partial(count, 0, Decimal(0), None, None, None, None, 0)


def _rollup_count(m) -> int:
    with m.sessions() as session:
        rows = rollup_rows.read_rollups(
            session, m.scope, m.customer_id, "api_calls", from_hour=None, to_hour=PERIOD_END
        )
    return sum(partial.event_count for _, _, partial in rows)


def test_two_uses_in_one_transaction_store_each_row_once(sessions):
    m = setup(sessions)
    hour = PERIOD_START + timedelta(days=3)
    key = (m.customer_id, "api_calls", hour, ())
    with uow(m.sessions, m.scope, m.clock) as work:
        first = event_store.insert_events(work.session, m.scope, [_new(m, "a")], m.clock.now())
        second = event_store.insert_events(
            work.session, m.scope, [_new(m, "b"), _new(m, "a")], m.clock.now()
        )
        rollup_store.add_rollups(work.session, m.scope, [(*key, _partial(1))])
        rollup_store.add_rollups(work.session, m.scope, [(*key, _partial(2))])
        work.commit()
    assert set(first) == {"a"} and set(second) == {"b"}  # "a" again is a duplicate
    assert first["a"] < second["b"]
    assert _rollup_count(m) == 3  # 1 + 2, the first partial not merged twice


def test_a_rolled_back_transaction_leaves_the_next_one_working(sessions):
    """The first use of a connection (a new engine's) creates the staging tables, and rolls
    back: they are gone, and the next transaction on that connection makes them again."""
    from ratecard.adapters.db.engine import make_engine, make_session_factory

    m = setup(sessions)
    engine = make_engine(sessions.kw["bind"].url.render_as_string(hide_password=False))
    try:
        fresh = make_session_factory(engine)
        hour = PERIOD_START + timedelta(days=3)
        key = (m.customer_id, "api_calls", hour, ())
        for attempt in range(2):  # the first rolled back
            with uow(fresh, m.scope, m.clock) as work:
                event_store.insert_events(work.session, m.scope, [_new(m, "x")], m.clock.now())
                rollup_store.add_rollups(work.session, m.scope, [(*key, _partial(5))])
                if attempt:
                    work.commit()
        for n in range(2):  # then committed rounds on the same pooled connection
            with uow(fresh, m.scope, m.clock) as work:
                stored = event_store.insert_events(
                    work.session, m.scope, [_new(m, "x"), _new(m, f"y{n}")], m.clock.now()
                )
                rollup_store.add_rollups(work.session, m.scope, [(*key, _partial(1))])
                work.commit()
            assert set(stored) == {f"y{n}"}
    finally:
        engine.dispose()
    assert _rollup_count(m) == 7
