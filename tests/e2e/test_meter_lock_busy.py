"""A meter being redefined holds its tenant's ingestion only (PostgreSQL): the writer waits for
that tenant's meters at most `METER_LOCK_WAIT_MS`, answers its batches 503 ``ingestion_busy``
(retry), and goes on storing every other tenant's."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.e2e.conftest import Api
from tests.e2e.metered_api import metered


def test_a_locked_meter_makes_its_tenant_retry_and_no_other(api: Api) -> None:
    if api.database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's one write lock holds every tenant while a meter is redefined")
    a, b = metered(api, "A"), metered(api, "B")
    tenant_a = api.get("/v1/tenant", a.tenant)["id"]
    event = [{"id": "e-1", "type": "calls", "customer": "acme"}]
    lock = "SELECT id FROM meters WHERE tenant_id = :t AND code = 'calls' FOR UPDATE"
    engine = api.database.engine
    with engine.connect() as redefining, redefining.begin():  # what a meter PATCH holds
        redefining.execute(sa.text(lock), {"t": tenant_a})
        busy = api.client.post("/v1/events", json=event, headers=a.tenant.admin)
        assert busy.status_code == 503, busy.text
        assert busy.json()["code"] == "ingestion_busy"
        assert "being redefined" in busy.json()["detail"]
        assert int(busy.headers["Retry-After"]) >= 1
        other = api.client.post("/v1/events", json=event, headers=b.tenant.admin)
        assert other.status_code == 200, other.text
        assert other.json()["accepted"] == 1
    assert api.get("/v1/events", a.tenant)["data"] == []  # nothing of A's was stored
    again = api.client.post("/v1/events", json=event, headers=a.tenant.admin)
    assert (again.status_code, again.json()["accepted"]) == (200, 1)
