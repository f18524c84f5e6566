"""Usage queries give the invoice's numbers: rollups equal raw aggregation; cost equals lines."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ratecard.adapters.db import event_reads, rollup_rows, usage_reads
from ratecard.adapters.db.models import (
    PriceOverrideRow,
    SubscriptionChangeRow,
    SubscriptionRow,
    TenantRow,
)
from ratecard.core.billing import BillingConventions
from ratecard.core.errors import NotFound
from ratecard.core.money import RoundingMode
from ratecard.core.periods import Period
from ratecard.core.proration import ProrationPolicy
from ratecard.core.subscription_model import PlanRef
from ratecard.services.metering.meters import redefine_meter
from ratecard.services.metering.priced_usage import plan_of
from ratecard.services.metering.usage_reader import Granularity, UsageReader
from ratecard.services.rating import SubscriptionSpec, subscription_drafts
from tests.integration.factories import customer, uow
from tests.integration.metering_setup import (
    PERIOD_END,
    PERIOD_START,
    counted,
    event,
    raw_usage,
    setup,
)

METERS = ("api_calls", "tokens", "payments", "peak", "users", "storage")


def _load(m, n: int = 300, seed: int = 7) -> None:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        at = PERIOD_START + timedelta(seconds=rng.randrange(0, 20 * 86400))
        meter = METERS[i % len(METERS)]
        props = {
            "tokens": str(Decimal(rng.randrange(1, 10**6)) / 1000),
            "model": rng.choice(["a", "b"]),
            "amount": str(Decimal(rng.randrange(100, 10**5)) / 100),
            "gb": str(rng.randrange(-5, 50)),
            "user": rng.choice("uvwxyz"),
        }
        events.append(event(i, meter=meter, at=at, **props))
    events.append(event("edge", meter="tokens", at=PERIOD_START, tokens="1", model="a"))
    events.append(
        event(
            "before",
            meter="tokens",
            at=PERIOD_START - timedelta(microseconds=1),
            tokens="1000",
            model="a",
        )
    )
    result = m.ingestion.ingest(m.scope, events)
    assert result.count("accepted") == len(events)


def test_rollup_reads_equal_raw_aggregation_on_odd_periods(sessions):
    m = setup(sessions)
    _load(m)
    rng = random.Random(3)
    periods = [Period(PERIOD_START, PERIOD_END)]
    for _ in range(6):
        start = PERIOD_START + timedelta(seconds=rng.randrange(0, 10 * 86400))
        periods.append(Period(start, start + timedelta(seconds=rng.randrange(1, 10 * 86400))))
    periods.append(Period(PERIOD_START + timedelta(minutes=5), PERIOD_START + timedelta(minutes=7)))
    for period in periods:
        for meter in METERS:
            assert m.usage.meter_usage(m.scope, m.customer_id, meter, period) == raw_usage(
                m, meter, period
            ), (meter, period)


def test_rounded_meters_read_the_same_from_rollups_and_raw_events(sessions):
    m = setup(sessions)
    _load(m)
    modes = [RoundingMode.UP, RoundingMode.DOWN, RoundingMode.HALF_EVEN, RoundingMode.CEILING]
    with uow(sessions, m.scope, m.clock) as work:
        for i, code in enumerate(METERS):
            row = work.meters.get_by_code(code)
            row.rounding_mode, row.rounding_precision = str(modes[i % len(modes)]), i % 3
        work.commit()
    period = Period(PERIOD_START + timedelta(hours=5, minutes=7), PERIOD_END)
    for code in METERS:
        read = m.usage.meter_usage(m.scope, m.customer_id, code, period)
        assert read == raw_usage(m, code, period), code
        with m.sessions() as session:
            rounding = UsageReader(session, m.scope).spec(code).rounding
        assert rounding is not None and read.total.unrounded is not None
        assert read.total.exact == rounding.round(read.total.unrounded), code
        places = -read.total.value.as_tuple().exponent  # type: ignore[operator]
        assert places <= rounding.precision, (code, read.total.value)


def test_cost_so_far_equals_the_invoice_lines(sessions):
    m = setup(sessions)
    _load(m, n=900)  # 150 calls: past the 100 free ones
    report = m.usage.subscription_usage(m.scope, m.subscription_id)
    with uow(sessions, m.scope, m.clock) as work:
        sub = work.subscriptions.get(m.subscription_id)
        plan = plan_of(work.session, m.scope, sub)
    spec = SubscriptionSpec(m.subscription_id, PlanRef("usage", 1), PERIOD_START)
    conventions = BillingConventions(RoundingMode.HALF_UP, ProrationPolicy(RoundingMode.HALF_UP))
    drafts = subscription_drafts(
        spec,
        [],
        {("usage", 1): plan},
        usage=m.usage.usage_source(m.scope, m.customer_id),
        conventions=conventions,
        until_at=PERIOD_END,
    )
    invoice_lines = {
        line.charge_code: line
        for d in drafts
        if d.at == PERIOD_END
        for line in d.lines
        if line.kind == "usage"
    }
    assert set(invoice_lines) == {"calls", "tokens", "payments"}
    for meter_usage in report.meters:
        line = invoice_lines[meter_usage.charge_code]
        assert meter_usage.line.amount == line.amount, meter_usage.charge_code
        assert meter_usage.quantity == line.quantity
    assert all(u.line.amount.amount_minor > 0 for u in report.meters)


def test_series_buckets_sum_to_the_total(sessions):
    m = setup(sessions)
    _load(m)
    period = Period(PERIOD_START + timedelta(hours=5, minutes=3), PERIOD_START + timedelta(days=9))
    total = m.usage.meter_usage(m.scope, m.customer_id, "tokens", period).total.value
    for granularity in Granularity:
        series = m.usage.series(m.scope, m.customer_id, "tokens", period, granularity)
        assert series[0][0].start_at == period.start_at and series[-1][0].end_at == period.end_at
        assert sum(r.total.value for _, r in series) == total
    daily = m.usage.series(m.scope, m.customer_id, "users", period, Granularity.DAY)
    assert len(daily) == 9


def test_redefining_a_meter_reaggregates_from_raw_events(sessions):
    m = setup(sessions)
    _load(m)
    period = Period(PERIOD_START, PERIOD_END)
    before = m.usage.meter_usage(m.scope, m.customer_id, "tokens", period)
    with uow(sessions, m.scope, m.clock) as work:
        redefine_meter(work, "tokens", aggregation="max", filters={"model": ["a"]}, group_by=[])
        work.commit()
    after = m.usage.meter_usage(m.scope, m.customer_id, "tokens", period)
    assert after == raw_usage(m, "tokens", period)
    assert after.total.value != before.total.value and after.groups == ()
    assert after.total.value == max(
        Decimal(e.properties["tokens"])
        for e, _ in _events(m, "tokens")
        if e.properties["model"] == "a" and e.timestamp >= PERIOD_START
    )


def test_an_aggregation_that_reads_the_same_partials_is_changed_without_a_rebuild(sessions):
    """Sum, max, min, latest and average read the same rollup partials: changing one into
    another rebuilds nothing and reads right at once; a new group-by or a move to a unique
    count (raw events) still rebuilds."""
    m = setup(sessions)
    _load(m)
    period = Period(PERIOD_START, PERIOD_END)
    for kind in ("max", "min", "latest", "average", "sum"):
        with uow(sessions, m.scope, m.clock) as work:
            assert redefine_meter(work, "tokens", aggregation=kind) == 0, kind
            work.commit()
        assert m.usage.meter_usage(m.scope, m.customer_id, "tokens", period) == raw_usage(
            m, "tokens", period
        ), kind
    with uow(sessions, m.scope, m.clock) as work:
        assert redefine_meter(work, "tokens", group_by=[]) > 0  # other groups: rebuilt
        work.commit()
    assert m.usage.meter_usage(m.scope, m.customer_id, "tokens", period) == raw_usage(
        m, "tokens", period
    )
    with uow(sessions, m.scope, m.clock) as work:
        redefine_meter(work, "tokens", aggregation="unique_count")  # from raw events
        assert redefine_meter(work, "tokens", aggregation="max") > 0  # the rollups come back
        work.commit()
    assert m.usage.meter_usage(m.scope, m.customer_id, "tokens", period) == raw_usage(
        m, "tokens", period
    )


def _events(m, meter):
    with m.sessions() as session:
        return event_reads.read_events(
            session, m.scope, m.customer_id, meter, start_at=None, end_at=PERIOD_END
        )


def test_merged_rollup_reads_equal_merging_each_stored_partial(sessions):
    """Many batches into the same hours leave several partials per (hour, group); the folded
    read of the usage hot path equals merging every stored partial, for every kind."""
    from ratecard.adapters.db.models import MeterRow
    from ratecard.core.rollups import merge_groups

    m = setup(sessions)
    with uow(sessions, m.scope, m.clock) as work:
        for code, kind in (("low", "min"), ("last", "latest"), ("mean", "average")):
            work.meters.add(
                MeterRow(
                    code=code,
                    name=code,
                    aggregation=kind,
                    value_field="gb",
                    group_by=["model"],
                    created_at=m.clock.now(),
                )
            )
        work.commit()
    meters = ("api_calls", "tokens", "payments", "peak", "low", "last", "mean")
    rng = random.Random(11)
    for batch in range(6):
        events = []
        for i in range(40):
            at = PERIOD_START + timedelta(hours=rng.randrange(0, 5), seconds=rng.randrange(3))
            value = rng.choice(["2", "2.0", "-1.5", "7", "0.001", "30"])
            meter = meters[i % len(meters)]
            events.append(
                event(
                    f"{batch}-{i}",
                    meter=meter,
                    at=at,
                    gb=value,
                    tokens=value,
                    amount=value,
                    model=rng.choice(["a", "b"]),
                )
            )
        assert m.ingestion.ingest(m.scope, events).count("accepted") == len(events)
    end = PERIOD_START + timedelta(hours=6)
    with m.sessions() as session:
        for meter in meters:
            for lower in (None, PERIOD_START, PERIOD_START + timedelta(hours=2)):
                stored = rollup_rows.read_rollups(
                    session, m.scope, m.customer_id, meter, from_hour=lower, to_hour=end
                )
                expected = merge_groups({key: p} for _, key, p in stored)
                read = usage_reads.UsageRead(meter, [], (lower, end))
                (got, _), *_ = usage_reads.read_usage(session, m.scope, m.customer_id, [read])
                assert got == expected, (meter, lower)
                assert sum(p.event_count for p in got.values()) >= 1
    for meter in meters:
        period = Period(PERIOD_START + timedelta(minutes=30), end)
        assert m.usage.meter_usage(m.scope, m.customer_id, meter, period) == raw_usage(
            m, meter, period
        ), meter


def test_rollups_keep_one_merged_row_per_hour_and_group(sessions):
    """Batch after batch lands in the same rows: a busy customer's usage reads stay small."""
    m = setup(sessions)
    at = PERIOD_START + timedelta(days=2, minutes=5)
    for batch in range(4):
        events = [
            event(f"{batch}-{i}", meter="tokens", at=at + timedelta(minutes=i), tokens=str(i))
            | {"properties": {"tokens": str(batch * 10 + i), "model": "ab"[i % 2]}}
            for i in range(6)
        ]
        assert m.ingest(*events).count("accepted") == 6
    with m.sessions() as session:
        rows = rollup_rows.read_rollups(
            session, m.scope, m.customer_id, "tokens", from_hour=None, to_hour=PERIOD_END
        )
    assert sorted((hour, group) for hour, group, _ in rows) == [
        (at.replace(minute=0), ("a",)),
        (at.replace(minute=0), ("b",)),
    ]
    by_group = {group: partial for _, group, partial in rows}
    # model a: i in (0, 2, 4) of every batch; b: i in (1, 3, 5)
    assert by_group[("a",)].event_count == 12
    assert by_group[("a",)].value_sum == sum(b * 10 + i for b in range(4) for i in (0, 2, 4))
    assert by_group[("b",)].value_max == Decimal(35)
    assert by_group[("b",)].latest_value == Decimal(35)  # batch 3, minute 5: the latest
    period = Period(PERIOD_START, PERIOD_END)
    assert m.usage.meter_usage(m.scope, m.customer_id, "tokens", period) == raw_usage(
        m, "tokens", period
    )


def test_min_latest_and_average_from_merged_rollups_equal_raw_aggregation(sessions):
    """The database merges the hours (SQL on PostgreSQL, SQL plus exact sums here on SQLite):
    min, max, latest (ties at one instant broken by arrival) and average stay exact."""
    from ratecard.adapters.db.models import MeterRow

    m = setup(sessions)
    with uow(sessions, m.scope, m.clock) as work:
        for code, aggregation in (("low", "min"), ("last", "latest"), ("mean", "average")):
            work.meters.add(
                MeterRow(
                    code=code,
                    name=code,
                    aggregation=aggregation,
                    value_field="v",
                    group_by=["region"],
                    created_at=m.clock.now(),
                )
            )
        work.commit()
    rng = random.Random(11)
    values = ["-0.5", "1", "2.25", "1e-3", "7", "0.1", "12345678901234567890.123456789"]
    base = PERIOD_START + timedelta(days=3)
    for batch in range(5):
        events = []
        for i in range(40):
            at = base + timedelta(minutes=rng.randrange(0, 6 * 60))
            for code in ("low", "last", "mean"):
                events.append(
                    event(f"{code}-{batch}-{i}", meter=code, at=at)
                    | {"properties": {"v": rng.choice(values), "region": rng.choice("xy")}}
                )
        events.append(event(f"tie-{batch}", meter="last", at=base) | {"properties": {"v": "9"}})
        m.ingest(*events)
    period = Period(PERIOD_START, PERIOD_END)
    for code in ("low", "last", "mean"):
        assert m.usage.meter_usage(m.scope, m.customer_id, code, period) == raw_usage(
            m, code, period
        ), code


def test_group_values_with_copy_escapes_round_trip_through_rollups(sessions):
    """PostgreSQL's rollups go through ``COPY`` text: a tab, a newline, a backslash or a
    ``\\N`` in a group value comes back as sent, in its own group."""
    m = setup(sessions)
    at = PERIOD_START + timedelta(days=1, minutes=5)
    models = ["tab\there", "line\nbreak", "back\\slash", "\\N", "cr\rhere", "plain"]
    events = [
        event(f"esc-{i}", meter="tokens", at=at + timedelta(minutes=i))
        | {"properties": {"tokens": str(i + 1), "model": model}}
        for i, model in enumerate(models)
    ]
    assert m.ingest(*events).count("accepted") == len(models)
    with m.sessions() as session:
        rows = rollup_rows.read_rollups(
            session, m.scope, m.customer_id, "tokens", from_hour=None, to_hour=PERIOD_END
        )
    sums = {group: partial.value_sum for _, group, partial in rows}
    assert sums == {(model,): Decimal(i + 1) for i, model in enumerate(models)}


def _subscribe(
    m, work, status: str = "active", plan_code: str = "usage", period: Period | None = None
) -> str:
    period = period or Period(PERIOD_START, PERIOD_END)
    row = work.subscriptions.add(
        SubscriptionRow(
            customer_id=m.customer_id,
            plan_code=plan_code,
            plan_version=1,
            quantity=Decimal(1),
            status=status,
            anchor_at=PERIOD_START,
            timezone="UTC",
            current_period_start_at=period.start_at,
            current_period_end_at=period.end_at,
            created_at=PERIOD_START,
        )
    )
    return str(row.id)


def test_customer_usage_reports_each_live_subscription_in_id_order(sessions):
    m = setup(sessions)
    _load(m)
    # A second live subscription on a period of its own, cut inside hours at both ends.
    odd = Period(
        PERIOD_START + timedelta(days=3, minutes=17), PERIOD_START + timedelta(days=9, hours=5)
    )
    with uow(sessions, m.scope, m.clock) as work:
        second = _subscribe(m, work, period=odd)
        _subscribe(m, work, status="canceled")
        lone = work.customers.add(customer("lone", m.clock.now()))
        work.commit()
        lone_id = lone.id
    now = odd.start_at + timedelta(days=1)  # inside both periods (the rows have no timeline)
    with counted(usage_reads, "read_usage") as reads:
        reports = m.usage.customer_usage(m.scope, m.customer_id, now=now)
    assert reads == [6], "both subscriptions' three meters (two periods) in one statement"
    assert [r.subscription_id for r in reports] == sorted([m.subscription_id, second])
    periods = {m.subscription_id: Period(PERIOD_START, PERIOD_END), second: odd}
    for report in reports:
        assert report == m.usage.subscription_usage(m.scope, report.subscription_id, now=now)
        assert (report.plan_code, report.currency, report.period) == (
            "usage",
            "USD",
            periods[report.subscription_id],
        )
        by_meter = {u.meter_code: u for u in report.meters}
        assert by_meter["tokens"].group_by == ("model",)
        assert by_meter["api_calls"].group_by == ()
        for code, used in by_meter.items():
            assert used.result == raw_usage(m, code, report.period), code
    assert m.usage.customer_usage(m.scope, lone_id) == []


def _meters_revision(m) -> int:
    with m.sessions() as session:
        return session.get(TenantRow, m.scope.tenant_id).meters_revision


def test_a_report_takes_the_meters_definitions_from_the_cache_until_a_meter_changes(sessions):
    """The specs come from the process's cache while the tenant's meters revision is the one
    they were cached at: a second report reads no meter, in two statements. Redefining a
    meter raises the revision in its transaction; the next report reads and prices the new
    definition."""
    m = setup(sessions)
    _load(m)
    assert _meters_revision(m) == 6, "each meter created raised it"
    (first,) = m.usage.customer_usage(m.scope, m.customer_id)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        if statement.strip() not in ("BEGIN", "COMMIT", "ROLLBACK"):
            statements.append(statement)

    engine = sessions.kw["bind"]
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        with counted(usage_reads, "read_usage") as reads:
            (again,) = m.usage.customer_usage(m.scope, m.customer_id)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert again == first
    # `read_usage` runs on the driver's cursor: the engine sees only the subscriptions' read
    assert reads == [3] and len(statements) == 1, statements
    assert "FROM meters" not in statements[0]
    with uow(sessions, m.scope, m.clock) as work:
        redefine_meter(work, "tokens", aggregation="max", filters={"model": ["a"]}, group_by=[])
        work.commit()
    assert _meters_revision(m) == 7
    (after,) = m.usage.customer_usage(m.scope, m.customer_id)
    (tokens,) = [u for u in after.meters if u.meter_code == "tokens"]
    assert tokens.group_by == ()
    assert tokens.result == raw_usage(m, "tokens", after.period)
    assert tokens.result.total.value != {u.meter_code: u for u in first.meters}["tokens"].quantity


def test_customer_usage_of_an_unknown_or_foreign_customer_is_not_found(sessions):
    m = setup(sessions)
    other = setup(sessions, "Other")
    for scope, customer_id in ((m.scope, "cus_missing"), (m.scope, other.customer_id)):
        with pytest.raises(NotFound, match="customer"):
            m.usage.customer_usage(scope, customer_id)
    with pytest.raises(NotFound, match="subscription"):
        m.usage.subscription_usage(m.scope, other.subscription_id)


def test_usage_amounts_apply_the_subscriptions_own_overrides_over_the_customers(sessions):
    m = setup(sessions)
    m.ingest(event("t1", "tokens", tokens="2000", model="a"), event("c1"))
    own = {"plan_code": "usage", "charge_code": "tokens", "price": {"unit_price": "0.002"}}
    with uow(sessions, m.scope, m.clock) as work:
        for charge, price in (("tokens", "0.001"), ("calls", None)):
            tiers = [{"up_to": None, "unit_price": "0.5"}] if price is None else None
            work.price_overrides.add(
                PriceOverrideRow(
                    customer_id=m.customer_id,
                    plan_code="usage",
                    charge_code=charge,
                    price={"unit_price": price} if tiers is None else {"tiers": tiers},
                    created_at=m.clock.now(),
                )
            )
        for seq, overrides in ((1, [own]), (2, [])):  # only the first change carries them
            work.subscription_changes.add(
                SubscriptionChangeRow(
                    subscription_id=m.subscription_id,
                    seq=seq,
                    command="start" if seq == 1 else "change_quantity",
                    payload={"price_overrides": overrides},
                    effective_at=PERIOD_START,
                    recorded_at=PERIOD_START,
                    actor="user:test",
                )
            )
        work.commit()
    (report,) = m.usage.customer_usage(m.scope, m.customer_id)
    amounts = {u.charge_code: u.line.amount.format() for u in report.meters}
    assert amounts["tokens"] == "4.00"  # the subscription's 0.002, not the customer's 0.001
    assert amounts["calls"] == "0.50"  # the customer's tiers: 1 call at 0.5
    # A changed override is read at once (plans are cached by their document, overrides in).
    with uow(sessions, m.scope, m.clock) as work:
        (calls,) = [
            o for o in work.price_overrides.for_customer(m.customer_id) if o.charge_code == "calls"
        ]
        calls.price = {"tiers": [{"up_to": None, "unit_price": "0.25"}]}
        work.commit()
    (report,) = m.usage.customer_usage(m.scope, m.customer_id)
    assert {u.charge_code: u.line.amount.format() for u in report.meters}["calls"] == "0.25"
