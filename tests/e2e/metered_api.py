"""A metered tenant on the `api` fixture (the app in-process, both engines), and the checks the
metering tests share: a problem document naming its fields, and the events a tenant stored.

    >>> m = metered(api)                                        # doctest: +SKIP
    >>> m.tenant, m.customer_id, m.subscription_id              # doctest: +SKIP

The tenant has the meters ``calls`` (count) and ``tokens`` (sum of ``tokens``), the plans
``metered`` (entitlements ``api``: 3 calls a period, ``sso``) and ``basic`` (none) of
`tests.e2e.live`, and the customer ``acme`` on ``metered`` since the clock's now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.conftest import Api, Tenant, customer_body
from tests.e2e.live import BASIC, METERED


@dataclass(frozen=True, slots=True)
class Metered:
    tenant: Tenant
    customer_id: str
    subscription_id: str


def metered(api: Api, name: str = "Metered", **customer: Any) -> Metered:
    tenant = api.tenant(name)
    api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    api.post(
        "/v1/meters", tenant, {"code": "tokens", "aggregation": "sum", "value_field": "tokens"}
    )
    api.post("/v1/plans", tenant, METERED)
    api.post("/v1/plans", tenant, BASIC)
    return Metered(tenant, *subscribed(api, tenant, "acme", **customer))


def subscribed(
    api: Api, tenant: Tenant, external_id: str, plan_code: str = "metered", **customer: Any
) -> tuple[str, str]:
    """A new customer on `plan_code` since now: (customer id, subscription id)."""
    created = api.post("/v1/customers", tenant, customer_body(external_id, **customer))
    sub = api.post(
        "/v1/subscriptions", tenant, {"customer_id": created["id"], "plan_code": plan_code}
    )
    return str(created["id"]), str(sub["id"])


def problem(response: httpx.Response, status: int, code: str) -> list[str | None]:
    """Assert `response` is a problem+json document of `status` and `code`; its fields."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    assert body["type"] == f"https://ratecard.dev/problems/{code}", body
    assert body["errors"], body
    return [e["field"] for e in body["errors"]]


def stored_events(api: Api, tenant: Tenant) -> list[tuple[str, str]]:
    """Every event the tenant stored (live mode), as (id, status), latest received first."""
    found: list[tuple[str, str]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = api.get("/v1/events", tenant, params=params)
        found += [(e["id"], e["status"]) for e in page["data"]]
        if not page["has_more"]:
            return found
        params["starting_after"] = page["next_cursor"]
