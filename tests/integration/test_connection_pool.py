"""PostgreSQL's pooled connections: pinged before use only after sitting idle (`_ping_when_idle`).

SQLite has no server to lose a connection to; these run on PostgreSQL only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ratecard.adapters.db import engine as engine_module
from ratecard.adapters.db.engine import make_engine
from tests.integration.conftest import Database

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Database]:
    db = Database("postgres", tmp_path)
    try:
        yield db
    finally:
        db.drop()


def _counting_pings(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def _backend(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(sa.text("SELECT pg_backend_pid()")))


def _terminate(db: Database, pid: int) -> None:
    with db.engine.connect() as other:
        assert other.scalar(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}) is True


def test_a_connection_used_a_moment_ago_is_handed_out_without_a_ping(postgres, monkeypatch):
    monkeypatch.setattr(engine_module, "PING_IDLE_AFTER_NS", 60_000_000_000)
    engine = make_engine(postgres.url)
    pings = _counting_pings(engine, monkeypatch)
    try:
        first = _backend(engine)
        assert [_backend(engine) for _ in range(3)] == [first] * 3  # the same connection
        assert pings == []  # a new one, then one used a moment ago: no round trip for a ping
    finally:
        engine.dispose()


def test_an_idle_connection_is_pinged_and_replaced_when_the_server_dropped_it(
    postgres, monkeypatch
):
    monkeypatch.setattr(engine_module, "PING_IDLE_AFTER_NS", 0)  # every reuse counts as idle
    engine = make_engine(postgres.url)
    pings = _counting_pings(engine, monkeypatch)
    try:
        first = _backend(engine)
        _terminate(postgres, first)
        second = _backend(engine)  # the ping finds it dead: the pool makes a new one
        assert second != first
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_a_connection_dropped_within_the_idle_time_fails_once_then_the_pool_recovers(
    postgres, monkeypatch
):
    """The price of not pinging every checkout: a server that dropped a connection used a
    moment ago fails that connection's next statement; the pool then starts over."""
    monkeypatch.setattr(engine_module, "PING_IDLE_AFTER_NS", 60_000_000_000)
    engine = make_engine(postgres.url)
    try:
        first = _backend(engine)
        _terminate(postgres, first)
        with pytest.raises(sa.exc.DBAPIError) as failed:
            _backend(engine)
        assert failed.value.connection_invalidated
        assert _backend(engine) != first
    finally:
        engine.dispose()


@pytest.mark.parametrize("mode", ["force_generic_plan", "auto", "force_custom_plan"])
def test_each_connection_plans_as_the_settings_say(postgres, mode):
    """`Settings.pg_plan_cache_mode` on every connection, the read-only ones too; ``auto``
    leaves the server's default."""
    from ratecard.adapters.db.engine import read_only
    from ratecard.config import Settings

    engine = make_engine(postgres.url, Settings(pg_plan_cache_mode=mode))
    try:
        with engine.connect() as one, engine.connect() as two:  # two connections of the pool
            shown = [c.scalar(sa.text("SHOW plan_cache_mode")) for c in (one, two)]
        # Back from the pool (rolled back on return): the SET was committed.
        with read_only(sa.orm.sessionmaker(bind=engine))() as session:
            shown.append(session.scalar(sa.text("SHOW plan_cache_mode")))
        assert shown == [mode] * 3
    finally:
        engine.dispose()
