from __future__ import annotations

from tests.e2e.conftest import PRO, Api, customer_body


def test_smoke(api: Api) -> None:
    t = api.tenant()
    api.post("/v1/plans", t, PRO)
    cus = api.post("/v1/customers", t, customer_body())
    sub = api.post("/v1/subscriptions", t, {"customer_id": cus["id"], "plan_code": "pro"})
    assert sub["status"] == "active", sub
