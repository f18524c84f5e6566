"""The API against `ratecard simulate`: one scenario, two roads, the same lines.

Each case is a scenario document. `services.simulation.simulate` runs it; the API then drives the
same plans, customer, subscription and changes in test mode — the test clock moved to each
change's instant, the change previewed, then applied — and the subscription's drafts must hold
exactly the lines of the simulated invoices (description, kind, amount, period).
"""

from __future__ import annotations

from typing import Any

import pytest

from ratecard.adapters.db.scope import Mode, Role
from ratecard.services.simulation import simulate
from tests.e2e.conftest import MAX, PRO, SEATS, Api

START = "2024-01-01T00:00:00Z"
END = "2024-03-01T00:00:00Z"


def _plan_doc(plan: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in plan.items() if k != "publish"}


def _change(at: str, action: str, **fields: Any) -> dict[str, Any]:
    return {"at": at, "action": action, **fields}


CASES: dict[str, tuple[str, int, list[dict[str, Any]]]] = {
    "upgrade now": ("pro", 1, [_change("2024-01-15T00:00:00Z", "change_plan", plan="max")]),
    "quantity now": ("team", 3, [_change("2024-01-10T00:00:00Z", "change_quantity", quantity=5)]),
    "pause and resume": (
        "team",
        2,
        [_change("2024-01-12T00:00:00Z", "pause"), _change("2024-01-20T00:00:00Z", "resume")],
    ),
    "cancel now": ("pro", 1, [_change("2024-01-25T00:00:00Z", "cancel", when="now")]),
    "change at period end": (
        "pro",
        1,
        [_change("2024-01-10T00:00:00Z", "change_plan", plan="max", when="period_end")],
    ),
    "quantity at period end, then cancel at period end": (
        "team",
        2,
        [
            _change("2024-01-05T00:00:00Z", "change_quantity", quantity=4, when="period_end"),
            _change("2024-02-03T00:00:00Z", "cancel", when="period_end"),
        ],
    ),
}


def _key(line: dict[str, Any]) -> tuple[Any, ...]:
    period = line["period"]
    return (
        line["description"],
        line["kind"],
        line["amount"],
        None if period is None else (period["start_at"], period["end_at"]),
    )


def _sim_key(line: Any) -> tuple[Any, ...]:
    period = line.period
    return (
        line.description,
        str(line.kind),
        line.amount.format(),
        None
        if period is None
        else tuple(p.isoformat().replace("+00:00", "Z") for p in (period.start_at, period.end_at)),
    )


def _request(change: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """The preview body, the route and its body for one scenario change."""
    action, when = change["action"], change.get("when", "now")
    if action == "change_plan":
        return ({"action": action, "plan_code": change["plan"], "when": when}, "change",
                {"plan_code": change["plan"], "when": when})  # fmt: skip
    if action == "change_quantity":
        return ({"action": action, "quantity": change["quantity"], "when": when}, "change",
                {"quantity": change["quantity"], "when": when})  # fmt: skip
    if action == "cancel":
        return {"action": action, "when": when}, "cancel", {"when": when}
    return {"action": action}, action, None


@pytest.mark.parametrize("case", list(CASES))
def test_api_lines_equal_simulate_lines(api: Api, case: str) -> None:
    plan, quantity, changes = CASES[case]
    scenario = {
        "plans": [_plan_doc(p) for p in (PRO, MAX, SEATS)],
        "customer": {"id": "cus_1", "currency": "USD", "timezone": "UTC"},
        "subscriptions": [
            {"id": "sub_1", "plan": plan, "start": START, "quantity": quantity, "changes": changes}
        ],
        "end": END,
    }
    simulated = simulate(scenario)
    expected = [_sim_key(line) for invoice in simulated.invoices for line in invoice.lines]
    assert expected, "the scenario bills something"

    tenant = api.tenant()
    headers = tenant.headers(Role.ADMIN, Mode.TEST)

    def post(path: str, body: Any = None) -> Any:
        response = api.client.post(path, json=body, headers=headers)
        assert response.status_code in (200, 201), (path, response.text)
        return response.json()

    for doc in (PRO, MAX, SEATS):
        post("/v1/plans", doc)
    cus = post("/v1/customers", {"external_id": "cus_1", "name": "C", "currency": "USD"})
    post("/v1/test_clock/advance", {"to": START})
    sub = post(
        "/v1/subscriptions", {"customer_id": cus["id"], "plan_code": plan, "quantity": quantity}
    )
    for change in changes:
        post("/v1/test_clock/advance", {"to": change["at"]})
        preview_body, route, body = _request(change)
        preview = post(f"/v1/subscriptions/{sub['id']}/preview", preview_body)
        applied = post(f"/v1/subscriptions/{sub['id']}/{route}", body)
        assert [_key(x) for x in applied["lines"]] == [_key(x) for x in preview["lines"]]
        # The simulated invoices hold the preview's lines, at the change's instant.
        for line in preview["lines"]:
            assert _key(line) in expected, (case, line)
    response = api.client.get(
        f"/v1/subscriptions/{sub['id']}/drafts", params={"until_at": END}, headers=headers
    )
    assert response.status_code == 200, response.text
    got = [_key(line) for draft in response.json()["data"] for line in draft["lines"]]
    assert got == expected, case
