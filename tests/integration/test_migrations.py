"""The packaged Alembic revisions build the schema the models describe, on both engines."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ratecard.adapters.db.engine import make_engine
from ratecard.adapters.db.models import Base
from ratecard.adapters.db.schema import (
    alembic_config,
    current_revision,
    head_revision,
    migrate,
)
from ratecard.config import Settings


def test_migrate_builds_every_table_and_is_repeatable(fresh_database):
    engine = fresh_database.engine
    assert current_revision(engine) is None
    assert migrate(engine) == head_revision()
    assert migrate(engine) == head_revision()  # a second run is a no-op
    tables = set(sa.inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_migrate_accepts_a_url(fresh_database):
    assert migrate(fresh_database.url) == head_revision()


def test_migrated_schema_matches_the_models(fresh_database):
    engine = fresh_database.engine
    migrate(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_sqlite_runs_in_wal_mode_with_foreign_keys(database):
    if database.kind != "sqlite":
        return
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        # FULL (2): a commit, hence an acknowledged event, is on disk before it returns
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_sqlite_synchronous_is_a_setting(tmp_path):
    engine = make_engine(
        f"sqlite:///{tmp_path / 'normal.db'}", Settings(sqlite_synchronous="NORMAL")
    )
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    engine.dispose()


def test_0005_adds_meter_rounding_keeping_existing_meters_unrounded(fresh_database):
    engine = fresh_database.engine
    assert migrate(engine, "0004") == "0004"
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO tenants (id, name, default_currency, timezone, rounding_mode, "
                "proration_convention, net_terms_days, invoice_number_prefix, branding, "
                "created_at) VALUES ('ten_m', 'M', 'USD', 'UTC', 'half_up', 'daily', 30, 'INV', "
                "'{}', '2024-01-01T00:00:00.000000+00:00')"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO meters (tenant_id, mode, id, code, name, aggregation, reset, "
                "snapshot, filters, group_by, created_at) VALUES ('ten_m', 'live', 'mtr_1', "
                "'calls', 'Calls', 'count', 'monthly', false, '{}', '[]', "
                "'2024-01-01T00:00:00.000000+00:00')"
            )
        )
    assert migrate(engine) == "0005"
    with engine.begin() as connection:
        row = connection.execute(
            sa.text("SELECT rounding_mode, rounding_precision FROM meters WHERE id = 'mtr_1'")
        ).one()
        assert tuple(row) == (None, None)
        for mode, precision in (("up", None), (None, 2), ("up", -1)):
            with pytest.raises(sa.exc.IntegrityError), connection.begin_nested():
                connection.execute(
                    sa.text(
                        "UPDATE meters SET rounding_mode = :mode, "
                        "rounding_precision = :precision WHERE id = 'mtr_1'"
                    ),
                    {"mode": mode, "precision": precision},
                )
    command.downgrade(alembic_config(engine), "0004")
    columns = {c["name"] for c in sa.inspect(engine).get_columns("meters")}
    assert "rounding_mode" not in columns and "rounding_precision" not in columns
