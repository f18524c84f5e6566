"""A meter being redefined holds its tenant's ingestion only (PostgreSQL): the writer waits for
that tenant's meters at most `METER_LOCK_WAIT_MS`, answers its batches 503 ``ingestion_busy``
(retry), and goes on storing every other tenant's."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from tests.e2e.conftest import Api, customer_body
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


def test_a_release_of_held_events_waits_for_a_redefinition_and_rolls_up_under_the_new_one(
    api: Api,
) -> None:
    """A customer created while a meter is being redefined releases its held events after the
    redefinition committed, with the new definition: never a partial of the old one into the
    rebuilt rollups."""
    if api.database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes every writer: a release cannot meet a redefinition")
    m = metered(api, "Held")
    api.client.patch(
        "/v1/metering_policy", json={"unknown_customer": "hold"}, headers=m.tenant.admin
    )
    held = [{"id": "h-1", "type": "calls", "customer": "newco", "properties": {"n": "5"}}]
    assert api.post("/v1/events", m.tenant, held)["held"] == 1
    tenant_id = api.get("/v1/tenant", m.tenant)["id"]
    engine = api.database.engine
    created: list[dict[str, object]] = []

    def create_customer() -> None:
        created.append(api.post("/v1/customers", m.tenant, customer_body("newco")))

    with engine.connect() as redefining, redefining.begin():  # what a meter PATCH holds
        redefining.execute(
            sa.text(
                "UPDATE meters SET aggregation = 'sum', value_field = 'n' "
                "WHERE tenant_id = :t AND code = 'calls'"
            ),
            {"t": tenant_id},
        )
        blocker = redefining.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        releasing = threading.Thread(target=create_customer)
        releasing.start()
        deadline = time.monotonic() + 30
        while not blocked_by(engine, blocker):  # the release waits for the meter's lock
            assert releasing.is_alive(), created
            assert time.monotonic() < deadline, "the release never waited for the meter"
            releasing.join(0.01)
        assert not created
    releasing.join(30)
    assert created and created[0]["external_id"] == "newco"
    with engine.connect() as read:
        rollup = read.execute(
            sa.text(
                "SELECT event_count, value_count, value_sum FROM usage_rollups "
                "WHERE tenant_id = :t AND customer_id = :c AND meter_code = 'calls'"
            ),
            {"t": tenant_id, "c": created[0]["id"]},
        ).one()
    assert tuple(rollup) == (1, 1, 5)  # summed as the new definition has it


def blocked_by(engine: sa.Engine, pid: object) -> bool:
    """Whether a PostgreSQL backend waits on a lock the backend `pid` holds."""
    with engine.connect() as probe:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
        return bool(probe.execute(sa.text(waiting), {"pid": pid}).scalar())
