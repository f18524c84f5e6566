"""The entitlement cache after plan and subscription changes, over HTTP, on both engines.

A check is answered from the cache (`services.metering.entitlements`); every route that changes
what a customer's plan grants drops the customer's cached entitlements, and only after its
commit. Dropped before, a check running meanwhile reads the old plan from the store and caches
it again, and the old answer stands until the TTL.

The "check running meanwhile" is made deterministic: `invalidate` is wrapped so that a check
runs right after each drop, as a concurrent request would (on another connection). Dropped after
the commit, that check caches the new plan; dropped before it, the old one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from ratecard.adapters.db.scope import TenantScope
from ratecard.services.metering.entitlements import Check, EntitlementService
from tests.e2e.conftest import START, Api, Tenant, customer_body
from tests.e2e.live import METERED
from tests.e2e.metered_api import metered, subscribed

#: Version 2 of the metered plan: ``sso`` is gone, ``api`` stays.
WITHOUT_SSO = {
    **METERED,
    "entitlements": [{"feature": "api", "type": "metered", "meter": "calls", "limit": "3"}],
}
NOT_ENTITLED = {"allowed": False, "reason": "not_entitled", "remaining": None, "notify": False}
ENTITLED = {"allowed": True, "reason": None, "remaining": None, "notify": False}


def _check(api: Api, tenant: Tenant, customer_id: str, feature: str) -> dict[str, Any]:
    body = api.get(f"/v1/customers/{customer_id}/entitlements/{feature}", tenant)
    assert (body["object"], body["customer_id"], body["feature"]) == (
        "entitlement_check",
        customer_id,
        feature,
    )
    return {k: body[k] for k in ("allowed", "reason", "remaining", "notify", "source")}


def _features(api: Api, tenant: Tenant, customer_id: str) -> list[str]:
    return [
        e["feature"] for e in api.get(f"/v1/customers/{customer_id}/entitlements", tenant)["data"]
    ]


@dataclass
class Racer:
    """After each drop of a customer's cached entitlements, a check of `feature` at once."""

    feature: str
    seen: list[tuple[str, Check]] = field(default_factory=list)


@pytest.fixture
def racer(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Racer]:
    service: EntitlementService = api.app.state.wiring.metering.entitlements
    drop = service.invalidate
    racer = Racer("sso")

    def drop_then_check(scope: TenantScope, customer_id: str) -> None:
        drop(scope, customer_id)
        racer.seen.append((customer_id, service.check(scope, customer_id, racer.feature)))

    monkeypatch.setattr(service, "invalidate", drop_then_check)
    yield racer


def test_plan_migration_now_drops_every_moved_customers_cached_entitlements(api: Api) -> None:
    m = metered(api)
    tenant = m.tenant
    moved = [m.customer_id, subscribed(api, tenant, "globex")[0]]
    stays, _ = subscribed(api, tenant, "initech", "basic")  # another plan: not migrated
    api.post("/v1/plans/metered/versions", tenant, WITHOUT_SSO)
    api.clock.set(START + timedelta(days=3))
    for customer_id in moved:
        assert _check(api, tenant, customer_id, "sso") == {**ENTITLED, "source": "store"}
        assert _check(api, tenant, customer_id, "sso") == {**ENTITLED, "source": "cache"}
    assert _check(api, tenant, stays, "sso") == {**NOT_ENTITLED, "source": "store"}

    report = api.post("/v1/plans/metered/migrate", tenant, {"to_version": 2, "when": "now"})

    assert (report["migrated"], report["skipped"], report["to_version"]) == (2, 0, 2)
    for customer_id in moved:
        assert _check(api, tenant, customer_id, "sso") == {**NOT_ENTITLED, "source": "store"}
        assert _features(api, tenant, customer_id) == ["api"]
        api_check = _check(api, tenant, customer_id, "api")
        assert (api_check["allowed"], api_check["remaining"]) == (True, "3")
    assert _check(api, tenant, stays, "sso") == {**NOT_ENTITLED, "source": "cache"}


def test_plan_migration_at_period_end_keeps_the_plan_until_then(api: Api) -> None:
    m = metered(api)
    tenant, customer_id = m.tenant, m.customer_id
    api.post("/v1/plans/metered/versions", tenant, WITHOUT_SSO)
    api.clock.set(START + timedelta(days=3))
    assert _check(api, tenant, customer_id, "sso")["allowed"] is True

    report = api.post("/v1/plans/metered/migrate", tenant, {"to_version": 2})

    assert report["migrated"] == 1
    assert _check(api, tenant, customer_id, "sso") == {**ENTITLED, "source": "store"}
    assert _features(api, tenant, customer_id) == ["api", "sso"]


def test_plan_migration_drops_the_cache_after_its_commit(api: Api, racer: Racer) -> None:
    m = metered(api)
    tenant, customer_id = m.tenant, m.customer_id
    api.post("/v1/plans/metered/versions", tenant, WITHOUT_SSO)
    api.clock.set(START + timedelta(days=3))
    assert _check(api, tenant, customer_id, "sso")["allowed"] is True
    racer.seen.clear()

    api.post("/v1/plans/metered/migrate", tenant, {"to_version": 2, "when": "now"})

    # The check run right after the drop read the migrated plan, and cached it.
    assert [(c, check.allowed, check.reason) for c, check in racer.seen] == [
        (customer_id, False, "not_entitled")
    ]
    assert _check(api, tenant, customer_id, "sso") == {**NOT_ENTITLED, "source": "cache"}


def test_plan_change_drops_the_cache_after_its_commit(api: Api, racer: Racer) -> None:
    m = metered(api)
    tenant, customer_id = m.tenant, m.customer_id
    api.clock.set(START + timedelta(days=3))
    assert _check(api, tenant, customer_id, "sso") == {**ENTITLED, "source": "cache"}
    racer.seen.clear()

    api.post(f"/v1/subscriptions/{m.subscription_id}/change", tenant, {"plan_code": "basic"})

    assert [(c, check.allowed, check.reason) for c, check in racer.seen] == [
        (customer_id, False, "not_entitled")
    ]
    assert _check(api, tenant, customer_id, "sso") == {**NOT_ENTITLED, "source": "cache"}


def test_new_subscription_drops_the_cache_after_its_commit(api: Api, racer: Racer) -> None:
    tenant = metered(api).tenant
    customer = api.post("/v1/customers", tenant, customer_body("newcomer"))
    assert _check(api, tenant, customer["id"], "sso") == {**NOT_ENTITLED, "source": "store"}
    assert _check(api, tenant, customer["id"], "sso") == {**NOT_ENTITLED, "source": "cache"}
    racer.seen.clear()

    api.post("/v1/subscriptions", tenant, {"customer_id": customer["id"], "plan_code": "metered"})

    assert [(c, check.allowed) for c, check in racer.seen] == [(customer["id"], True)]
    assert _check(api, tenant, customer["id"], "sso") == {**ENTITLED, "source": "cache"}
