"""Column types round-trip exactly on both engines; the metadata holds no Float."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.db.models import Base, CouponRow, TenantScoped
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.db.types import dumps, loads
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.services.tenancy import TenancyService, TenantSettings

BIG_MINOR = 9_223_372_036_854_775_807  # the largest BIGINT


def _roundtrip(sessions: sessionmaker[Session], clock: object, **fields: object) -> CouponRow:
    tenancy = TenancyService(sessions, clock)  # type: ignore[arg-type]
    tenant = tenancy.create_tenant("Types")
    scope = TenantScope(tenant.id, Mode.LIVE)
    with UnitOfWork(sessions, scope, actor="test", clock=clock) as uow:  # type: ignore[arg-type]
        row = uow.coupons.add(
            CouponRow(code="c", name="c", duration="once", created_at=clock.now(), **fields)  # type: ignore[attr-defined]
        )
        uow.commit()
        coupon_id = row.id
    with sessions() as session:  # a new session: values come from the database
        stored = session.get(CouponRow, coupon_id)
        assert stored is not None
        return stored


@pytest.mark.parametrize(
    "value",
    [
        Decimal("0.000000000125"),
        Decimal("123456789012345678.123456789012"),
        Decimal("-0.000000000001"),
        Decimal("1.100000000000"),
        Decimal("0"),
    ],
)
def test_decimal_round_trips_exactly(sessions, clock, value):
    stored = _roundtrip(sessions, clock, percent_off=value)
    assert isinstance(stored.percent_off, Decimal)
    assert stored.percent_off == value
    assert stored.percent_off.as_tuple() == value.as_tuple()  # same digits and places


def test_big_minor_units_round_trip(sessions, clock):
    stored = _roundtrip(sessions, clock, amount_off_minor=BIG_MINOR, currency="JPY")
    assert stored.amount_off_minor == BIG_MINOR
    stored = _roundtrip(sessions, clock, amount_off_minor=-BIG_MINOR, currency="JPY")
    assert stored.amount_off_minor == -BIG_MINOR


def test_aware_datetimes_come_back_as_aware_utc(sessions, clock):
    kolkata = timezone(timedelta(hours=5, minutes=30))
    instant = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=kolkata)
    stored = _roundtrip(sessions, clock, percent_off=Decimal(10), redeem_by=instant)
    assert stored.redeem_by == instant
    assert stored.redeem_by is not None and stored.redeem_by.tzinfo == UTC
    assert stored.redeem_by.isoformat() == "2024-02-29T18:29:59.999999+00:00"


def test_naive_datetimes_are_refused(sessions, clock):
    naive = datetime(2024, 1, 1)  # noqa: DTZ001 - the point of the test
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        _roundtrip(sessions, clock, percent_off=Decimal(10), redeem_by=naive)


def test_float_is_refused_by_decimal_columns(sessions, clock):
    with pytest.raises(sa.exc.StatementError, match="Decimal or int"):
        _roundtrip(sessions, clock, percent_off=0.5)


def test_json_documents_refuse_floats_and_read_decimals():
    with pytest.raises(TypeError, match="float"):
        dumps({"price": 0.5})
    assert dumps({"b": 1, "a": "0.5"}) == '{"a":"0.5","b":1}'
    assert loads('{"x": 0.1}') == {"x": Decimal("0.1")}
    with pytest.raises(ValueError, match="NaN"):
        loads('{"x": NaN}')


def test_json_round_trips_big_integers_and_unicode(sessions, clock):
    tenancy = TenancyService(sessions, clock)
    tenant = tenancy.create_tenant(
        "Jsön", TenantSettings(branding={"n": BIG_MINOR, "name": "Zürich ✓"})
    )
    assert tenancy.get_tenant(tenant.id).branding == {"n": BIG_MINOR, "name": "Zürich ✓"}


def test_no_float_column_exists():
    for table in Base.metadata.tables.values():
        for column in table.columns:
            assert not isinstance(column.type, sa.Float), f"{table.name}.{column.name}"
            impl = getattr(column.type, "impl", None)
            assert not isinstance(impl, sa.Float), f"{table.name}.{column.name}"


def test_the_live_schema_has_no_float_column(engine: Engine):
    inspector = sa.inspect(engine)
    for table in inspector.get_table_names():
        for column in inspector.get_columns(table):
            type_name = str(column["type"]).upper()
            assert "FLOAT" not in type_name and "REAL" not in type_name, (table, column)
            assert "DOUBLE" not in type_name, (table, column)


def test_tenant_tables_lead_every_key_and_index_with_tenant_and_mode():
    scoped = [
        mapper.class_.__table__
        for mapper in Base.registry.mappers
        if issubclass(mapper.class_, TenantScoped)
    ]
    assert len(scoped) >= 10
    # a key's hash is global; the event id hash covers the tenant and mode (`event_ids.id_hash`)
    exempt = {("api_keys", ("secret_hash",)), ("events", ("id_hash",))}
    for table in scoped:
        assert [c.name for c in table.columns][:2] == ["tenant_id", "mode"], table.name
        keys = [
            tuple(c.name for c in u.columns)
            for u in table.constraints
            if isinstance(u, sa.UniqueConstraint)
        ]
        keys += [tuple(c.name for c in i.columns) for i in table.indexes]
        for key in keys:
            if (table.name, key) in exempt:
                continue
            assert key[:2] == ("tenant_id", "mode"), (table.name, key)
