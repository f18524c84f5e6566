"""The meters plan documents bill (`services.plan_meters`), both engines: a template's are
created with its plan, in one commit, and release the events held for them; a native
document's missing ones are named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from ratecard.adapters.db.models import EventRow, MeterRow
from ratecard.core.errors import ValidationFailed
from ratecard.services import plans_as_code
from ratecard.services.documents import load_file
from ratecard.services.metering.policy import Unknown, load_policy, save_policy
from ratecard.services.plan_meters import describe, meter_needs
from tests.integration.factories import uow
from tests.integration.metering_setup import event, setup

TEMPLATE = load_file(Path(__file__).parents[1] / "data" / "seed_template.json")  # exact numbers


def test_a_template_creates_its_meters_with_its_plan_and_releases_their_held_events(sessions):
    m = setup(sessions)  # api_calls counts here; the template's would sum
    with uow(m.sessions, m.scope, m.clock) as work:
        policy = load_policy(work.session, m.scope)
        save_policy(work.session, m.scope, replace(policy, unknown_meter=Unknown.HOLD))
        work.commit()
    assert m.ingest(event("gb", meter="storage_gb", value="1200")) == ["held"]

    with uow(m.sessions, m.scope, m.clock) as work:
        changes = plans_as_code.plan_changes(work, [TEMPLATE])
        needs = meter_needs(work, [TEMPLATE])
        assert [(x.code, describe(x)) for x in needs.create] == [
            ("storage_gb", "latest of value, never reset")
        ]
        assert [(row.code, describe(row), describe(x)) for row, x in needs.kept] == [
            ("api_calls", "count", "sum of value")
        ]
        assert needs.missing == []
        made = plans_as_code.apply_plan_changes(
            work, changes, publish=True, now=m.clock.now(), new_meters=needs.create
        )
        assert [(v.plan_code, v.version) for v in made] == [("enterprise_v2", 1)]

    with uow(m.sessions, m.scope, m.clock) as work:
        storage = work.meters.get_by_code("storage_gb")
        assert (storage.aggregation, storage.value_field, storage.reset, storage.snapshot) == (
            "latest",
            "value",
            "never",
            True,
        )
        assert work.meters.get_by_code("api_calls").aggregation == "count"  # kept
        held = work.session.scalars(
            sa.select(EventRow).where(
                EventRow.tenant_id == m.scope.tenant_id, EventRow.event_id == "evt_gb"
            )
        ).one()
        assert held.customer_id == m.customer_id  # released: counted from now
        assert meter_needs(work, [TEMPLATE]).create == []  # applied again: nothing to make


def test_a_native_document_names_the_meters_it_bills_that_do_not_exist(sessions):
    m = setup(sessions, "Native")
    plan = {
        "code": "gpu",
        "currency": "USD",
        "charges": [
            {"code": "calls", "model": "per_unit", "meter": "api_calls", "unit_price": "1"},
            {"code": "gpu", "model": "per_unit", "meter": "gpu_hours", "unit_price": "2"},
        ],
        "entitlements": [{"feature": "gpu", "type": "metered", "limit": "5", "meter": "gpu_s"}],
    }
    with uow(m.sessions, m.scope, m.clock) as work:
        needs = meter_needs(work, [plan, TEMPLATE])
        assert needs.missing == [("gpu", "gpu_hours"), ("gpu", "gpu_s")]
        assert [x.code for x in needs.create] == ["storage_gb"]  # the template's, not gpu's
        lines = needs.lines()
        assert "warning: plan gpu bills meter gpu_hours, which does not exist" in lines[-2]
        plans_as_code.apply_plan_changes(
            work,
            plans_as_code.plan_changes(work, [plan]),
            publish=True,
            now=m.clock.now(),
            new_meters=[],
        )
        codes = set(
            work.session.scalars(
                sa.select(MeterRow.code).where(MeterRow.tenant_id == m.scope.tenant_id)
            )
        )
    assert "gpu_hours" not in codes and "storage_gb" not in codes  # nothing made unasked


def _template(plan: str, **feature: object) -> dict:
    return {"planId": plan, "currency": "USD", "features": [feature]}


def test_templates_that_imply_one_meter_two_ways_are_refused_naming_both(sessions):
    m = setup(sessions, "Twice")
    a = _template("a", key="disk", rating={"model": "per_unit", "rate": "1"})
    b = _template(
        "b", key="disk", meteringType="snapshot", rating={"model": "per_unit", "rate": "1"}
    )
    with uow(m.sessions, m.scope, m.clock) as work, pytest.raises(ValidationFailed) as refused:
        meter_needs(work, [a, b])
    (problem,) = refused.value.problems
    assert problem.field == "plans[1].features"
    assert problem.message == (
        "meter disk is sum of value in plan a and latest of value, never reset in plan b"
    )
    with uow(m.sessions, m.scope, m.clock) as work:  # the same way twice is one meter
        assert [
            x.code for x in meter_needs(work, [a, _template("c", **a["features"][0])]).create
        ] == ["disk"]


def test_a_flat_feature_with_a_limit_implies_the_meter_it_counts(sessions):
    m = setup(sessions, "Flat")
    flat = _template(
        "f",
        key="seats_used",
        rating={"model": "flat", "rate": "10"},
        entitlement={"type": "hard_limit", "limit": "5"},
    )
    plain = _template("g", key="support", rating={"model": "flat", "rate": "10"})
    with uow(m.sessions, m.scope, m.clock) as work:
        needs = meter_needs(work, [flat, plain])
    assert [(x.code, describe(x)) for x in needs.create] == [("seats_used", "sum of value")]
    assert needs.missing == []


def test_an_existing_meter_that_filters_or_groups_is_named_as_kept(sessions):
    m = setup(sessions, "Grouped")  # its tokens meter sums tokens by model
    tokens = _template("t", key="tokens", rating={"model": "per_unit", "rate": "1"})
    with uow(m.sessions, m.scope, m.clock) as work:
        needs = meter_needs(work, [tokens])
    assert [(row.code, describe(row)) for row, _ in needs.kept] == [
        ("tokens", "sum of tokens, by model")
    ]
