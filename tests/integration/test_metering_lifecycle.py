"""Late events, alerts through the outbox, held events and the retention purge, both engines."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ratecard.adapters.db import event_ids
from ratecard.adapters.db.models import (
    EVENT_IDS,
    RECENT_EVENT_IDS,
    CustomerRow,
    EventRow,
    MeterRow,
)
from ratecard.core.errors import ValidationFailed
from ratecard.core.periods import Period
from ratecard.services.metering.alerts import AlertMetric, AlertService, outbox
from ratecard.services.metering.ingestion import meters_to_roll_up
from ratecard.services.metering.lifecycle import (
    close_usage,
    late_adjustments,
    purge_events,
    release_held,
)
from ratecard.services.metering.meters import redefine_meter
from ratecard.services.metering.policy import (
    LateEvents,
    MeteringPolicy,
    Unknown,
    load_policy,
    save_policy,
)
from ratecard.services.metering.priced_usage import plan_of
from tests.integration.factories import uow
from tests.integration.metering_setup import PERIOD_END, PERIOD_START, event, setup

JAN = Period(PERIOD_START, PERIOD_END)


def _close_january(m):
    m.clock.set(PERIOD_END + timedelta(days=1))
    with uow(m.sessions, m.scope, m.clock) as work:
        close_usage(work, m.customer_id, JAN)
        work.commit()


def test_late_event_becomes_an_adjustment_line_once(sessions):
    m = setup(sessions)
    m.ingest(*[event(i, meter="tokens", tokens="1000", model="a") for i in range(3)])
    _close_january(m)
    late = event(
        "late", meter="tokens", at=PERIOD_END - timedelta(hours=1), tokens="800", model="a"
    )
    m.clock.advance(timedelta(seconds=1))
    assert m.ingest(late) == ["accepted"]
    m.clock.advance(timedelta(days=1))
    with uow(m.sessions, m.scope, m.clock) as work:
        plan = plan_of(work.session, m.scope, work.subscriptions.get(m.subscription_id))
        lines = late_adjustments(work, m.customer_id, plan, at=m.clock.now())
        work.commit()
    assert [(line.charge_code, line.quantity, line.amount.format()) for line in lines] == [
        ("tokens", Decimal(800), "0.10")
    ]
    with uow(m.sessions, m.scope, m.clock) as work:
        assert late_adjustments(work, m.customer_id, plan, at=m.clock.now()) == []


def test_late_events_can_be_refused(sessions):
    m = setup(sessions)
    _close_january(m)
    with uow(m.sessions, m.scope, m.clock) as work:
        save_policy(work.session, m.scope, MeteringPolicy(late_events=LateEvents.REJECT))
        work.commit()
    by_subscription = {
        k: v for k, v in event(3, at=PERIOD_END - timedelta(hours=2)).items() if k != "customer"
    } | {"subscription": m.subscription_id}
    result = m.ingestion.ingest(
        m.scope,
        [
            event(1, at=PERIOD_END - timedelta(hours=1)),
            event(2, at=PERIOD_END + timedelta(hours=1)),
        ],
    )
    assert [r.as_dict().get("code") for r in result.results] == ["late_event", None]
    # the customer's closed period found through its subscription alone
    result = m.ingestion.ingest(
        m.scope,
        [by_subscription, by_subscription | {"id": "evt_4", "timestamp": PERIOD_END.isoformat()}],
    )
    assert [r.as_dict().get("code") for r in result.results] == ["late_event", None]


def test_alert_fires_one_webhook_event_per_crossing(sessions):
    m = setup(sessions)
    alerts = AlertService(m.sessions, m.clock)
    m.ingestion.listeners.append(alerts.on_ingested)
    alerts.create(m.scope, m.customer_id, "api_calls", AlertMetric.USAGE, Decimal(3))
    alerts.create(m.scope, m.customer_id, "tokens", AlertMetric.SPEND, Decimal("0.25"))
    m.ingest(event(1), event(2))
    m.ingest(event(3), event(4, meter="tokens", tokens="1999", model="a"))
    m.ingest(event(5), event(6, meter="tokens", tokens="1", model="a"))
    assert alerts.evaluate_all(m.scope) == 0  # crossings already written
    with m.sessions() as session:
        sent = outbox(session, m.scope)
    assert [(o.event_type, o.payload["meter"], o.payload["value"]) for o in sent] == [
        ("usage_alert.triggered", "api_calls", "3"),
        ("usage_alert.triggered", "tokens", "0.25"),
    ]


def test_held_events_are_released_when_the_customer_appears(sessions):
    m = setup(sessions)
    with uow(m.sessions, m.scope, m.clock) as work:
        save_policy(work.session, m.scope, MeteringPolicy(unknown_customer=Unknown.HOLD))
        work.commit()
    assert m.ingest(event(1, customer="newco"), event(2, customer="newco")) == ["held", "held"]
    with uow(m.sessions, m.scope, m.clock) as work:
        cus = work.customers.add(
            CustomerRow(
                external_id="newco",
                name="N",
                currency="USD",
                timezone="UTC",
                created_at=m.clock.now(),
            )
        )
        work.session.flush()
        assert release_held(work) == 2
        work.commit()
        new_id = cus.id
    assert m.usage.meter_usage(m.scope, new_id, "api_calls", JAN).total.value == 2
    with uow(m.sessions, m.scope, m.clock) as work:
        assert release_held(work) == 0


def test_held_events_are_released_per_event_whatever_the_policy_says_now(sessions):
    m = setup(sessions)
    with uow(m.sessions, m.scope, m.clock) as work:
        save_policy(work.session, m.scope, MeteringPolicy(unknown_meter=Unknown.HOLD))
        work.commit()
    by_subscription = {
        "id": "evt_s",
        "type": "seats_used",
        "subscription": m.subscription_id,
        "timestamp": (PERIOD_START + timedelta(days=2)).isoformat(),
        "properties": {"n": "4"},
    }
    assert m.ingest(by_subscription, event("c", meter="seats_used", n="3")) == ["held", "held"]
    with uow(m.sessions, m.scope, m.clock) as work:
        save_policy(work.session, m.scope, MeteringPolicy())  # back to reject
        assert release_held(work) == 0  # the meter is still unknown
        work.meters.add(
            MeterRow(
                code="seats_used",
                name="Seats",
                aggregation="sum",
                value_field="n",
                created_at=m.clock.now(),
            )
        )
        work.session.flush()
        assert release_held(work) == 2
        work.commit()
    assert m.usage.meter_usage(m.scope, m.customer_id, "seats_used", JAN).total.value == 7
    with uow(m.sessions, m.scope, m.clock) as work:
        assert release_held(work) == 0


def _seqs(m) -> list[int]:
    """The arrival numbers of the scope's stored events."""
    with m.sessions() as session:
        return list(
            session.scalars(sa.select(EventRow.seq).where(EventRow.tenant_id == m.scope.tenant_id))
        )


def _id_keys(m, seqs: list[int]) -> list[int]:
    """Which of `seqs` SQLite's dedup key tiers hold (`event_ids.add_id_keys`); none on
    PostgreSQL."""
    with m.sessions() as session:
        return sorted(
            session.scalars(
                sa.union_all(
                    *(
                        sa.select(tier.c.seq).where(tier.c.seq.in_(seqs))
                        for tier in (RECENT_EVENT_IDS, EVENT_IDS)
                    )
                )
            )
        )


def test_purge_keeps_at_least_35_days(sessions):
    m = setup(sessions)
    m.ingest(event(1))
    sqlite = sessions.kw["bind"].dialect.name == "sqlite"
    purged = _seqs(m)
    assert _id_keys(m, purged) == (purged if sqlite else [])
    with uow(m.sessions, m.scope, m.clock) as work, pytest.raises(ValidationFailed):
        purge_events(work, m.clock.now() - timedelta(days=34))
    m.clock.advance(timedelta(days=40))
    with uow(m.sessions, m.scope, m.clock) as work:
        # The default policy accepts events 35 days old and 5 minutes ahead: keep that long.
        with pytest.raises(ValidationFailed):
            purge_events(work, m.clock.now() - timedelta(days=35))
        assert purge_events(work, m.clock.now() - timedelta(days=35, minutes=5)) == 1
        work.commit()
    assert _id_keys(m, purged) == []  # its dedup key went with it
    assert m.ingest(event(1, at=m.clock.now())) == ["accepted"]  # forgotten after the purge
    assert _id_keys(m, _seqs(m)) == (_seqs(m) if sqlite else [])


def test_purge_never_forgets_an_event_that_could_be_accepted_again(sessions):
    m = setup(sessions)
    with uow(m.sessions, m.scope, m.clock) as work:
        policy = load_policy(work.session, m.scope)
        save_policy(work.session, m.scope, replace(policy, max_past=timedelta(days=365)))
        work.commit()
    m.ingest(event(1))
    m.clock.advance(timedelta(days=100))
    with uow(m.sessions, m.scope, m.clock) as work, pytest.raises(ValidationFailed) as info:
        purge_events(work, m.clock.now() - timedelta(days=60))
    assert info.value.problems[0].field == "received_before"
    # Still kept, so a re-send is still a duplicate.
    assert m.ingest(event(1)) == ["duplicate"]


def test_a_held_event_released_after_its_period_was_invoiced_is_billed_as_an_adjustment(
    sessions,
):
    """Held events are not on the invoice of their period if that closes first; counted from
    their release, they are late usage then, and never lost."""
    m = setup(sessions)
    with uow(m.sessions, m.scope, m.clock) as work:
        save_policy(work.session, m.scope, MeteringPolicy(unknown_meter=Unknown.HOLD))
        payments = work.meters.get_by_code("payments")
        work.session.delete(payments)  # the meter is unknown when the event arrives
        work.commit()
    held = event("held", meter="payments", at=PERIOD_START + timedelta(days=9), amount="100")
    assert m.ingest(held) == ["held"]
    _close_january(m)  # January's invoice does not see the held event
    m.clock.advance(timedelta(hours=1))
    with uow(m.sessions, m.scope, m.clock) as work:
        work.meters.add(
            MeterRow(
                code="payments",
                name="payments",
                aggregation="sum",
                value_field="amount",
                group_by=[],
                created_at=m.clock.now(),
            )
        )
        work.session.flush()
        assert release_held(work) == 1
        work.commit()
    m.clock.advance(timedelta(days=1))
    with uow(m.sessions, m.scope, m.clock) as work:
        plan = plan_of(work.session, m.scope, work.subscriptions.get(m.subscription_id))
        lines = late_adjustments(work, m.customer_id, plan, at=m.clock.now())
        work.commit()
    # 1.5 % of 100 plus 0.10 for the event
    assert [(line.charge_code, line.amount.format()) for line in lines] == [("payments", "1.60")]


def test_a_purge_of_the_newest_events_by_another_process_never_lets_a_repeat_in(sessions):
    """Two processes write one store (an API process and the writer process): the second
    purges every event, the newest included, and stores new ones, which SQLite numbers with
    the purged events' seqs. The first, which had read the store up to the old newest seq
    (`id_filter`), still finds the new ids: a repeat of them is a duplicate."""
    from ratecard.adapters.db.engine import make_engine, make_session_factory
    from ratecard.services.metering.ingestion import IngestionService

    m = setup(sessions)
    assert m.ingest(*(event(i) for i in range(8))) == ["accepted"] * 8
    assert m.ingest(event(0)) == ["duplicate"]  # the first writer has read the store
    other_engine = make_engine(sessions.kw["bind"].url.render_as_string(hide_password=False))
    try:
        other = IngestionService(make_session_factory(other_engine), m.clock)
        m.clock.advance(timedelta(days=40))
        with uow(m.sessions, m.scope, m.clock) as work:
            assert purge_events(work, m.clock.now() - timedelta(days=36)) == 8
            work.commit()
        fresh = [event(f"new-{i}", at=m.clock.now()) for i in range(3)]
        assert other.ingest(m.scope, fresh).count("accepted") == 3
        assert m.ingest(*fresh, event(0, at=m.clock.now())) == ["duplicate"] * 3 + ["accepted"]
    finally:
        other_engine.dispose()


def test_rows_of_a_rolled_back_round_never_count_as_read(sessions):
    """A round stores rows and rolls back; another process then stores other events under the
    same seqs. The first process still finds their ids (`id_filter.IdFilter.stored` counts a
    round's rows as read only after its commit)."""
    from ratecard.adapters.db import event_store
    from ratecard.adapters.db.engine import make_engine, make_session_factory
    from ratecard.services.metering.ingestion import IngestionService

    m = setup(sessions)
    assert m.ingest(event("first")) == ["accepted"]
    with uow(m.sessions, m.scope, m.clock) as work:  # never committed
        new = event_store.NewEvent(
            "evt_gone", "api_calls", "acme", m.customer_id, m.clock.now(), {}
        )
        event_store.insert_events(work.session, m.scope, [new], m.clock.now())
    other_engine = make_engine(sessions.kw["bind"].url.render_as_string(hide_password=False))
    try:
        other = IngestionService(make_session_factory(other_engine), m.clock)
        assert other.ingest(m.scope, [event("theirs")]).count("accepted") == 1
        assert m.ingest(event("theirs"), event("gone")) == ["duplicate", "accepted"]
    finally:
        other_engine.dispose()


def test_a_process_starting_on_a_stored_store_finds_every_older_id(sessions, monkeypatch):
    """A new process reads the ids stored before it started through their dedup keys, a slice
    of the hash range a round (here a tenth of them), and looks every id up until it has read
    them all: each older id sent again is a duplicate, before and after."""
    from ratecard.adapters.db import id_filter
    from ratecard.adapters.db.engine import make_engine, make_session_factory
    from ratecard.services.metering.ingestion import IngestionService

    m = setup(sessions)
    assert m.ingest(*(event(f"old-{i}") for i in range(30))) == ["accepted"] * 30
    with m.sessions() as session:  # the store holds other tests' events too
        stored = session.scalar(sa.select(sa.func.count()).select_from(EventRow))
    monkeypatch.setattr(id_filter, "BACKFILL", max(1, stored // 10))
    new_engine = make_engine(sessions.kw["bind"].url.render_as_string(hide_password=False))
    try:
        later = IngestionService(make_session_factory(new_engine), m.clock)
        for i in range(30):
            result = later.ingest(m.scope, [event(f"old-{i}"), event(f"new-{i}")])
            assert [str(r.status) for r in result.results] == ["duplicate", "accepted"], i
        if new_engine.dialect.name == "sqlite":
            assert event_ids._id_filters[new_engine].complete
    finally:
        new_engine.dispose()


def test_a_held_event_without_its_meters_property_stays_held(sessions):
    """Held before its meter existed, an event is judged as it would have been at once: one
    that lacks the property the new meter counts stays held (listed as such), not counted as
    nothing."""
    m = setup(sessions)
    with uow(m.sessions, m.scope, m.clock) as work:
        save_policy(work.session, m.scope, MeteringPolicy(unknown_meter=Unknown.HOLD))
        work.commit()
    sent = m.ingest(event(1, meter="gb_used", gb="2.5"), event(2, meter="gb_used", size="9"))
    assert sent == ["held", "held"]
    with uow(m.sessions, m.scope, m.clock) as work:
        work.meters.add(
            MeterRow(
                code="gb_used",
                name="GB",
                aggregation="sum",
                value_field="gb",
                created_at=m.clock.now(),
            )
        )
        work.session.flush()
        assert release_held(work) == 1
        work.commit()
    assert m.usage.meter_usage(m.scope, m.customer_id, "gb_used", JAN).total.value == Decimal("2.5")
    with m.sessions() as session:
        still = session.scalars(
            sa.select(EventRow.event_id).where(
                EventRow.tenant_id == m.scope.tenant_id, EventRow.customer_id.is_(None)
            )
        ).all()
    assert still == ["evt_2"]


def test_a_release_reads_the_meters_as_stored_not_as_loaded(sessions):
    """A meter created (its object kept by the session past the commit, as `create_meter`
    keeps it) and redefined elsewhere before the release: the release reads it again."""
    m = setup(sessions, "Stale")
    with uow(m.sessions, m.scope, m.clock) as work:
        held = work.meters.add(  # referenced, so the session's identity map keeps it
            MeterRow(code="gpu", name="gpu", aggregation="count", created_at=m.clock.now())
        )
        work.commit()  # the session still holds the row as a count
        with uow(m.sessions, m.scope, m.clock) as other:
            redefine_meter(other, "gpu", aggregation="sum", value_property="n")
            other.commit()
        gpu = meters_to_roll_up(work.session, m.scope)["gpu"]
        assert gpu is held and (gpu.aggregation, gpu.value_field) == ("sum", "n")
