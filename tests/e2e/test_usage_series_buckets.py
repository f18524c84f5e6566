"""GET /v1/customers/{id}/usage/series, bucket by bucket, over HTTP, on both engines.

    GET /v1/customers/cus_1/usage/series?meter=tokens&granularity=hour
        &start_at=2024-01-10T05:30:00Z&end_at=2024-01-10T09:15:00Z
    -> {"data": [{"start_at": "2024-01-10T05:30:00Z", "end_at": "2024-01-10T06:00:00Z",
                  "quantity": "0.1", "events": 1}, {"start_at": "2024-01-10T06:00:00Z", ...}]}

Hours are UTC hours, cut at the span's own edges; days are the customer's local days (midnight
in its time zone, 23 or 25 hours long when the clocks change). Each bucket holds its own usage:
whole hours come from the hourly rollups, the edges from the raw events, and both must agree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.e2e.conftest import Api
from tests.e2e.metered_api import Metered, metered

NEW_YORK = ZoneInfo("America/New_York")


def _z(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _send(api: Api, m: Metered, meter: str, at_and_amounts: list[tuple[datetime, str]]) -> None:
    events = [
        {
            "id": f"{meter}-{i}",
            "type": meter,
            "customer": "acme",
            "timestamp": _z(at),
            "properties": {"tokens": amount},
        }
        for i, (at, amount) in enumerate(at_and_amounts)
    ]
    body = api.post("/v1/events", m.tenant, events)
    assert [r["status"] for r in body["results"]] == ["accepted"] * len(events), body


def _series(api: Api, m: Metered, **params: Any) -> dict[str, Any]:
    body = api.get(f"/v1/customers/{m.customer_id}/usage/series", m.tenant, params=params)
    assert (body["object"], body["customer_id"]) == ("usage_series", m.customer_id)
    return body


def _buckets(body: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [(p["start_at"], p["end_at"], p["quantity"], p["events"]) for p in body["data"]]


def _utc(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 1) -> datetime:
    return datetime(2024, month, day, hour, minute, second, tzinfo=UTC)


def test_hourly_buckets_hold_their_own_usage_edges_included(api: Api) -> None:
    m = metered(api)
    api.clock.set(_utc(10, 12))
    _send(
        api,
        m,
        "tokens",
        [
            (_utc(10, 5, 20), "100"),  # before the span
            (_utc(10, 5, 45), "0.1"),  # the first, partial, hour (read from the raw events)
            (_utc(10, 6, 0), "0.2"),  # on an hour: in the hour it starts
            (_utc(10, 6, 59, 59), "0.3"),
            (_utc(10, 8, 30), "4"),
            (_utc(10, 9, 0), "1.25"),  # the last, partial, hour
            (_utc(10, 9, 15), "100"),  # on the span's end: outside (half-open)
        ],
    )
    body = _series(
        api,
        m,
        meter="tokens",
        granularity="hour",
        start_at=_z(_utc(10, 5, 30)),
        end_at=_z(_utc(10, 9, 15)),
    )
    assert (body["meter"], body["granularity"]) == ("tokens", "hour")
    assert body["period"] == {"start_at": "2024-01-10T05:30:00Z", "end_at": "2024-01-10T09:15:00Z"}
    assert _buckets(body) == [
        ("2024-01-10T05:30:00Z", "2024-01-10T06:00:00Z", "0.1", 1),
        ("2024-01-10T06:00:00Z", "2024-01-10T07:00:00Z", "0.5", 2),
        ("2024-01-10T07:00:00Z", "2024-01-10T08:00:00Z", "0", 0),
        ("2024-01-10T08:00:00Z", "2024-01-10T09:00:00Z", "4", 1),
        ("2024-01-10T09:00:00Z", "2024-01-10T09:15:00Z", "1.25", 1),
    ]

    calls = _series(
        api,
        m,
        meter="calls",
        granularity="hour",
        start_at="2024-01-10T06:00:00Z",
        end_at="2024-01-10T08:00:00Z",
    )
    assert _buckets(calls) == [
        ("2024-01-10T06:00:00Z", "2024-01-10T07:00:00Z", "0", 0),  # no calls were sent
        ("2024-01-10T07:00:00Z", "2024-01-10T08:00:00Z", "0", 0),
    ]


def test_hourly_series_of_the_current_period_by_default(api: Api) -> None:
    m = metered(api)  # subscribed at 2024-01-01T00:00:00Z: the period is January
    api.clock.set(_utc(3, 12))
    _send(api, m, "tokens", [(_utc(2, 23, 59, 59), "7"), (_utc(3, 0), "0.5"), (_utc(3, 0, 1), "2")])
    body = _series(api, m, meter="tokens", granularity="hour")
    assert body["period"] == {"start_at": "2024-01-01T00:00:00Z", "end_at": "2024-02-01T00:00:00Z"}
    assert len(body["data"]) == 31 * 24
    starts = [datetime.fromisoformat(p["start_at"]) for p in body["data"]]
    assert starts == [_utc(1, 0) + timedelta(hours=h) for h in range(31 * 24)]
    assert [(p["start_at"], p["quantity"]) for p in body["data"] if p["events"]] == [
        ("2024-01-02T23:00:00Z", "7"),
        ("2024-01-03T00:00:00Z", "2.5"),
    ]


def test_daily_buckets_are_the_customers_local_days(api: Api) -> None:
    m = metered(api, timezone="America/New_York")
    api.clock.set(_utc(10, 12))
    _send(
        api,
        m,
        "tokens",
        [
            (_utc(6, 3), "1"),  # 22:00 on the 5th in New York, the 6th in UTC
            (_utc(6, 4, 59, 59), "2"),  # 23:59:59 on the 5th in New York
            (_utc(6, 5), "4"),  # midnight of the 6th in New York
            (_utc(7, 23), "8"),  # 18:00 on the 7th
        ],
    )
    midnight = datetime(2024, 1, 5, tzinfo=NEW_YORK)
    body = _series(
        api,
        m,
        meter="tokens",
        granularity="day",
        start_at=midnight.isoformat(),  # 2024-01-05T00:00:00-05:00
        end_at=(midnight + timedelta(days=3)).isoformat(),
    )
    assert body["period"] == {"start_at": "2024-01-05T05:00:00Z", "end_at": "2024-01-08T05:00:00Z"}
    assert _buckets(body) == [
        ("2024-01-05T05:00:00Z", "2024-01-06T05:00:00Z", "3", 2),
        ("2024-01-06T05:00:00Z", "2024-01-07T05:00:00Z", "4", 1),
        ("2024-01-07T05:00:00Z", "2024-01-08T05:00:00Z", "8", 1),
    ]

    # A span starting at UTC midnight: its first day is cut at New York's midnight.
    utc_days = _series(
        api, m, meter="tokens", start_at="2024-01-06T00:00:00Z", end_at="2024-01-08T00:00:00Z"
    )
    assert _buckets(utc_days) == [
        ("2024-01-06T00:00:00Z", "2024-01-06T05:00:00Z", "3", 2),
        ("2024-01-06T05:00:00Z", "2024-01-07T05:00:00Z", "4", 1),
        ("2024-01-07T05:00:00Z", "2024-01-08T00:00:00Z", "8", 1),
    ]


def test_daily_buckets_follow_the_clock_change(api: Api) -> None:
    """New York moves to daylight time on 2024-03-10: that day is 23 hours long."""
    m = metered(api, timezone="America/New_York")
    api.clock.set(_utc(12, 12, month=3))
    _send(
        api,
        m,
        "tokens",
        [
            (_utc(10, 4, 59, month=3), "1"),  # 23:59 on the 9th (EST)
            (_utc(10, 5, month=3), "2"),  # midnight of the 10th (EST)
            (_utc(11, 3, 59, month=3), "4"),  # 23:59 on the 10th (EDT)
            (_utc(11, 4, month=3), "8"),  # midnight of the 11th (EDT)
        ],
    )
    body = _series(
        api,
        m,
        meter="tokens",
        granularity="day",
        start_at=datetime(2024, 3, 9, tzinfo=NEW_YORK).isoformat(),
        end_at=datetime(2024, 3, 12, tzinfo=NEW_YORK).isoformat(),
    )
    assert _buckets(body) == [
        ("2024-03-09T05:00:00Z", "2024-03-10T05:00:00Z", "1", 1),
        ("2024-03-10T05:00:00Z", "2024-03-11T04:00:00Z", "6", 2),
        ("2024-03-11T04:00:00Z", "2024-03-12T04:00:00Z", "8", 1),
    ]


def test_daily_series_of_the_current_period_cuts_at_local_midnights(api: Api) -> None:
    api.clock.set(_utc(10, 10, 30))
    m = metered(api, timezone="America/New_York")  # subscribed at 2024-01-10T10:30:00Z
    api.clock.set(_utc(12, 12))
    _send(api, m, "tokens", [(_utc(11, 4, 59), "1"), (_utc(11, 5), "2")])
    body = _series(api, m, meter="tokens")
    assert body["granularity"] == "day"
    assert body["period"] == {"start_at": "2024-01-10T10:30:00Z", "end_at": "2024-02-10T10:30:00Z"}
    cuts = [p["start_at"] for p in body["data"]][1:]
    assert cuts == [_z(datetime(2024, 1, d, tzinfo=NEW_YORK)) for d in range(11, 32)] + [
        _z(datetime(2024, 2, d, tzinfo=NEW_YORK)) for d in range(1, 11)
    ]
    assert {c[10:] for c in cuts} == {"T05:00:00Z"}
    assert [(p["start_at"], p["end_at"], p["quantity"]) for p in body["data"][:2]] == [
        ("2024-01-10T10:30:00Z", "2024-01-11T05:00:00Z", "1"),
        ("2024-01-11T05:00:00Z", "2024-01-12T05:00:00Z", "2"),
    ]
    assert body["data"][-1]["end_at"] == "2024-02-10T10:30:00Z"
