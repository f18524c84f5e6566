"""Bad input to the metering routes, over HTTP, on both engines: each is an RFC 9457 problem
naming its field, and nothing is written.

    GET  /v1/customers/{id}/usage/series      meter, granularity, start_at / end_at
    GET  /v1/customers/{id}/entitlements/{f}  requested
    POST /v1/alerts, GET /v1/alerts, GET /v1/webhook_events
    POST /v1/events (native, CloudEvents), /v1/track, /v1/batch, /api/v1/events(/batch)
    PATCH /v1/metering_policy  max_future_seconds, max_past_seconds at work on ingestion
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ratecard.core.events import MAX_BATCH
from tests.e2e.conftest import START, Api
from tests.e2e.metered_api import Metered, metered, problem, stored_events

NOW = START + timedelta(days=9, hours=10, minutes=30)  # 2024-01-10T10:30:00Z


@pytest.fixture
def m(api: Api) -> Metered:
    made = metered(api)
    api.clock.set(NOW)
    return made


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# --- GET /v1/customers/{id}/usage/series --------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code", "fields"),
    [
        ({}, "missing_field", ["query.meter"]),
        ({"meter": "nope"}, "invalid_value", ["query.meter"]),
        ({"meter": "x" * 101}, "invalid_value", ["query.meter"]),
        ({"meter": "calls", "granularity": "week"}, "invalid_value", ["query.granularity"]),
        ({"meter": "calls", "granularity": ""}, "invalid_value", ["query.granularity"]),
        (
            {
                "meter": "calls",
                "start_at": "2024-01-05T00:00:00Z",
                "end_at": "2024-01-05T00:00:00Z",
            },
            "invalid_value",
            ["query.end_at"],
        ),
        (
            {
                "meter": "calls",
                "start_at": "2024-01-06T00:00:00Z",
                "end_at": "2024-01-05T00:00:00Z",
            },
            "invalid_value",
            ["query.end_at"],
        ),
        (  # the same instant written in two offsets is not a span either
            {
                "meter": "calls",
                "start_at": "2024-01-05T01:00:00+01:00",
                "end_at": "2024-01-05T00:00:00Z",
            },
            "invalid_value",
            ["query.end_at"],
        ),
        (  # 366 days and one second
            {
                "meter": "calls",
                "start_at": "2023-01-01T00:00:00Z",
                "end_at": "2024-01-02T00:00:01Z",
            },
            "invalid_value",
            ["query.end_at"],
        ),
        (  # only start_at: the current period's end is more than 366 days after it
            {"meter": "calls", "start_at": "2022-01-01T00:00:00Z"},
            "invalid_value",
            ["query.end_at"],
        ),
        (
            {"meter": "calls", "start_at": "2024-01-05T00:00:00"},
            "invalid_value",
            ["query.start_at"],
        ),
        ({"meter": "calls", "end_at": "2024-01-06T00:00:00"}, "invalid_value", ["query.end_at"]),
        ({"meter": "calls", "start_at": "yesterday"}, "invalid_value", ["query.start_at"]),
        (
            {"granularity": "week", "start_at": "2024-01-05"},
            "missing_field",
            ["query.meter", "query.granularity", "query.start_at"],
        ),
    ],
)
def test_bad_series_queries_are_problems_naming_the_parameter(
    api: Api, m: Metered, params: dict[str, str], code: str, fields: list[str]
) -> None:
    response = api.client.get(
        f"/v1/customers/{m.customer_id}/usage/series", params=params, headers=m.tenant.admin
    )
    assert problem(response, 422, code) == fields


def test_a_series_of_exactly_366_days_is_answered(api: Api, m: Metered) -> None:
    start = datetime(2023, 1, 9, tzinfo=UTC)
    body = api.get(
        f"/v1/customers/{m.customer_id}/usage/series",
        m.tenant,
        params={"meter": "calls", "start_at": _z(start), "end_at": _z(start + timedelta(days=366))},
    )
    assert len(body["data"]) == 366
    assert (body["data"][0]["start_at"], body["data"][-1]["end_at"]) == (
        "2023-01-09T00:00:00Z",
        "2024-01-10T00:00:00Z",
    )
    assert {p["quantity"] for p in body["data"]} == {"0"}


# --- GET /v1/customers/{id}/entitlements/{feature}?requested= -----------------------------------


@pytest.mark.parametrize(
    "requested",
    ["abc", "-1", "+1", "1e3", "NaN", "Infinity", "1.", ".5", "1.5.2", "1,5", " 1", "", "1" * 19],
)
def test_a_bad_requested_amount_is_a_problem(api: Api, m: Metered, requested: str) -> None:
    response = api.client.get(
        f"/v1/customers/{m.customer_id}/entitlements/api",
        params={"requested": requested},
        headers=m.tenant.admin,
    )
    assert problem(response, 422, "invalid_value") == ["query.requested"]


def test_a_decimal_requested_amount_is_read_exactly(api: Api, m: Metered) -> None:
    api.post(
        "/v1/events",
        m.tenant,
        [{"id": f"e{i}", "type": "calls", "customer": "acme"} for i in range(2)],
    )
    url = f"/v1/customers/{m.customer_id}/entitlements/api"

    def check(requested: str) -> tuple[bool, str | None, str | None]:
        body = api.get(url, m.tenant, params={"requested": requested})
        return body["allowed"], body["reason"], body["remaining"]

    assert check("0.999999999999999999") == (True, None, "1")  # 2 + 0.99.. <= 3
    assert check("1") == (True, None, "1")
    assert check("1.000000000000000001") == (False, "limit_exceeded", "1")
    assert check("000000000000000001") == (True, None, "1")


# --- alerts and the webhook outbox ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "code", "fields"),
    [
        ({"threshold": "-1"}, "invalid_value", ["body.threshold"]),
        ({"threshold": -1}, "invalid_value", ["body.threshold"]),
        ({"threshold": "0"}, "invalid_value", ["body.threshold"]),
        ({"threshold": 2.5}, "float_not_allowed", ["body.threshold"]),
        ({"threshold": 1e3}, "float_not_allowed", ["body.threshold"]),
        ({"threshold": "many"}, "invalid_value", ["body.threshold"]),
        ({"threshold": "NaN"}, "invalid_value", ["body.threshold"]),
        ({"threshold": True}, "invalid_value", ["body.threshold"]),
        ({"threshold": None}, "invalid_type", ["body.threshold"]),
        ({"metric": "views"}, "invalid_value", ["body.metric"]),
        ({"metric": "USAGE"}, "invalid_value", ["body.metric"]),
        ({"meter": "nope"}, "invalid_value", ["body.meter"]),
        ({"colour": "red"}, "unknown_field", ["body.colour"]),
        (  # every problem of the body at once
            {"metric": "views", "threshold": 2.5},
            "invalid_value",
            ["body.metric", "body.threshold"],
        ),
    ],
)
def test_a_bad_alert_is_a_problem_and_creates_nothing(
    api: Api, m: Metered, changes: dict[str, Any], code: str, fields: list[str]
) -> None:
    body = {"customer_id": m.customer_id, "meter": "calls", "threshold": "3", **changes}
    response = api.client.post("/v1/alerts", json=body, headers=m.tenant.admin)
    assert problem(response, 422, code) == fields
    assert api.get("/v1/alerts", m.tenant)["data"] == []
    api.post(
        "/v1/events",
        m.tenant,
        [{"id": f"e{i}", "type": "calls", "customer": "acme"} for i in range(5)],
    )
    assert api.get("/v1/webhook_events", m.tenant)["data"] == []  # nothing watches


def test_a_float_threshold_written_as_a_decimal_string_is_kept_exactly(
    api: Api, m: Metered
) -> None:
    alert = api.post(
        "/v1/alerts",
        m.tenant,
        {"customer_id": m.customer_id, "meter": "tokens", "metric": "spend", "threshold": "0.1"},
    )
    assert (alert["threshold"], alert["metric"]) == ("0.1", "spend")
    assert [a["id"] for a in api.get("/v1/alerts", m.tenant)["data"]] == [alert["id"]]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/alerts", {"starting_after": "alr_" + "x" * 37}, "query.starting_after"),
        ("/v1/alerts", {"limit": "0"}, "query.limit"),
        ("/v1/alerts", {"limit": "ten"}, "query.limit"),
        ("/v1/webhook_events", {"starting_after": "abc"}, "query.starting_after"),
        ("/v1/webhook_events", {"starting_after": "-1"}, "query.starting_after"),
        ("/v1/webhook_events", {"starting_after": "1.5"}, "query.starting_after"),
        ("/v1/webhook_events", {"starting_after": "1" * 19}, "query.starting_after"),
        ("/v1/webhook_events", {"starting_after": ""}, "query.starting_after"),
        ("/v1/webhook_events", {"limit": "101"}, "query.limit"),
    ],
)
def test_bad_list_queries_are_problems_naming_the_parameter(
    api: Api, m: Metered, path: str, params: dict[str, str], field: str
) -> None:
    response = api.client.get(path, params=params, headers=m.tenant.admin)
    assert problem(response, 422, "invalid_value") == [field]


def test_an_alert_cursor_that_is_no_alert_is_a_problem(api: Api, m: Metered) -> None:
    api.post(
        "/v1/alerts", m.tenant, {"customer_id": m.customer_id, "meter": "calls", "threshold": "3"}
    )
    response = api.client.get(
        "/v1/alerts", params={"starting_after": "nope"}, headers=m.tenant.admin
    )
    assert problem(response, 422, "invalid_value") == ["query.starting_after"]


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/v1/customers", "cus"),
        ("/v1/subscriptions", "sub"),
        ("/v1/meters", "mtr"),
        ("/v1/plans", "plan"),
        ("/v1/features", "feat"),
        ("/v1/coupons", "cpn"),
        ("/v1/api_keys", "ak"),
        ("/v1/alerts", "alrt"),
    ],
)
def test_a_cursor_of_another_kind_is_a_problem_and_an_unknown_id_pages(
    api: Api, m: Metered, path: str, prefix: str
) -> None:
    """A cursor is an id of the list's kind: another string is refused, naming it; an id of
    the kind that no longer exists (deleted between pages) still pages from where it sorts."""
    for bad in ("nope", "sub_1" if prefix != "sub" else "cus_1"):
        response = api.client.get(path, params={"starting_after": bad}, headers=m.tenant.admin)
        assert problem(response, 422, "invalid_value") == ["query.starting_after"], bad
    last = api.client.get(
        path,
        params={"starting_after": f"{prefix}_ffffffffffffffffffffffff"},
        headers=m.tenant.admin,
    )
    assert last.status_code == 200, last.text
    assert (last.json()["data"], last.json()["has_more"]) == ([], False)


# --- ingestion: a body refused whole stores nothing ----------------------------------------------


def _native(i: int) -> dict[str, Any]:
    return {"id": f"n-{i}", "type": "calls", "customer": "acme", "timestamp": _z(NOW)}


def _track(i: int) -> dict[str, Any]:
    return {"type": "track", "event": "calls", "userId": "acme", "messageId": f"t-{i}"}


def _lago(i: int) -> dict[str, Any]:
    return {"transaction_id": f"l-{i}", "code": "calls", "external_customer_id": "acme"}


def _cloudevent(i: int) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"c-{i}", "source": "t", "type": "calls", "subject": "acme"}


def _many(make: Any) -> list[dict[str, Any]]:
    """One event more than a batch may hold, every one of them valid."""
    return [make(i) for i in range(MAX_BATCH + 1)]


JSON = "application/json"
CE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"

REFUSED: list[tuple[str, str, Any, int, str, str]] = [
    # route, content type, body (bytes as sent, else JSON), status, code, field
    ("/v1/track", JSON, b'{"event": "calls", "userId": "acme"', 400, "malformed_body", "body"),
    ("/v1/track", JSON, b"", 400, "malformed_body", "body"),
    ("/v1/track", JSON, [_track(1)], 400, "malformed_body", "body"),
    ("/v1/track", JSON, {"batch": [_track(1)]}, 400, "malformed_body", "body"),
    ("/v1/track", JSON, {"batch": _many(_track)}, 400, "malformed_body", "body"),
    ("/v1/batch", JSON, b"[1, 2", 400, "malformed_body", "body"),
    ("/v1/batch", JSON, {"batch": {"event": "calls"}}, 400, "malformed_body", "body"),
    ("/v1/batch", JSON, _track(1), 400, "malformed_body", "body"),
    ("/v1/batch", JSON, {"batch": []}, 400, "malformed_body", "body"),
    ("/v1/batch", JSON, {"batch": _many(_track)}, 422, "batch_too_large", "body"),
    ("/api/v1/events", JSON, b"{'event': {}}", 400, "malformed_body", "body"),
    ("/api/v1/events", JSON, {"event": [_lago(1)]}, 400, "malformed_body", "body"),
    ("/api/v1/events", JSON, _lago(1), 400, "malformed_body", "body"),
    ("/api/v1/events", JSON, {"events": _many(_lago)}, 400, "malformed_body", "body"),
    ("/api/v1/events/batch", JSON, b"\xff\xfe", 400, "malformed_body", "body"),
    ("/api/v1/events/batch", JSON, {"events": {"0": _lago(1)}}, 400, "malformed_body", "body"),
    ("/api/v1/events/batch", JSON, [_lago(1)], 400, "malformed_body", "body"),
    ("/api/v1/events/batch", JSON, {"events": []}, 400, "malformed_body", "body.events"),
    ("/api/v1/events/batch", JSON, {"events": _many(_lago)}, 422, "batch_too_large", "body.events"),
    ("/v1/events", CE, b'{"specversion": "1.0",', 400, "malformed_body", "body"),
    ("/v1/events", CE, b"", 400, "malformed_body", "body"),
    ("/v1/events", CE, [_cloudevent(1)], 400, "malformed_body", "body"),
    ("/v1/events", CE, b'{"id": NaN}', 400, "malformed_body", "body"),
    ("/v1/events", CE_BATCH, b"[{}", 400, "malformed_body", "body"),
    ("/v1/events", CE_BATCH, _cloudevent(1), 400, "malformed_body", "body"),
    ("/v1/events", CE_BATCH, [], 400, "malformed_body", "body"),
    ("/v1/events", CE_BATCH, _many(_cloudevent), 422, "batch_too_large", "body"),
    ("/v1/events", JSON, _many(_native), 422, "batch_too_large", "body"),
]


@pytest.mark.parametrize(
    ("path", "media", "body", "status", "code", "field"),
    REFUSED,
    ids=[f"{r[0]}-{r[1].split('/')[1]}-{i}" for i, r in enumerate(REFUSED)],
)
def test_a_refused_body_is_a_problem_and_stores_nothing(
    api: Api, m: Metered, path: str, media: str, body: Any, status: int, code: str, field: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = api.client.post(
        path, content=content, headers={**m.tenant.admin, "Content-Type": media}
    )
    assert problem(response, status, code) == [field]
    assert stored_events(api, m.tenant) == []
    usage = api.get(f"/v1/customers/{m.customer_id}/usage", m.tenant)["subscriptions"][0]
    assert {u["meter"]: (u["quantity"], u["events"]) for u in usage["meters"]} == {
        "calls": ("0", 0),
        "tokens": ("0", 0),
    }


def test_a_full_batch_is_taken_on_every_batch_route(api: Api, m: Metered) -> None:
    """The limit is MAX_BATCH events, not one fewer: the same batches one event shorter pass."""
    sent = [
        ("/v1/events", JSON, [_native(i) for i in range(MAX_BATCH)], "results"),
        ("/v1/events", CE_BATCH, [_cloudevent(i) for i in range(MAX_BATCH)], "results"),
        ("/v1/batch", JSON, {"batch": [_track(i) for i in range(MAX_BATCH)]}, "results"),
        ("/api/v1/events/batch", JSON, {"events": [_lago(i) for i in range(MAX_BATCH)]}, "events"),
    ]
    for path, media, body, key in sent:
        response = api.client.post(
            path,
            content=json.dumps(body).encode(),
            headers={**m.tenant.admin, "Content-Type": media},
        )
        assert response.status_code == 200, (path, response.text[:300])
        statuses = {r["status"] for r in response.json()[key]}
        assert statuses == {"accepted"}, (path, statuses)
    usage = api.get(f"/v1/customers/{m.customer_id}/usage", m.tenant)["subscriptions"][0]
    calls = next(u for u in usage["meters"] if u["meter"] == "calls")
    assert (calls["quantity"], calls["events"]) == (str(4 * MAX_BATCH), 4 * MAX_BATCH)


# --- the tenant's policy: how far ahead and how far back an event may be -------------------------


def _sent_at(api: Api, m: Metered, offsets: dict[str, timedelta]) -> list[tuple[str, Any, Any]]:
    events = [
        {"id": event_id, "type": "calls", "customer": "acme", "timestamp": _z(NOW + offset)}
        for event_id, offset in offsets.items()
    ]
    body = api.post("/v1/events", m.tenant, events)
    return [(r["status"], r.get("code"), r.get("reason")) for r in body["results"]]


def _patch_policy(api: Api, m: Metered, **changes: int) -> None:
    response = api.client.patch("/v1/metering_policy", json=changes, headers=m.tenant.admin)
    assert response.status_code == 200, response.text
    for name, value in changes.items():
        assert response.json()[name] == value


IN_FUTURE = ("rejected", "event_in_future", "too far in the future")
TOO_OLD = ("rejected", "event_too_old", "older than the tenant allows")
ACCEPTED = ("accepted", None, None)


def test_max_future_is_the_tenants_own(api: Api, m: Metered) -> None:
    second = timedelta(seconds=1)
    assert _sent_at(api, m, {"d-300": 300 * second, "d-301": 301 * second}) == [
        ACCEPTED,  # the default: 300 seconds ahead, the bound included
        IN_FUTURE,
    ]
    _patch_policy(api, m, max_future_seconds=60)
    body = api.post(
        "/v1/events",
        m.tenant,
        [{"id": "f-61", "type": "calls", "customer": "acme", "timestamp": _z(NOW + 61 * second)}],
    )
    (result,) = body["results"]
    assert result == {
        "index": 0,
        "id": "f-61",
        "status": "rejected",
        "code": "event_in_future",
        "reason": "too far in the future",
        "field": "timestamp",
        "problems": None,
    }
    assert _sent_at(api, m, {"f-60": 60 * second, "f-120": 120 * second}) == [ACCEPTED, IN_FUTURE]
    _patch_policy(api, m, max_future_seconds=0)
    assert _sent_at(api, m, {"z-0": timedelta(0), "z-1": second}) == [ACCEPTED, IN_FUTURE]
    assert sorted(stored_events(api, m.tenant)) == [
        ("d-300", "accepted"),
        ("f-60", "accepted"),
        ("z-0", "accepted"),
    ]

    other = metered(api, "Other")  # another tenant keeps the default
    events = [
        {"id": "o-120", "type": "calls", "customer": "acme", "timestamp": _z(NOW + 120 * second)}
    ]
    assert api.post("/v1/events", other.tenant, events)["accepted"] == 1


def test_max_past_is_the_tenants_own(api: Api, m: Metered) -> None:
    second, day = timedelta(seconds=1), timedelta(days=1)
    # NOW - 9 days is before the subscription started; the customer is known all the same
    assert _sent_at(
        api, m, {"d-9d": -9 * day, "d-35d": -35 * day, "d-35d1": -35 * day - second}
    ) == [
        ACCEPTED,
        ACCEPTED,  # the default: 35 days back, the bound included
        TOO_OLD,
    ]
    _patch_policy(api, m, max_past_seconds=3600)
    body = api.post(
        "/v1/events",
        m.tenant,
        [
            {
                "id": "p-3601",
                "type": "calls",
                "customer": "acme",
                "timestamp": _z(NOW - 3601 * second),
            }
        ],
    )
    assert [(r["status"], r["code"], r["field"]) for r in body["results"]] == [
        ("rejected", "event_too_old", "timestamp")
    ]
    assert _sent_at(api, m, {"p-3600": -3600 * second, "p-2d": -2 * day}) == [ACCEPTED, TOO_OLD]
    assert sorted(stored_events(api, m.tenant)) == [
        ("d-35d", "accepted"),
        ("d-9d", "accepted"),
        ("p-3600", "accepted"),
    ]

    other = metered(api, "Other")
    events = [{"id": "o-2d", "type": "calls", "customer": "acme", "timestamp": _z(NOW - 2 * day)}]
    assert api.post("/v1/events", other.tenant, events)["accepted"] == 1
