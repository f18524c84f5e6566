"""The catalog, customer and subscription handlers on a unit of work — no HTTP.

Each test gets a migrated SQLite file and one tenant; handlers are called as the web layer calls
them, ``handler(uow, input, now=...)``, and a refused input must leave the store as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db.engine import make_engine, make_session_factory
from ratecard.adapters.db.schema import migrate
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.errors import Conflict, RatecardError, ValidationFailed
from ratecard.services import catalog, customers, meter_catalog
from ratecard.services import subscriptions as subs
from ratecard.services.catalog import PlanInput
from ratecard.services.customers import CustomerInput, CustomerUpdate
from ratecard.services.meter_catalog import MeterInput
from ratecard.services.subscriptions import Action, ChangeRequest, SubscriptionInput
from ratecard.services.tenancy import TenancyService, TenantSettings

JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)
PRO: dict[str, Any] = {
    "code": "pro",
    "name": "Pro",
    "currency": "USD",
    "interval": "month",
    "charges": [{"code": "base", "model": "flat", "amount": "100.00"}],
    "publish": True,
}
MAX = {**PRO, "code": "max", "charges": [{"code": "base", "model": "flat", "amount": "300.00"}]}


class Store:
    def __init__(self, sessions: sessionmaker[Session], tenant_id: str) -> None:
        self.sessions, self.clock = sessions, FixedClock(JAN_1)
        self.scope = TenantScope(tenant_id, Mode.LIVE)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.scope, actor="test", clock=self.clock)

    def count(self, repository: str) -> int:
        with self.uow() as uow:
            return len(getattr(uow, repository).list(limit=100))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'ratecard.db'}")
    migrate(engine)
    sessions = make_session_factory(engine)
    tenant = TenancyService(sessions, FixedClock(JAN_1)).create_tenant(
        "Acme", TenantSettings(default_currency="EUR", timezone="Europe/Berlin")
    )
    try:
        yield Store(sessions, tenant.id)
    finally:
        engine.dispose()


def _plan(store: Store, doc: dict[str, Any]) -> None:
    with store.uow() as uow:
        catalog.create_plan(uow, PlanInput.model_validate(doc), now=JAN_1)


def _customer(store: Store, **fields: Any) -> str:
    with store.uow() as uow:
        data = CustomerInput(external_id="acme", name="Acme", currency="USD", **fields)
        return customers.create_customer(uow, data, now=JAN_1).id


# --- catalog ---------------------------------------------------------------------------------


def test_catalog_versions_and_publishing(store: Store) -> None:
    with store.uow() as uow:
        v1 = catalog.create_plan(
            uow, PlanInput.model_validate({**PRO, "publish": False}), now=JAN_1
        )
        assert (v1.version, v1.status, v1.currency) == (1, "draft", "USD")
        edited = {**PRO, "charges": [{"code": "base", "model": "flat", "amount": "120.00"}]}
        v2 = catalog.add_version(uow, "pro", PlanInput.model_validate(edited), now=JAN_1)
        assert (v2.version, v2.status) == (2, "published")
        assert catalog.sellable_version(uow, "pro", None).version == 2
        published = catalog.publish_version(uow, "pro", 1, now=JAN_1)
        assert published.status == "published" and published.published_at == JAN_1
        catalog.archive_version(uow, "pro", 1)
    with store.uow() as uow:
        versions = uow.plan_versions.versions("pro")
        assert [(v.version, v.status) for v in versions] == [(1, "archived"), (2, "published")]
        assert versions[0].document["charges"][0]["amount"] == "100.00"  # never edited


def test_catalog_refuses_bad_input_and_writes_nothing(store: Store) -> None:
    with pytest.raises(ValidationError) as caught:
        PlanInput.model_validate({**PRO, "currency": "XXX", "charges": [{"code": "b"}]})
    assert {e["loc"][0] for e in caught.value.errors()} >= {"currency", "charges"}
    _plan(store, PRO)
    with store.uow() as uow, pytest.raises(Conflict):
        catalog.create_plan(uow, PlanInput.model_validate(PRO), now=JAN_1)
    with store.uow() as uow, pytest.raises(ValidationFailed) as refused:
        catalog.add_version(uow, "pro", PlanInput.model_validate(MAX), now=JAN_1)
    assert [p.field for p in refused.value.problems] == ["body.code"]
    with store.uow() as uow:
        meter_catalog.create_meter(uow, MeterInput(code="calls", aggregation="count"), now=JAN_1)
    with store.uow() as uow, pytest.raises(Conflict):
        meter_catalog.create_meter(uow, MeterInput(code="calls", aggregation="count"), now=JAN_1)
    with store.uow() as uow:
        assert len(uow.plan_versions.versions("pro")) == 1
    assert store.count("meters") == 1


# --- customers -------------------------------------------------------------------------------


def test_customers_take_tenant_defaults_and_update(store: Store) -> None:
    with store.uow() as uow:
        row = customers.create_customer(uow, CustomerInput(external_id="a", name="A"), now=JAN_1)
        assert (row.currency, row.timezone) == ("EUR", "Europe/Berlin")
        child = customers.create_customer(
            uow, CustomerInput(external_id="b", name="B", parent_customer_id=row.id), now=JAN_1
        )
        updated = customers.update_customer(
            uow, row.id, CustomerUpdate(name="A GmbH", country="de")
        )
        assert (updated.name, updated.country) == ("A GmbH", "DE")
    with store.uow() as uow:
        assert uow.customers.get(child.id).parent_customer_id == row.id


def test_customers_refuse_bad_input_and_write_nothing(store: Store) -> None:
    cus = _customer(store)
    with store.uow() as uow, pytest.raises(Conflict) as dup:
        customers.create_customer(uow, CustomerInput(external_id="acme", name="X"), now=JAN_1)
    assert dup.value.problems[0].field == "body.external_id"
    with store.uow() as uow, pytest.raises(ValidationFailed) as cycle:
        customers.update_customer(uow, cus, CustomerUpdate(parent_customer_id=cus))
    assert [p.field for p in cycle.value.problems] == ["body.parent_customer_id"]
    with pytest.raises(ValidationError):
        CustomerUpdate.model_validate({"currency": "ABC", "timezone": "Mars/Base"})
    assert store.count("customers") == 1
    with store.uow() as uow:
        assert uow.customers.get(cus).parent_customer_id is None


# --- subscriptions ---------------------------------------------------------------------------


def test_subscription_change_preview_and_state_at_now(store: Store) -> None:
    _plan(store, PRO)
    _plan(store, MAX)
    cus = _customer(store)
    with store.uow() as uow:
        sub = subs.create_subscription(
            uow, SubscriptionInput(customer_id=cus, plan_code="pro"), now=JAN_1
        )
    jan_15 = JAN_1 + timedelta(days=14)
    upgrade = ChangeRequest(action=Action.CHANGE_PLAN, plan_code="max")
    with store.uow() as uow:
        previewed = subs.preview(uow, sub.id, upgrade, now=jan_15)
    with store.uow() as uow:
        applied = subs.change(uow, sub.id, upgrade, now=jan_15)
    assert [line.amount.format() for line in previewed] == ["-54.84", "164.52"]
    assert applied.lines == previewed
    with store.uow() as uow:
        cancel = ChangeRequest(action=Action.CANCEL, when=subs.Effective.PERIOD_END)
        subs.change(uow, sub.id, cancel, now=jan_15)
    with store.uow() as uow:
        assert subs.current(uow, sub.id, now=jan_15).status == "active"
        later = subs.current(uow, sub.id, now=JAN_1 + timedelta(days=40))
        assert (later.status, later.plan_code) == ("ended", "max")
    with store.uow() as uow:  # reading wrote nothing
        assert uow.subscriptions.get(sub.id).status == "active"


def test_subscriptions_refuse_bad_input_and_write_nothing(store: Store) -> None:
    _plan(store, PRO)
    eur = {**PRO, "code": "eur", "currency": "EUR"}
    _plan(store, eur)
    cus = _customer(store)
    cases: list[tuple[SubscriptionInput, str]] = [
        (SubscriptionInput(customer_id="cus_nope", plan_code="pro"), "body.customer_id"),
        (SubscriptionInput(customer_id=cus, plan_code="ghost"), "body.plan_code"),
        (SubscriptionInput(customer_id=cus, plan_code="eur"), "body.plan_code"),
    ]
    for data, field in cases:
        with store.uow() as uow, pytest.raises(ValidationFailed) as refused:
            subs.create_subscription(uow, data, now=JAN_1)
        assert [p.field for p in refused.value.problems] == [field]
    assert store.count("subscriptions") == 0
    with store.uow() as uow:
        sub = subs.create_subscription(
            uow, SubscriptionInput(customer_id=cus, plan_code="pro"), now=JAN_1
        )
    with store.uow() as uow, pytest.raises(RatecardError):
        subs.change(uow, sub.id, ChangeRequest(action=Action.RESUME), now=JAN_1)
    with store.uow() as uow:
        assert len(uow.subscription_changes.timeline(sub.id)) == 1
