"""Integration fixtures: every test here runs on SQLite (a temp file) and on PostgreSQL.

PostgreSQL comes from ``RATECARD_TEST_POSTGRES_URL`` (default: the local server, database
``test``). Each test session works in a fresh schema ``rc_test_<random>`` (set through
``search_path``) and drops it at the end, so runs never collide. If the server is unreachable the
PostgreSQL tests are skipped, unless ``RATECARD_REQUIRE_POSTGRES=1``, which makes them fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db.engine import make_engine, make_session_factory
from ratecard.adapters.db.schema import migrate

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _postgres_admin_url() -> str:
    url = os.environ.get("RATECARD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        probe = sa.create_engine(url, connect_args={"connect_timeout": 3}, poolclass=sa.NullPool)
        with probe.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        probe.dispose()
    except sa.exc.OperationalError as error:
        message = f"PostgreSQL unreachable at {url}: {error.orig}"
        if os.environ.get("RATECARD_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


class Database:
    """A fresh, migrated database (or schema) made for one engine kind."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self._admin: Engine | None = None
        if kind == "sqlite":
            self.url = f"sqlite:///{tmp / 'ratecard.db'}"
            self.schema = None
        else:
            admin_url = _postgres_admin_url()
            self.schema = f"rc_test_{secrets.token_hex(6)}"
            self._admin = sa.create_engine(admin_url, poolclass=sa.NullPool)
            with self._admin.begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            self.url = (
                make_url(admin_url)
                .update_query_dict({"options": f"-csearch_path={self.schema}"})
                .render_as_string(hide_password=False)
            )
        self.engine = make_engine(self.url)

    def migrate(self) -> str | None:
        return migrate(self.engine)

    def drop(self) -> None:
        self.engine.dispose()
        if self._admin is not None:
            with self._admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            self._admin.dispose()


@pytest.fixture(scope="session", params=ENGINES)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    db = Database(request.param, tmp_path_factory.mktemp(f"db_{request.param}"))
    try:
        db.migrate()
        yield db
    finally:
        db.drop()


@pytest.fixture(params=ENGINES)
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty, unmigrated database for migration tests."""
    db = Database(request.param, tmp_path)
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture
def engine(database: Database) -> Engine:
    return database.engine


@pytest.fixture
def sessions(database: Database) -> sessionmaker[Session]:
    return make_session_factory(database.engine)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2024, 1, 31, 12, 0, tzinfo=UTC))
