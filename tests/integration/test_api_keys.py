"""API keys: shown once, hashed at rest, revocable; roles decide what a key may do."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
import sqlalchemy as sa

from ratecard.adapters.db.models import ApiKeyRow
from ratecard.adapters.db.scope import Mode, Role, TenantScope
from ratecard.core.errors import ErrorCode, Forbidden, NotFound, ValidationFailed
from ratecard.services import audit
from ratecard.services.tenancy import Action, TenancyService, TenantSettings, allowed

from .factories import uow


@pytest.fixture
def tenancy(sessions, clock):
    return TenancyService(sessions, clock)


def test_tenant_is_created_with_settings(tenancy):
    tenant = tenancy.create_tenant(
        "Acme", TenantSettings(default_currency="EUR", timezone="Europe/Berlin", net_terms_days=15)
    )
    stored = tenancy.get_tenant(tenant.id)
    assert (stored.default_currency, stored.timezone, stored.net_terms_days) == (
        "EUR",
        "Europe/Berlin",
        15,
    )
    assert TenantSettings.of(stored).rounding_mode == "half_up"


def test_bad_settings_report_every_problem(tenancy):
    with pytest.raises(ValidationFailed) as caught:
        tenancy.create_tenant(
            "Acme", TenantSettings(default_currency="XXX", timezone="Mars/Base", net_terms_days=-1)
        )
    fields = {p.field for p in caught.value.problems}
    assert fields == {"default_currency", "timezone", "net_terms_days"}


def test_key_secret_is_shown_once_and_stored_hashed(tenancy, sessions):
    tenant = tenancy.create_tenant("Acme")
    issued = tenancy.create_api_key(tenant.id, Mode.LIVE, Role.ADMIN, actor="founder")
    assert issued.secret.startswith("rk_live_") and len(issued.secret) >= 40
    assert issued.secret not in repr(issued)
    assert issued.secret.startswith(issued.prefix)
    with sessions() as session:
        row = session.get(ApiKeyRow, issued.key_id)
        assert row is not None
        assert row.secret_hash == hashlib.sha256(issued.secret.encode()).hexdigest()
        every_value = " ".join(
            str(v) for v in session.execute(sa.select(ApiKeyRow.__table__)).one()
        )
        assert issued.secret not in every_value
    test_key = tenancy.create_api_key(tenant.id, Mode.TEST, Role.READ_ONLY, actor="founder")
    assert test_key.secret.startswith("rk_test_")


def test_authenticate_resolves_exactly_one_tenant_and_mode(tenancy, clock):
    tenant = tenancy.create_tenant("Acme")
    issued = tenancy.create_api_key(tenant.id, Mode.TEST, Role.BILLING, actor="founder")
    principal = tenancy.authenticate(issued.secret)
    assert principal is not None
    assert (principal.tenant_id, principal.mode, principal.role, principal.key_id) == (
        tenant.id,
        Mode.TEST,
        Role.BILLING,
        issued.key_id,
    )
    assert principal.scope == TenantScope(tenant.id, Mode.TEST)
    assert tenancy.authenticate(issued.secret + "x") is None
    assert tenancy.authenticate("rk_live_" + "A" * 43) is None
    assert tenancy.authenticate("Bearer nonsense") is None
    assert tenancy.authenticate("") is None


def test_revoked_key_fails(tenancy, clock):
    tenant = tenancy.create_tenant("Acme")
    issued = tenancy.create_api_key(tenant.id, Mode.LIVE, Role.ADMIN, actor="founder")
    assert tenancy.authenticate(issued.secret) is not None
    clock.advance(timedelta(minutes=5))
    tenancy.revoke_api_key(tenant.id, issued.key_id, actor="founder")
    assert tenancy.authenticate(issued.secret) is None


def test_another_tenant_cannot_revoke_my_key(tenancy):
    mine = tenancy.create_tenant("Mine")
    theirs = tenancy.create_tenant("Theirs")
    issued = tenancy.create_api_key(mine.id, Mode.LIVE, Role.ADMIN, actor="founder")
    with pytest.raises(NotFound):
        tenancy.revoke_api_key(theirs.id, issued.key_id, actor="intruder")
    assert tenancy.authenticate(issued.secret) is not None


def test_last_used_is_recorded_at_most_once_a_minute(tenancy, sessions, clock):
    tenant = tenancy.create_tenant("Acme")
    issued = tenancy.create_api_key(tenant.id, Mode.LIVE, Role.ADMIN, actor="founder")
    tenancy.authenticate(issued.secret)
    first = clock.now()
    clock.advance(timedelta(seconds=10))
    tenancy.authenticate(issued.secret)
    with sessions() as session:
        assert session.get(ApiKeyRow, issued.key_id).last_used_at == first  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("role", "granted"),
    [
        (Role.ADMIN, set(Action)),
        (Role.BILLING, {Action.READ, Action.WRITE_BILLING, Action.INGEST}),
        (Role.READ_ONLY, {Action.READ}),
        (Role.INGEST, {Action.INGEST}),
    ],
)
def test_role_permissions(role, granted):
    assert {action for action in Action if allowed(role, action)} == granted


def test_denied_attempt_raises_forbidden_and_is_audited(tenancy, sessions):
    tenant = tenancy.create_tenant("Acme")
    issued = tenancy.create_api_key(tenant.id, Mode.LIVE, Role.READ_ONLY, actor="founder")
    principal = tenancy.authenticate(issued.secret)
    assert principal is not None
    tenancy.authorize(principal, Action.READ)
    with pytest.raises(Forbidden) as caught:
        tenancy.authorize(principal, Action.WRITE_BILLING, target="POST /v1/invoices")
    assert caught.value.code is ErrorCode.FORBIDDEN
    denied = [e for e in audit.entries(sessions, tenant.id) if e.action == "auth.denied"]
    assert len(denied) == 1
    assert denied[0].actor == f"api_key:{issued.key_id}"
    assert denied[0].after == {
        "role": "read_only",
        "action": "write_billing",
        "target": "POST /v1/invoices",
    }
    assert audit.verify(sessions, tenant.id).ok


def test_keys_are_listed_per_tenant_and_mode(tenancy, sessions, clock):
    tenant = tenancy.create_tenant("Acme")
    live = tenancy.create_api_key(tenant.id, Mode.LIVE, Role.ADMIN, actor="founder")
    tenancy.create_api_key(tenant.id, Mode.TEST, Role.ADMIN, actor="founder")
    with uow(sessions, TenantScope(tenant.id, Mode.LIVE), clock) as work:
        assert [k.id for k in work.api_keys.list()] == [live.key_id]


def test_a_key_read_less_than_a_second_ago_is_known_without_a_read(sessions, clock):
    """`known` answers from what this service read of the key for `KEY_TRUST_NS`; revoked
    through this service the key is forgotten at once, through another (another process)
    at most that long after."""
    from ratecard.services.tenancy import KEY_TRUST_NS

    now = [0]
    here = TenancyService(sessions, clock, monotonic_ns=lambda: now[0])
    elsewhere = TenancyService(sessions, clock)
    tenant = here.create_tenant("Acme")
    one = here.create_api_key(tenant.id, Mode.LIVE, Role.ADMIN, actor="t")
    two = here.create_api_key(tenant.id, Mode.TEST, Role.INGEST, actor="t")
    assert here.known(one.secret) is None  # never read yet
    for issued in (one, two):
        principal = here.authenticate(issued.secret)
        assert principal is not None and here.known(issued.secret) == principal
    assert here.known(one.secret + "x") is None and here.known("") is None
    # Revoked here: forgotten at once; the other key is still known.
    here.revoke_api_key(tenant.id, one.key_id, actor="t")
    assert here.known(one.secret) is None and here.authenticate(one.secret) is None
    assert here.known(two.secret) == TenancyService(sessions, clock).authenticate(two.secret)
    # Revoked elsewhere: still known until a second after it was read, then read again.
    elsewhere.revoke_api_key(tenant.id, two.key_id, actor="t")
    now[0] = KEY_TRUST_NS - 1
    assert here.known(two.secret) is not None
    now[0] = KEY_TRUST_NS
    assert here.known(two.secret) is None
    assert here.authenticate(two.secret) is None and here.known(two.secret) is None
