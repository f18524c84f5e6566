"""End-to-end fixtures: the real app over HTTP, on SQLite and on PostgreSQL.

Engines come from the integration fixtures (`tests/integration/conftest.py`): one migrated
database per engine per session; every test makes its own tenants, so tests never see each
other's data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db.engine import make_session_factory
from ratecard.adapters.db.scope import Mode, Role
from ratecard.services.tenancy import TenancyService
from ratecard.web.app import create_app
from ratecard.web.deps import RateLimit
from tests.integration.conftest import ENGINES, Database

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session", params=ENGINES)
def api_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    db = Database(request.param, tmp_path_factory.mktemp(f"api_{request.param}"))
    try:
        db.migrate()
        yield db
    finally:
        db.drop()


@dataclass
class Tenant:
    id: str
    keys: dict[tuple[Mode, Role], str] = field(default_factory=dict)

    def headers(self, role: Role = Role.ADMIN, mode: Mode = Mode.LIVE) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[(mode, role)]}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.headers()


@dataclass
class Api:
    app: FastAPI
    client: TestClient
    clock: FixedClock
    sessions: sessionmaker[Session]
    database: Database
    counter: list[int] = field(default_factory=lambda: [0])

    def tenant(self, name: str = "Acme", **settings: Any) -> Tenant:
        tenancy = TenancyService(self.sessions, self.clock)
        row = tenancy.create_tenant(name)
        tenant = Tenant(row.id)
        for mode in Mode:
            for role in Role:
                issued = tenancy.create_api_key(row.id, mode, role, actor="test")
                tenant.keys[(mode, role)] = issued.secret
        return tenant

    def post(self, path: str, tenant: Tenant, body: Any = None, **kwargs: Any) -> Any:
        response = self.client.post(path, json=body, headers=tenant.admin, **kwargs)
        assert response.status_code in (200, 201), (path, response.status_code, response.text)
        return response.json()

    def get(self, path: str, tenant: Tenant, **kwargs: Any) -> Any:
        response = self.client.get(path, headers=tenant.admin, **kwargs)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()


def make_api(database: Database, **kwargs: Any) -> Api:
    """The app on `database`, its group commit in the API process unless `ingest_writer` says
    otherwise (a writer process per test would start a child for each)."""
    clock = FixedClock(START)
    app = create_app(
        database.engine,
        clock,
        rate_limit=kwargs.pop("rate_limit", RateLimit()),
        ingest_writer=kwargs.pop("ingest_writer", "thread"),
    )
    client = TestClient(app, **kwargs)
    return Api(app, client, clock, make_session_factory(database.engine), database)


@pytest.fixture
def api(api_database: Database) -> Iterator[Api]:
    made = make_api(api_database)
    with made.client:
        yield made


@pytest.fixture
def tmp_sqlite(tmp_path: Path) -> Path:
    return tmp_path / "ratecard.db"


# --- documents shared by the tests -----------------------------------------------------------

PRO = {
    "code": "pro",
    "name": "Pro",
    "currency": "USD",
    "interval": "month",
    "charges": [{"code": "base", "model": "flat", "amount": "100.00"}],
    "publish": True,
}
MAX = {
    **PRO,
    "code": "max",
    "name": "Max",
    "charges": [{"code": "base", "model": "flat", "amount": "300.00"}],
}
SEATS = {
    "code": "team",
    "name": "Team",
    "currency": "USD",
    "interval": "month",
    "charges": [{"code": "seats", "model": "per_unit", "source": "seats", "unit_price": "10.00"}],
    "publish": True,
}


def customer_body(external_id: str = "acme", **fields: Any) -> dict[str, Any]:
    return {"external_id": external_id, "name": f"Customer {external_id}", **fields}
