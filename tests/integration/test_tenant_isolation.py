"""Tenant isolation at the repository level: other tenants' rows do not exist for you."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ratecard.adapters.db.models import CustomerRow, PriceOverrideRow
from ratecard.adapters.db.repositories import CustomerRepository
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.core.errors import NotFound

from .factories import customer, subscribed_customer, tenant_scope, uow


@pytest.fixture
def two_tenants(sessions, clock):
    a = tenant_scope(sessions, clock, "A")
    b = tenant_scope(sessions, clock, "B")
    with uow(sessions, a, clock) as work:
        row = work.customers.add(customer("shared-ext", clock.now(), name="A's customer"))
        work.commit()
    return a, b, row.id


def test_another_tenants_row_is_not_found(sessions, clock, two_tenants):
    a, b, a_customer = two_tenants
    with uow(sessions, b, clock) as work:
        with pytest.raises(NotFound, match="not found"):
            work.customers.get(a_customer)
        with pytest.raises(NotFound):
            work.customers.get_by_external_id("shared-ext")
        assert work.customers.find(a_customer) is None
        assert work.customers.list() == []
        assert work.customers.count() == 0
    with uow(sessions, a, clock) as work:
        assert work.customers.get(a_customer).name == "A's customer"
        assert [c.id for c in work.customers.list()] == [a_customer]


def test_not_found_is_the_same_for_missing_and_foreign_rows(sessions, clock, two_tenants):
    _, b, a_customer = two_tenants
    with uow(sessions, b, clock) as work:
        with pytest.raises(NotFound) as foreign:
            work.customers.get(a_customer)
        with pytest.raises(NotFound) as missing:
            work.customers.get("cus_doesnotexist")
    assert foreign.value.code == missing.value.code
    assert str(foreign.value).replace(a_customer, "X") == str(missing.value).replace(
        "cus_doesnotexist", "X"
    )


def test_tenant_b_cannot_update_tenant_a(sessions, clock, two_tenants):
    a, b, a_customer = two_tenants
    with uow(sessions, b, clock) as work:
        # Even a bulk ORM UPDATE that names the id is filtered to B's scope.
        work.session.execute(
            sa.update(CustomerRow).where(CustomerRow.id == a_customer).values(name="hijacked")
        )
        hijacked = work.session.scalars(sa.select(CustomerRow)).all()
        assert hijacked == []
        work.commit()
    with uow(sessions, a, clock) as work:
        assert work.customers.get(a_customer).name == "A's customer"


def test_same_external_id_may_exist_in_each_tenant(sessions, clock, two_tenants):
    _, b, a_customer = two_tenants
    with uow(sessions, b, clock) as work:
        row = work.customers.add(customer("shared-ext", clock.now()))
        work.commit()
    assert row.id != a_customer


def test_duplicate_external_id_within_a_tenant_is_refused(sessions, clock, two_tenants):
    a, _, _ = two_tenants
    with uow(sessions, a, clock) as work:
        work.customers.add(customer("shared-ext", clock.now()))
        with pytest.raises(sa.exc.IntegrityError):
            work.commit()


def test_live_and_test_mode_are_separate(sessions, clock, two_tenants):
    a, _, a_customer = two_tenants
    a_test = TenantScope(a.tenant_id, Mode.TEST)
    with uow(sessions, a_test, clock) as work:
        with pytest.raises(NotFound):
            work.customers.get(a_customer)
        assert work.customers.list() == []
        work.customers.add(customer("shared-ext", clock.now(), name="test-mode twin"))
        work.commit()
    with uow(sessions, a, clock) as work:
        assert [c.name for c in work.customers.list()] == ["A's customer"]


def test_a_unit_of_work_refuses_rows_of_another_scope(sessions, clock, two_tenants):
    a, b, _ = two_tenants
    with uow(sessions, b, clock) as work:
        with pytest.raises(AssertionError, match="outside"):
            work.customers.add(customer("x", clock.now(), tenant_id=a.tenant_id, mode=Mode.LIVE))
        smuggled = customer("y", clock.now(), tenant_id=a.tenant_id, mode=Mode.LIVE)
        work.session.add(smuggled)
        with pytest.raises(AssertionError, match="outside"):
            work.commit()


def test_the_database_refuses_cross_tenant_references(sessions, clock, two_tenants):
    _, b, a_customer = two_tenants
    with uow(sessions, b, clock) as work:
        work.price_overrides.add(
            PriceOverrideRow(
                customer_id=a_customer,
                plan_code="pro",
                charge_code="base",
                price={"amount": "1.00"},
                created_at=clock.now(),
            )
        )
        with pytest.raises(sa.exc.IntegrityError):
            work.commit()


def test_repositories_need_a_scope(sessions):
    with sessions() as session:
        with pytest.raises(TypeError):
            CustomerRepository(session)  # type: ignore[call-arg]
        with pytest.raises(AssertionError):
            CustomerRepository(session, ("ten_1", "live"))  # type: ignore[arg-type]


def test_unit_of_work_rolls_back_unless_committed(sessions, clock):
    scope = tenant_scope(sessions, clock)
    with uow(sessions, scope, clock) as work:
        work.customers.add(customer("never", clock.now()))
    with pytest.raises(RuntimeError), uow(sessions, scope, clock) as work:
        work.customers.add(customer("boom", clock.now()))
        work.session.flush()
        raise RuntimeError("handler failed")
    with uow(sessions, scope, clock) as work:
        assert work.customers.list() == []


def test_subscription_timeline_is_append_only(sessions, clock):
    scope = tenant_scope(sessions, clock)
    _, sub_id = subscribed_customer(sessions, scope, clock)
    with uow(sessions, scope, clock) as work:
        first = work.subscription_changes.append(
            sub_id,
            "create",
            {"plan": "pro"},
            effective_at=clock.now(),
            recorded_at=clock.now(),
            actor="user:test",
        )
        work.subscription_changes.append(
            sub_id,
            "change_quantity",
            {"quantity": "5"},
            effective_at=clock.now() + timedelta(days=3),
            recorded_at=clock.now(),
            actor="user:test",
        )
        work.commit()
    with uow(sessions, scope, clock) as work:
        timeline = work.subscription_changes.timeline(sub_id)
        assert [(c.seq, c.command) for c in timeline] == [(1, "create"), (2, "change_quantity")]
        timeline[0].payload = {"plan": "rewritten"}
        with pytest.raises(AssertionError, match="append-only"):
            work.commit()
    with uow(sessions, scope, clock) as work:
        assert work.subscription_changes.get(first.id).payload == {"plan": "pro"}


def test_unscoped_session_sees_rows_but_uow_session_does_not(sessions: object, clock, two_tenants):
    _, b, _ = two_tenants
    with uow(sessions, b, clock) as work:
        assert isinstance(work.session, Session)
        assert work.session.scalars(sa.select(CustomerRow)).all() == []
