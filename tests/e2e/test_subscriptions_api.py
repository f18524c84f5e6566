"""Subscriptions over HTTP: lifecycle, and preview == applied == `services.rating` output."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ratecard.core.billing import BillingConventions
from ratecard.core.money import RoundingMode
from ratecard.core.proration import ProrationMethod, ProrationPolicy
from ratecard.core.subscription_model import PlanRef
from ratecard.services import rating
from ratecard.services.catalog import PlanInput, document_of
from ratecard.services.plan_documents import load_plan
from tests.e2e.conftest import MAX, PRO, SEATS, START, Api, Tenant, customer_body

CONVENTIONS = BillingConventions(
    rounding=RoundingMode.HALF_UP,
    proration=ProrationPolicy(RoundingMode.HALF_UP, ProrationMethod.DAY),
)


def _plans(*documents: dict[str, Any]) -> dict[tuple[str, int], Any]:
    return {
        (d["code"], 1): load_plan(document_of(PlanInput.model_validate(d))).plan for d in documents
    }


def _line_key(line: dict[str, Any]) -> tuple[Any, ...]:
    period = line["period"]
    return (
        line["description"],
        line["amount"],
        line["kind"],
        None if period is None else (period["start_at"], period["end_at"]),
    )


def _core_key(line: Any) -> tuple[Any, ...]:
    period = line.period
    return (
        line.description,
        line.amount.format(),
        str(line.kind),
        None
        if period is None
        else (
            period.start_at.isoformat().replace("+00:00", "Z"),
            period.end_at.isoformat().replace("+00:00", "Z"),
        ),
    )


def _setup(api: Api, *plans: dict[str, Any], quantity: int = 1) -> tuple[Tenant, str]:
    tenant = api.tenant()
    for plan in plans:
        api.post("/v1/plans", tenant, plan)
    cus = api.post("/v1/customers", tenant, customer_body())
    sub = api.post(
        "/v1/subscriptions",
        tenant,
        {"customer_id": cus["id"], "plan_code": plans[0]["code"], "quantity": quantity},
    )
    return tenant, sub["id"]


def _day(day: int, month: int = 1) -> datetime:
    return START.replace(month=month, day=day)


def test_upgrade_now_preview_equals_applied_equals_rating(api: Api) -> None:
    tenant, sub_id = _setup(api, PRO, MAX)
    api.clock.set(_day(15))
    body = {"action": "change_plan", "plan_code": "max"}
    preview = api.post(f"/v1/subscriptions/{sub_id}/preview", tenant, body)
    assert [(line["kind"], line["amount"]) for line in preview["lines"]] == [
        ("proration_credit", "-54.84"),
        ("proration_debit", "164.52"),
    ]
    assert preview["total"] == "109.68"
    assert len(api.get(f"/v1/subscriptions/{sub_id}/timeline", tenant)["data"]) == 1  # unchanged

    applied = api.post(f"/v1/subscriptions/{sub_id}/change", tenant, {"plan_code": "max"})
    assert [_line_key(x) for x in applied["lines"]] == [_line_key(x) for x in preview["lines"]]
    assert applied["subscription"]["plan_code"] == "max"

    drafts = api.get(f"/v1/subscriptions/{sub_id}/drafts", tenant)["data"]
    at_change = [d for d in drafts if d["at"].startswith("2024-01-15")]
    assert [_line_key(x) for x in at_change[0]["lines"]] == [_line_key(x) for x in preview["lines"]]

    # The same scenario straight through services.rating (what `ratecard simulate` runs).
    spec = rating.SubscriptionSpec(sub_id, PlanRef("pro", 1), START, quantity=1)
    change = rating.ChangeSpec(_day(15), rating.Action.CHANGE_PLAN, plan=PlanRef("max", 1))
    direct = rating.subscription_drafts(
        spec,
        [change],
        _plans(PRO, MAX),
        usage=rating.no_usage,
        conventions=CONVENTIONS,
        until_at=_day(15),
    )
    direct_lines = [
        _core_key(line)
        for draft in direct
        if draft.at == _day(15)
        for line in draft.lines
        if line.kind.startswith("proration")
    ]
    assert direct_lines == [_line_key(x) for x in preview["lines"]]


def _parity(
    api: Api, tenant: Tenant, sub_id: str, preview: dict[str, Any], path: str, body: Any
) -> dict[str, Any]:
    seen = api.post(f"/v1/subscriptions/{sub_id}/preview", tenant, preview)
    applied = api.post(f"/v1/subscriptions/{sub_id}/{path}", tenant, body)
    assert [_line_key(x) for x in applied["lines"]] == [_line_key(x) for x in seen["lines"]]
    return applied


def test_every_change_matches_its_preview(api: Api) -> None:
    tenant, sub_id = _setup(api, SEATS, quantity=3)
    api.clock.set(_day(10))
    out = _parity(
        api, tenant, sub_id, {"action": "change_quantity", "quantity": 5}, "change", {"quantity": 5}
    )
    assert [x["amount"] for x in out["lines"]] == ["-21.29", "35.48"]
    assert out["subscription"]["quantity"] == 5
    api.clock.set(_day(12))
    out = _parity(api, tenant, sub_id, {"action": "pause"}, "pause", None)
    assert out["subscription"]["status"] == "paused"
    assert [x["kind"] for x in out["lines"]] == ["proration_credit"]
    api.clock.set(_day(20))
    out = _parity(api, tenant, sub_id, {"action": "resume"}, "resume", None)
    assert out["subscription"]["status"] == "active"
    api.clock.set(_day(21))
    out = _parity(
        api,
        tenant,
        sub_id,
        {"action": "cancel", "when": "period_end"},
        "cancel",
        {"when": "period_end"},
    )
    assert out["subscription"]["cancel_at_period_end"] is True
    assert out["lines"] == []
    api.clock.set(_day(22))
    out = _parity(api, tenant, sub_id, {"action": "reactivate"}, "reactivate", None)
    assert out["subscription"]["cancel_at_period_end"] is False
    api.clock.set(_day(25))
    out = _parity(
        api, tenant, sub_id, {"action": "cancel", "when": "now"}, "cancel", {"when": "now"}
    )
    assert out["subscription"]["status"] == "canceled"
    assert [x["kind"] for x in out["lines"]] == ["proration_credit"]
    timeline = api.get(f"/v1/subscriptions/{sub_id}/timeline", tenant)["data"]
    assert [e["command"] for e in timeline] == [
        "start",
        "change_quantity",
        "pause",
        "resume",
        "cancel",
        "reactivate",
        "cancel",
    ]
    # Nothing more is allowed on a canceled subscription: a 409 problem naming the code.
    api.clock.advance(timedelta(hours=1))
    refused = api.client.post(f"/v1/subscriptions/{sub_id}/pause", headers=tenant.admin)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "subscription_already_canceled"
    assert len(api.get(f"/v1/subscriptions/{sub_id}/timeline", tenant)["data"]) == 7


def test_trial_start_date_expand_and_period_end_change(api: Api) -> None:
    tenant = api.tenant()
    api.post("/v1/plans", tenant, PRO)
    api.post("/v1/plans", tenant, MAX)
    cus = api.post("/v1/customers", tenant, customer_body(timezone="Europe/Berlin"))
    sub = api.post(
        "/v1/subscriptions?expand=customer,plan",
        tenant,
        {
            "customer_id": cus["id"],
            "plan_code": "pro",
            "trial_days": 14,
            "start_at": "2024-01-01T00:00:00Z",
        },
    )
    assert sub["status"] == "trialing"
    assert sub["trial_ends_at"] == "2024-01-15T00:00:00Z"
    assert sub["timezone"] == "Europe/Berlin"
    assert sub["customer"]["id"] == cus["id"] and sub["plan"]["version"] == 1
    out = api.post(
        f"/v1/subscriptions/{sub['id']}/change", tenant, {"plan_code": "max", "when": "period_end"}
    )
    assert out["lines"] == []
    assert out["subscription"]["plan_code"] == "pro"
    assert out["subscription"]["pending_change"]["plan_code"] == "max"
    listed = api.get("/v1/subscriptions?expand=customer", tenant)["data"]
    assert listed[0]["customer"]["external_id"] == "acme"


def test_versions_and_migration(api: Api) -> None:
    tenant, sub_id = _setup(api, PRO)
    v2 = api.post(
        "/v1/plans/pro/versions",
        tenant,
        {
            **PRO,
            "publish": False,
            "charges": [{"code": "base", "model": "flat", "amount": "120.00"}],
        },
    )
    assert (v2["version"], v2["status"]) == (2, "draft")
    # A draft takes no subscriptions.
    api.clock.set(_day(2))
    refused = api.client.post(
        f"/v1/subscriptions/{sub_id}/migrate", json={"plan_version": 2}, headers=tenant.admin
    )
    assert refused.status_code == 422 and refused.json()["code"] == "plan_version_not_published"
    api.post("/v1/plans/pro/versions/2/publish", tenant)
    plan = api.get("/v1/plans/pro", tenant)
    assert (plan["latest_version"], plan["published_version"]) == (2, 2)
    # Version 1 is unchanged and the subscription stays on it until migrated.
    assert (
        api.get("/v1/plans/pro/versions/1", tenant)["document"]["charges"][0]["amount"] == "100.00"
    )
    assert api.get(f"/v1/subscriptions/{sub_id}", tenant)["plan_version"] == 1
    report = api.post("/v1/plans/pro/migrate", tenant, {"to_version": 2, "when": "now"})
    assert (report["migrated"], report["skipped"]) == (1, 0)
    assert api.get(f"/v1/subscriptions/{sub_id}", tenant)["plan_version"] == 2
    archived = api.post("/v1/plans/pro/versions/1/archive", tenant)
    assert archived["status"] == "archived"
    versions = api.get("/v1/plans/pro/versions", tenant)["data"]
    assert [(v["version"], v["status"]) for v in versions] == [(1, "archived"), (2, "published")]


def test_price_override_applies_to_the_customer(api: Api) -> None:
    tenant = api.tenant()
    api.post("/v1/plans", tenant, SEATS)
    cus = api.post("/v1/customers", tenant, customer_body())
    override = api.post(
        f"/v1/customers/{cus['id']}/price_overrides",
        tenant,
        {"plan_code": "team", "charge_code": "seats", "price": {"unit_price": "8.00"}},
    )
    assert override["price"] == {"unit_price": "8.00"}
    sub = api.post(
        "/v1/subscriptions", tenant, {"customer_id": cus["id"], "plan_code": "team", "quantity": 2}
    )
    drafts = api.get(f"/v1/subscriptions/{sub['id']}/drafts", tenant)["data"]
    assert [line["amount"] for line in drafts[0]["lines"]] == ["16.00"]
    bad = api.client.post(
        f"/v1/customers/{cus['id']}/price_overrides",
        json={"plan_code": "team", "charge_code": "seats", "price": {"unit_price": 8.5}},
        headers=tenant.admin,
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "body.price.unit_price"
    assert bad.json()["errors"][0]["code"] == "float_not_allowed"
    api.client.delete(f"/v1/price_overrides/{override['id']}", headers=tenant.admin)
    assert api.get(f"/v1/customers/{cus['id']}/price_overrides", tenant)["data"] == []
