"""A crossing a crash left unevaluated (the batch committed, its alerts never checked) fires
when the server starts again, once: `AlertService.recover`, run in the background at start
(`create_app(recover_alerts=True)`, as ``ratecard serve`` makes it)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.services.metering.ingestion import IngestionService
from ratecard.web.app import create_app
from tests.e2e.conftest import Api
from tests.e2e.metered_api import metered


def test_a_crossing_committed_but_never_evaluated_fires_at_the_next_start(api: Api) -> None:
    m = metered(api)
    alert = api.post(
        "/v1/alerts", m.tenant, {"customer_id": m.customer_id, "meter": "calls", "threshold": "2"}
    )
    tenant_id = api.get("/v1/tenant", m.tenant)["id"]
    # The store path alone, with no listeners: what a crash between commit and alerts leaves.
    bare = IngestionService(api.sessions, api.clock)
    events = [{"id": f"c-{i}", "type": "calls", "customer": "acme"} for i in range(3)]
    stored = bare.ingest(TenantScope(tenant_id, Mode.LIVE), events, actor="test")
    assert [str(r.status) for r in stored.results] == ["accepted"] * 3
    assert api.get("/v1/webhook_events", m.tenant)["data"] == []

    for _ in range(2):  # the second start finds the crossing fired: nothing more
        again = create_app(api.database.engine, api.clock, recover_alerts=True)
        with TestClient(again):
            assert again.state.alerts_recovered.wait(30)
        fired = api.get("/v1/webhook_events", m.tenant)["data"]
        assert [(f["type"], f["payload"]["alert_id"], f["payload"]["value"]) for f in fired] == [
            ("usage_alert.triggered", alert["id"], "3")
        ]


def test_an_app_made_without_recovery_checks_no_alert(api: Api) -> None:
    m = metered(api)
    api.post(
        "/v1/alerts", m.tenant, {"customer_id": m.customer_id, "meter": "calls", "threshold": "1"}
    )
    tenant_id = api.get("/v1/tenant", m.tenant)["id"]
    bare = IngestionService(api.sessions, api.clock)
    bare.ingest(
        TenantScope(tenant_id, Mode.LIVE), [{"id": "c", "type": "calls", "customer": "acme"}]
    )
    with TestClient(create_app(api.database.engine, api.clock)) as client:
        assert not client.app.state.alerts_recovered.is_set()  # type: ignore[attr-defined]
    assert api.get("/v1/webhook_events", m.tenant)["data"] == []
