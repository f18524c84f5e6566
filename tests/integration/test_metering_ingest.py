"""Ingestion on both engines: a result per event, dedup per (tenant, mode, id), exact values."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ratecard.adapters.db import event_ids
from ratecard.adapters.db.models import EventRow
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.core.errors import ErrorCode, ValidationFailed
from ratecard.core.events import parse_batch
from ratecard.core.periods import Period
from ratecard.services.metering.policy import MeteringPolicy, Unknown, save_policy
from tests.integration.factories import uow
from tests.integration.metering_setup import PERIOD_END, PERIOD_START, event, setup


def _count(m, scope=None) -> int:
    scope = scope or m.scope
    with m.sessions() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(EventRow)
                .where(EventRow.tenant_id == scope.tenant_id, EventRow.mode == scope.mode)
            )
            or 0
        )


def test_a_repeat_of_a_rejected_event_is_judged_on_its_own(sessions):
    """An id is taken by its first admitted event: a repeat after a rejected one (here an
    unknown customer, then a value that is not a number) is stored, and a repeat after that is
    a duplicate, or rejected if it would be alone; in one batch and across the batches of one
    round alike."""
    m = setup(sessions)
    in_batch = m.ingest(
        event(1, customer="nobody"),
        event(1),
        event(1),
        event(2, meter="tokens", tokens="many", model="m"),
        event(2, meter="tokens", tokens="7", model="m"),
        event(2, meter="tokens", tokens="many", model="m"),
    )
    # each judged as if sent after the ones before it: the last is rejected, as it would be alone
    assert in_batch == ["rejected", "accepted", "duplicate", "rejected", "accepted", "rejected"]
    rounds = m.ingestion.store(
        m.scope,
        [
            m.ingestion.prepare([event(3, customer="nobody")]),
            m.ingestion.prepare([event(3), event(1)]),
            m.ingestion.prepare([event(3)]),
        ],
    )
    assert [[str(r.status) for r in batch.results] for batch in rounds] == [
        ["rejected"],
        ["accepted", "duplicate"],
        ["duplicate"],
    ]
    assert _count(m) == 3
    usage = m.usage.meter_usage(m.scope, m.customer_id, "tokens", Period(PERIOD_START, PERIOD_END))
    assert usage.total.value == 7


def test_batch_reports_each_event_and_dedups(sessions):
    m = setup(sessions)
    first = m.ingest(event(1), event(2), event(1), event(3, meter="nope"), {"id": "x"})
    assert first == ["accepted", "accepted", "duplicate", "rejected", "rejected"]
    again = m.ingestion.ingest(m.scope, [event(1), event(2), event(4)])
    assert [str(r.status) for r in again.results] == ["duplicate", "duplicate", "accepted"]
    assert _count(m) == 3
    usage = m.usage.meter_usage(
        m.scope, m.customer_id, "api_calls", Period(PERIOD_START, PERIOD_END)
    )
    assert usage.total.value == 3


def test_rejections_name_code_and_field(sessions):
    m = setup(sessions)
    now = m.clock.now()
    result = m.ingestion.ingest(
        m.scope,
        [
            event(1, meter="nope"),
            event(2, customer="ghost"),
            event(3, at=now - timedelta(days=36)),
            event(4, at=now + timedelta(hours=1)),
            {"id": "5", "type": "api_calls", "customer": "acme", "timestamp": "2024-01-02 10:00"},
            {"id": "6", "type": "api_calls", "customer": "acme", "properties": {"x": {"a": 1}}},
            {"id": "7", "type": "api_calls", "customer": "acme", "colour": "red"},
        ],
    )
    got = [(r.as_dict()["code"], r.as_dict()["field"]) for r in result.results]
    assert got == [
        ("unknown_meter", "type"),
        ("unknown_customer", "customer"),
        ("event_too_old", "timestamp"),
        ("event_in_future", "timestamp"),
        ("invalid_value", "timestamp"),
        ("invalid_value", "properties.x"),
        ("unknown_field", "colour"),
    ]
    assert _count(m) == 0


def test_an_event_without_the_property_its_meter_counts_is_refused(sessions):
    """Counted as nothing, unnoticed, it would be revenue lost: the value of a sum, a max or a
    weighted sum, and the key of a unique count, must be there (a count needs none)."""
    m = setup(sessions)
    result = m.ingestion.ingest(
        m.scope,
        [
            event(1, meter="tokens", model="m1"),  # no tokens
            event(2, meter="peak"),
            event(3, meter="storage", gigabytes="3"),  # a misspelt property
            event(4, meter="users"),
            event(5, meter="users", user="u-1"),  # any text
            event(6, meter="tokens", tokens="x"),  # there, but not a number
            event(7),  # a count
            event(8, meter="tokens", tokens="12.5", model="m1"),
        ],
    )
    got = [
        (str(r.status), r.as_dict().get("code"), r.as_dict().get("field")) for r in result.results
    ]
    assert got == [
        ("rejected", "missing_field", "properties.tokens"),
        ("rejected", "missing_field", "properties.gb"),
        ("rejected", "missing_field", "properties.gb"),
        ("rejected", "missing_field", "properties.user"),
        ("accepted", None, None),
        ("rejected", "invalid_value", "properties.tokens"),
        ("accepted", None, None),
        ("accepted", None, None),
    ]
    assert result.results[0].as_dict()["reason"] == "the meter counts property 'tokens'"
    assert _count(m) == 3


def test_values_are_exact_and_timestamps_utc(sessions):
    m = setup(sessions)
    body = (
        b'[{"id":"a","type":"tokens","customer":"acme","timestamp":"2024-01-05T10:00:00.1234567+02:00",'
        b'"properties":{"tokens":0.1,"model":"m1"}},'
        b'{"id":"b","type":"tokens","customer":"acme","timestamp":"2024-01-05T08:30:00Z",'
        b'"properties":{"tokens":"0.2","model":"m2"}},'
        b'{"id":"c","type":"tokens","customer":"acme","timestamp":"2024-01-05T08:59:59.999999z",'
        b'"properties":{"tokens":12345678901234567890.000000000001,"model":"m1"}}]'
    )
    assert [str(r.status) for r in m.ingestion.ingest(m.scope, parse_batch(body)).results] == [
        "accepted"
    ] * 3
    with m.sessions() as session:
        rows = {
            r.event_id: r
            for r in session.scalars(sa.select(EventRow))
            if r.tenant_id == m.scope.tenant_id
        }
    assert rows["a"].occurred_at.isoformat() == "2024-01-05T08:00:00.123456+00:00"
    assert rows["a"].properties == {"tokens": "0.1", "model": "m1"}
    usage = m.usage.meter_usage(m.scope, m.customer_id, "tokens", Period(PERIOD_START, PERIOD_END))
    assert usage.total.value == Decimal("12345678901234567890.300000000001")
    assert usage.group("m1").value == Decimal("12345678901234567890.100000000001")


def test_malformed_body_writes_nothing():
    for body, code in (
        (b"{not json", ErrorCode.MALFORMED_BODY),
        (b'"text"', ErrorCode.MALFORMED_BODY),
        (b"[]", ErrorCode.MALFORMED_BODY),
        (b'{"a": NaN}', ErrorCode.MALFORMED_BODY),
        (b"[" + b",".join([b"{}"] * 10_001) + b"]", ErrorCode.BATCH_TOO_LARGE),
    ):
        with pytest.raises(ValidationFailed) as err:
            parse_batch(body)
        assert err.value.code is code


def test_dedup_is_per_tenant_and_mode(sessions):
    a = setup(sessions, "A")
    b = setup(sessions, "B")
    assert a.ingest(event(1)) == ["accepted"]
    assert b.ingest(event(1)) == ["accepted"]
    test_scope = TenantScope(a.scope.tenant_id, Mode.TEST)
    result = a.ingestion.ingest(test_scope, [event(1)])
    assert result.results[0].as_dict()["code"] == "unknown_customer"  # test mode is apart


def test_held_events_count_once_released(sessions):
    m = setup(sessions)
    with uow(sessions, m.scope, m.clock) as work:
        save_policy(
            work.session,
            m.scope,
            MeteringPolicy(unknown_customer=Unknown.HOLD, unknown_meter=Unknown.HOLD),
        )
        work.commit()
    assert m.ingest(event(1, customer="later"), event(2, meter="later_meter"), event(3)) == [
        "held",
        "held",
        "accepted",
    ]
    assert m.ingest(event(1, customer="later")) == ["duplicate"]
    usage = m.usage.meter_usage(
        m.scope, m.customer_id, "api_calls", Period(PERIOD_START, PERIOD_END)
    )
    assert usage.total.value == 1


def test_ids_are_deduplicated_whichever_tier_holds_their_key(sessions, monkeypatch):
    """SQLite keeps each stored id's hash first in the recent tier, then moves it, a slice of
    the hash range per commit, into the large one (`event_ids.add_id_keys`). Whichever tier
    holds it, a resent id is a duplicate, found by `existing_ids` and by a lookup by id; and
    another scope's same id is not. On PostgreSQL both tiers stay empty."""
    from ratecard.adapters.db.models import EVENT_IDS, RECENT_EVENT_IDS
    from ratecard.services.metering.event_log import get_event

    monkeypatch.setattr(event_ids, "_FOLD_SLICES", 4)
    m = setup(sessions)
    other = setup(sessions, "Other")
    ids = list(range(40))
    for start in range(0, 40, 5):  # eight commits: every slice moved twice over
        assert m.ingest(*(event(i) for i in ids[start : start + 5])) == ["accepted"] * 5
    with m.sessions() as session:  # the store may hold other tests' events: count this scope's
        ours = sa.select(EventRow.seq).where(EventRow.tenant_id == m.scope.tenant_id)
        recent, folded = (
            session.scalar(sa.select(sa.func.count()).select_from(tier).where(tier.c.seq.in_(ours)))
            for tier in (RECENT_EVENT_IDS, EVENT_IDS)
        )
    if sessions.kw["bind"].dialect.name == "sqlite":
        assert recent + folded == 40
        assert folded > 0 and recent > 0  # the last commits' keys wait in the recent tier
    else:
        assert recent == folded == 0
    again = m.ingestion.ingest(m.scope, [event(i) for i in ids] + [event(99)])
    assert [str(r.status) for r in again.results] == ["duplicate"] * 40 + ["accepted"]
    assert other.ingest(event(0), event(39)) == ["accepted", "accepted"]  # its own scope
    with m.sessions() as session:
        assert event_ids.existing_ids(session, m.scope, ["evt_0", "evt_39", "evt_x"]) == {
            "evt_0",
            "evt_39",
        }
    for i in ids:
        with uow(m.sessions, m.scope, m.clock) as work:
            assert get_event(work, f"evt_{i}").event_id == f"evt_{i}"
    assert _count(m) == 41
    assert _count(other) == 2


def test_concurrent_writers_of_the_same_ids_store_each_once(sessions):
    """Four transactions at once, each with the same 200 ids in its own order: every id is
    accepted by exactly one of them and a duplicate for the others (PostgreSQL: the writers
    wait on each other at the dedup constraint; SQLite: on the write lock)."""
    import random
    import threading

    m = setup(sessions)
    writers = 4
    barrier = threading.Barrier(writers)
    outcomes: list[list[str]] = []
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        batch = [event(i) for i in range(200)]
        random.Random(seed).shuffle(batch)
        try:
            barrier.wait(30)
            result = m.ingestion.ingest(m.scope, batch)
            outcomes.append([str(r.status) for r in result.results])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    statuses = [status for outcome in outcomes for status in outcome]
    assert statuses.count("accepted") == 200
    assert statuses.count("duplicate") == 600
    assert _count(m) == 200
