"""Entitlement checks: kinds, exceed actions, invalidation (in-process, Redis), fallbacks."""

from __future__ import annotations

import os
import secrets
from decimal import Decimal

import pytest
from sqlalchemy.exc import OperationalError

from ratecard.adapters.cache import CacheUnavailable, InProcessCache, RedisCache
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.core.catalog import EntitlementKind, ExceedAction
from ratecard.services.metering.alerts import outbox
from ratecard.services.metering.entitlements import EntitlementService, EntitlementView
from tests.integration.metering_setup import event, setup


def _redis() -> RedisCache:
    cache = RedisCache("redis://127.0.0.1:6379/15")
    try:
        cache.get(f"probe:{secrets.token_hex(4)}", "x")
    except CacheUnavailable as exc:
        if os.environ.get("RATECARD_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis unavailable: {exc}")
        pytest.skip(f"Redis unavailable: {exc}")
    return cache


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_checks_follow_usage_and_invalidation(sessions, cache_kind):
    m = setup(sessions)
    cache = InProcessCache() if cache_kind == "memory" else _redis()
    service = EntitlementService(m.sessions, m.clock, cache=cache)
    m.ingestion.listeners.append(service.on_ingested)
    cid = m.customer_id
    assert service.check(m.scope, cid, "sso").allowed
    assert service.check(m.scope, cid, "sso").source == "cache"
    assert service.check(m.scope, cid, "seats", Decimal(5)).allowed
    denied = service.check(m.scope, cid, "seats", Decimal(6))
    assert (denied.allowed, denied.reason) == (False, "limit_exceeded")
    assert service.check(m.scope, cid, "nope").reason == "not_entitled"
    assert service.check(m.scope, cid, "api", Decimal(1)).remaining == Decimal(1000)
    m.ingest(*[event(i) for i in range(10)])  # usage invalidates the customer's entry
    api = service.check(m.scope, cid, "api", Decimal(1))
    assert (api.allowed, api.remaining, api.source) == (True, Decimal(990), "store")
    assert not service.check(m.scope, cid, "api", Decimal(991)).allowed
    m.ingest(event("t", meter="tokens", tokens="600", model="a"))
    soft = service.check(m.scope, cid, "tokens", Decimal(1))
    assert (soft.allowed, soft.notify, soft.reason) == (True, True, "limit_exceeded")
    listed = {v.feature: v for v in service.list(m.scope, cid)}
    assert listed["api"].remaining == Decimal(990) and listed["tokens"].remaining == 0


def test_store_down_fails_open_or_closed_per_feature(sessions, monkeypatch):
    m = setup(sessions)
    service = EntitlementService(m.sessions, m.clock)
    service.list(m.scope, m.customer_id)  # learns each feature's fallback (api: closed)
    service.invalidate(m.scope, m.customer_id)

    def down(*_a, **_k):
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(service, "_compute", down)
    assert service.check(m.scope, m.customer_id, "sso").allowed  # fails open (default)
    closed = service.check(m.scope, m.customer_id, "api")
    assert (closed.allowed, closed.reason, closed.source) == (
        False,
        "store_unavailable",
        "fallback",
    )


def test_redis_down_falls_back_to_the_store(sessions):
    m = setup(sessions)
    service = EntitlementService(m.sessions, m.clock, cache=RedisCache("redis://127.0.0.1:1/0"))
    check = service.check(m.scope, m.customer_id, "sso")
    assert (check.allowed, check.source) == (True, "store")


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_a_restarted_process_knows_a_closed_feature_while_the_store_is_down(
    sessions, monkeypatch, cache_kind
):
    """A fail-closed feature stays closed for a process that never read it, when the cache it
    shares (Redis) kept its fallback; an in-process cache dies with its process (open)."""
    m = setup(sessions)
    cache = InProcessCache() if cache_kind == "memory" else _redis()
    EntitlementService(m.sessions, m.clock, cache=cache).list(m.scope, m.customer_id)
    restarted = EntitlementService(
        m.sessions, m.clock, cache=InProcessCache() if cache_kind == "memory" else cache
    )
    restarted.invalidate(m.scope, m.customer_id)

    def down(*_a, **_k):
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(restarted, "_compute", down)
    api = restarted.check(m.scope, m.customer_id, "api")
    assert (api.reason, api.source) == ("store_unavailable", "fallback")
    assert api.allowed is (cache_kind == "memory")
    assert restarted.check(m.scope, m.customer_id, "sso").allowed  # open, as its plan says


def test_a_cache_that_cannot_keep_a_fallback_is_tried_again(sessions, monkeypatch):
    m = setup(sessions)
    cache = InProcessCache()
    service = EntitlementService(m.sessions, m.clock, cache=cache)
    puts: list[str] = []
    real_put = cache.put

    def failing_put(key, values, **kwargs):
        puts.append(key)
        if key.startswith("entfail:"):
            raise CacheUnavailable("down")
        return real_put(key, values, **kwargs)

    monkeypatch.setattr(cache, "put", failing_put)
    service.list(m.scope, m.customer_id)
    first = sorted(k for k in puts if k.startswith("entfail:"))
    monkeypatch.setattr(cache, "put", real_put)
    service.list(m.scope, m.customer_id)
    assert cache.get(first[0], "open") in ("0", "1")  # kept on the second load
    puts.clear()
    monkeypatch.setattr(cache, "put", failing_put)
    service.list(m.scope, m.customer_id)  # kept less than a day ago: not written again
    assert [k for k in puts if k.startswith("entfail:")] == []


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_an_answer_read_while_an_invalidation_landed_is_not_cached(
    sessions, monkeypatch, cache_kind
):
    """A check reads the store while the usage or the plan changes and the change drops the
    customer's entry: what it read may be the old state, so it is answered but not cached."""
    m = setup(sessions)
    cache = InProcessCache() if cache_kind == "memory" else _redis()
    service = EntitlementService(m.sessions, m.clock, cache=cache)
    compute = service._compute

    def racing(scope, customer_id):
        read = compute(scope, customer_id)
        service.invalidate(scope, customer_id)  # a change committed meanwhile
        return read

    monkeypatch.setattr(service, "_compute", racing)
    assert service.check(m.scope, m.customer_id, "sso").source == "store"
    monkeypatch.setattr(service, "_compute", compute)
    assert service.check(m.scope, m.customer_id, "sso").source == "store"  # read again
    assert service.check(m.scope, m.customer_id, "sso").source == "cache"


def test_redis_versions_refuse_a_put_read_before_a_drop():
    cache = _redis()
    key = f"test:{secrets.token_hex(6)}"
    seen = cache.version(key)
    assert seen == 0
    assert cache.put(key, {"f": "1", "g": "2"}, ttl_seconds=60, if_version=seen)
    assert (cache.get(key, "f"), cache.get(key, "g")) == ("1", "2")
    cache.drop(key)
    assert cache.version(key) == 1 and cache.get(key, "f") is None
    assert not cache.put(key, {"f": "stale"}, ttl_seconds=60, if_version=seen)
    assert cache.get(key, "f") is None
    assert cache.put(key, {"f": "3"}, ttl_seconds=60, if_version=1)
    assert cache.put(key, {"f": "4"}, ttl_seconds=60)
    assert cache.get(key, "f") == "4"
    assert 0 < cache._redis.ttl(key) <= 60  # the hash expires
    assert 0 < cache._redis.ttl(f"{key}:v") <= 24 * 3600  # and so does its version


def test_a_soft_limit_exceeded_notifies_once_a_period(sessions):
    """Over a soft limit the check allows and sets `notify`, and the tenant gets one
    ``entitlement.limit_exceeded`` webhook event for the customer, feature and period, however
    often it is checked, by however many processes."""
    m = setup(sessions)
    service = EntitlementService(m.sessions, m.clock)
    m.ingestion.listeners.append(service.on_ingested)
    within = service.check(m.scope, m.customer_id, "tokens", Decimal(1))
    assert (within.allowed, within.notify) == (True, False)
    m.ingest(event("t", meter="tokens", tokens="600", model="a"))
    for checker in (service, service, EntitlementService(m.sessions, m.clock)):
        over = checker.check(m.scope, m.customer_id, "tokens", Decimal(1))
        assert (over.allowed, over.notify, over.reason) == (True, True, "limit_exceeded")
    with m.sessions() as session:
        events = outbox(session, m.scope)
    assert [(e.event_type, e.payload) for e in events] == [
        (
            "entitlement.limit_exceeded",
            {
                "customer_id": m.customer_id,
                "feature": "tokens",
                "limit": "500",
                "usage": "600",
                "on_exceed": "allow_and_notify",
                "allowed": "true",
                "period_end": "2024-02-01T00:00:00Z",
            },
        )
    ]


def test_a_hash_an_older_version_cached_is_still_read(sessions):
    """Before views carried their period's end, the hash marked a computed customer with
    ``"1"``: during a rolling deploy such a hash answers as before, no error."""
    m = setup(sessions)
    cache = InProcessCache()
    service = EntitlementService(m.sessions, m.clock, cache=cache)
    old_view = (
        '{"feature": "sso", "kind": "boolean", "enabled": true, "limit": null, "usage": null,'
        ' "remaining": null, "on_exceed": "deny", "fail_open": true}'
    )
    cache.put(
        f"ent:{m.scope.tenant_id}:{m.scope.mode}:{m.customer_id}",
        {"sso": old_view, "__all__": "1"},
        ttl_seconds=60,
    )
    sso = service.check(m.scope, m.customer_id, "sso")
    assert (sso.allowed, sso.source) == (True, "cache")
    nope = service.check(m.scope, m.customer_id, "nope")
    assert (nope.allowed, nope.reason, nope.source) == (False, "not_entitled", "cache")


def test_fallbacks_are_kept_per_mode(sessions, monkeypatch):
    """A live feature closed and a test one of the same name open: each mode keeps its own."""
    m = setup(sessions)
    service = EntitlementService(m.sessions, m.clock)
    live, test = m.scope, TenantScope(m.scope.tenant_id, Mode.TEST)

    def view(fail_open: bool) -> EntitlementView:
        return EntitlementView(
            "api",
            EntitlementKind.METERED,
            True,
            Decimal(1),
            None,
            None,
            ExceedAction.DENY,
            fail_open,
        )

    service._remember_fallbacks(live, [view(False)])
    service._remember_fallbacks(test, [view(True)])
    restarted = EntitlementService(m.sessions, m.clock, cache=service.cache)
    for checker in (service, restarted):  # in the process, then from the cache
        assert (checker._fails_open(live, "api"), checker._fails_open(test, "api")) == (False, True)
