"""Tenant administration over HTTP: API keys, tenant settings, roles (403, audited)."""

from __future__ import annotations

from typing import Any

from ratecard.adapters.db.scope import Mode, Role
from ratecard.services import audit
from tests.e2e.conftest import Api, Tenant


def _fields(response: Any) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    return sorted(e["field"] for e in response.json()["errors"])


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _keys(api: Api, tenant: Tenant) -> list[tuple[str, str, str | None]]:
    """The keys as the live admin lists them (without ``last_used_at``, which use moves)."""
    rows = api.get("/v1/api_keys", tenant)["data"]
    return [(row["id"], row["role"], row["revoked_at"]) for row in rows]


def _denials(api: Api, tenant: Tenant) -> list[Any]:
    return [
        e for e in audit.entries(api.sessions, tenant.id, limit=1000) if e.action == "auth.denied"
    ]


def test_api_key_is_shown_once_listed_without_secret_and_revocable(api: Api) -> None:
    tenant = api.tenant()
    made = api.post("/v1/api_keys", tenant, {"name": "ci", "role": "billing", "mode": "test"})
    secret = made["secret"]
    assert secret.startswith("rk_test_") and made["prefix"] == secret[: len(made["prefix"])]
    assert (made["name"], made["role"], made["mode"]) == ("ci", "billing", "test")
    assert made["revoked_at"] is None and made["last_used_at"] is None
    live = api.post("/v1/api_keys", tenant, {"name": "prod", "role": "read_only"})
    assert live["secret"].startswith("rk_live_") and live["mode"] == "live"

    # The new key works, in its own mode and role.
    assert api.client.get("/v1/customers", headers=_bearer(secret)).status_code == 200
    listed = api.client.get("/v1/api_keys", headers=tenant.admin)
    assert listed.status_code == 200
    assert secret not in listed.text and live["secret"] not in listed.text
    rows = {row["id"]: row for row in listed.json()["data"]}
    assert set(rows[made["id"]]) == {
        "id", "object", "name", "role", "mode", "prefix", "created_at", "revoked_at",
        "last_used_at",
    }  # fmt: skip
    assert rows[made["id"]]["last_used_at"] is not None  # it was just used
    assert "secret_hash" not in listed.text

    revoked = api.post(f"/v1/api_keys/{made['id']}/revoke", tenant)
    assert revoked["revoked_at"] is not None
    refused = api.client.get("/v1/customers", headers=_bearer(secret))
    assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
    # Revoking twice is harmless; an unknown id is a 404.
    assert api.post(f"/v1/api_keys/{made['id']}/revoke", tenant)["revoked_at"] is not None
    missing = api.client.post("/v1/api_keys/ak_nope/revoke", headers=tenant.admin)
    assert missing.status_code == 404


def test_test_mode_admin_manages_test_keys_only(api: Api) -> None:
    tenant = api.tenant()
    test_admin = tenant.headers(Role.ADMIN, Mode.TEST)
    live = api.post("/v1/api_keys", tenant, {"name": "prod", "role": "billing"})
    before = _keys(api, tenant)
    refused = api.client.post(
        "/v1/api_keys", json={"name": "x", "role": "admin", "mode": "live"}, headers=test_admin
    )
    assert refused.status_code == 422 and _fields(refused) == ["body.mode"]
    listed = api.client.get("/v1/api_keys", headers=test_admin).json()["data"]
    assert {row["mode"] for row in listed} == {"test"}
    hidden = api.client.post(f"/v1/api_keys/{live['id']}/revoke", headers=test_admin)
    assert hidden.status_code == 404
    assert _keys(api, tenant) == before  # nothing changed


def test_idempotent_replay_never_shows_or_stores_the_secret(api: Api) -> None:
    tenant = api.tenant()
    headers = {**tenant.admin, "Idempotency-Key": "key-1"}
    body = {"name": "ci", "role": "read_only"}
    first = api.client.post("/v1/api_keys", json=body, headers=headers)
    again = api.client.post("/v1/api_keys", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["secret"].startswith("rk_live_")
    assert again.json()["secret"] is None and again.json()["id"] == first.json()["id"]


def test_bad_key_input_names_every_field_and_changes_nothing(api: Api) -> None:
    tenant = api.tenant()
    before = _keys(api, tenant)
    bad = api.client.post(
        "/v1/api_keys", json={"name": "", "role": "owner", "mode": "prod"}, headers=tenant.admin
    )
    assert bad.status_code == 422
    assert _fields(bad) == ["body.mode", "body.name", "body.role"]
    assert _keys(api, tenant) == before


def test_tenant_settings_read_patch_validate_and_audit(api: Api) -> None:
    tenant = api.tenant()
    got = api.get("/v1/tenant", tenant)
    assert (got["id"], got["default_currency"], got["rounding_mode"]) == (
        tenant.id,
        "USD",
        "half_up",
    )
    patch = {
        "default_currency": "eur",
        "timezone": "Europe/Berlin",
        "rounding_mode": "half_even",
        "proration_convention": "by_second",
        "net_terms_days": 15,
        "invoice_number_prefix": "ACME-",
        "branding": {"primary_color": "#112233"},
    }
    changed = api.client.patch("/v1/tenant", json=patch, headers=tenant.admin)
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert {k: after[k] for k in patch} == {**patch, "default_currency": "EUR"}
    assert api.get("/v1/tenant", tenant) == after
    updates = [
        e
        for e in audit.entries(api.sessions, tenant.id, limit=1000)
        if e.action == "tenant.updated"
    ]
    assert updates and updates[-1].before is not None and updates[-1].after is not None
    assert (updates[-1].before["timezone"], updates[-1].after["timezone"]) == (
        "UTC",
        "Europe/Berlin",
    )
    # New customers take the new defaults.
    cus = api.post("/v1/customers", tenant, {"external_id": "c", "name": "C"})
    assert (cus["currency"], cus["timezone"]) == ("EUR", "Europe/Berlin")

    bad = api.client.patch(
        "/v1/tenant",
        json={
            "default_currency": "XYZ",
            "timezone": "Mars/Base",
            "rounding_mode": "sideways",
            "proration_convention": "weekly",
            "net_terms_days": 400,
            "invoice_number_prefix": "no spaces",
            "color": "red",
        },
        headers=tenant.admin,
    )
    assert bad.status_code == 422
    assert _fields(bad) == [
        "body.color",
        "body.default_currency",
        "body.invoice_number_prefix",
        "body.net_terms_days",
        "body.proration_convention",
        "body.rounding_mode",
        "body.timezone",
    ]
    null = api.client.patch("/v1/tenant", json={"timezone": None}, headers=tenant.admin)
    assert null.status_code == 422 and _fields(null) == ["body.timezone"]
    assert api.get("/v1/tenant", tenant) == after


def test_other_roles_get_403_and_the_attempt_is_audited(api: Api) -> None:
    tenant = api.tenant()
    before = _keys(api, tenant)
    calls = [
        ("GET", "/v1/api_keys", None),
        ("POST", "/v1/api_keys", {"name": "x", "role": "admin"}),
        ("POST", f"/v1/api_keys/{before[0][0]}/revoke", None),
        ("GET", "/v1/tenant", None),
        ("PATCH", "/v1/tenant", {"net_terms_days": 1}),
    ]
    for role in (Role.BILLING, Role.READ_ONLY, Role.INGEST):
        for method, path, body in calls:
            response = api.client.request(method, path, json=body, headers=tenant.headers(role))
            assert response.status_code == 403, (role, method, path, response.text)
            assert response.json()["code"] == "forbidden"
    denied = _denials(api, tenant)
    assert len(denied) == 3 * len(calls)
    assert {e.after["target"] for e in denied if e.after} == {
        f"{method} {path}" for method, path, _ in calls
    }
    assert _keys(api, tenant) == before
    assert api.get("/v1/tenant", tenant)["net_terms_days"] == 30


def test_test_clock_moves_forward_only_and_is_test_mode_only(api: Api) -> None:
    tenant = api.tenant()
    test = tenant.headers(Role.ADMIN, Mode.TEST)
    clock = api.client.get("/v1/test_clock", headers=test).json()
    assert (clock["now_at"], clock["frozen"]) == ("2024-01-01T00:00:00Z", False)
    moved = api.client.post(
        "/v1/test_clock/advance", json={"to": "2024-02-01T00:00:00Z"}, headers=test
    )
    assert moved.status_code == 200 and moved.json()["now_at"] == "2024-02-01T00:00:00Z"
    seconds = 1706745600 + 86400  # 2024-02-02T00:00:00Z
    moved = api.client.post("/v1/test_clock/advance", json={"to": seconds}, headers=test)
    assert moved.json() == {
        "object": "test_clock",
        "now_at": "2024-02-02T00:00:00Z",
        "frozen": True,
    }
    back = api.client.post(
        "/v1/test_clock/advance", json={"to": "2024-02-01T00:00:00Z"}, headers=test
    )
    assert back.status_code == 422 and _fields(back) == ["body.to"]
    for bad in ("tomorrow", "2024-03-01T00:00:00", -5, 1.5):
        refused = api.client.post("/v1/test_clock/advance", json={"to": bad}, headers=test)
        assert refused.status_code == 422, (bad, refused.text)
        assert {f.split("[")[0] for f in _fields(refused)} <= {"body.to"}, refused.text
    assert api.client.get("/v1/test_clock", headers=test).json()["now_at"] == "2024-02-02T00:00:00Z"
    # The real clock moving on does not move a frozen test clock; live keys see no test clock.
    api.clock.set(api.clock.now().replace(year=2025))
    assert api.client.get("/v1/test_clock", headers=test).json()["now_at"] == "2024-02-02T00:00:00Z"
    for method, path in (("GET", "/v1/test_clock"), ("POST", "/v1/test_clock/advance")):
        live = api.client.request(method, path, json={"to": seconds}, headers=tenant.admin)
        assert live.status_code == 404 and live.json()["code"] == "not_found"
    # Reading is for any reading role; moving it is a billing write.
    reader = tenant.headers(Role.READ_ONLY, Mode.TEST)
    assert api.client.get("/v1/test_clock", headers=reader).status_code == 200
    denied = api.client.post("/v1/test_clock/advance", json={"to": seconds}, headers=reader)
    assert denied.status_code == 403
