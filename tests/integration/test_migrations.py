"""The packaged Alembic revisions build the schema the models describe, on both engines."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ratecard.adapters.db import event_ids, event_reads, event_store, rollup_rows
from ratecard.adapters.db.engine import make_engine, make_session_factory, sqlite_file, wal_sync
from ratecard.adapters.db.models import ROLLUP_KEY, ROLLUP_VALUES, Base, EventRow
from ratecard.adapters.db.schema import alembic_config, current_revision, head_revision, migrate
from ratecard.adapters.db.scope import Mode, TenantScope
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
    dialect = engine.dialect.name

    def on_this_engine(obj: Any, *_: Any) -> bool:
        """Constraints and indexes declared for one dialect only (`ddl_if`) exist only there."""
        condition = getattr(obj, "_ddl_if", None)
        return condition is None or condition.dialect in (None, dialect)

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": False, "include_object": on_this_engine}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_events_refer_to_their_tenant_by_foreign_key_on_sqlite_only(fresh_database):
    """0014: PostgreSQL checked the key with a trigger and a query per stored event."""
    engine = fresh_database.engine
    sqlite = fresh_database.kind == "sqlite"

    def referred() -> list[str]:
        keys = sa.inspect(engine).get_foreign_keys("events")
        return [key["referred_table"] for key in keys]

    migrate(engine)
    assert referred() == (["tenants"] if sqlite else [])
    command.downgrade(alembic_config(engine), "0013")
    assert referred() == ["tenants"]
    assert migrate(engine) == head_revision()
    assert referred() == (["tenants"] if sqlite else [])


def test_sqlite_dedups_on_id_hash_tiers_and_postgresql_on_a_hash_of_the_scoped_id(database):
    indexes = {
        tuple(ix["column_names"]): bool(ix["unique"])
        for ix in sa.inspect(database.engine).get_indexes("events")
    }
    uniques = {
        tuple(uq["column_names"])
        for uq in sa.inspect(database.engine).get_unique_constraints("events")
    }
    assert ("tenant_id", "mode", "event_id") not in uniques
    assert ("id_hash",) not in indexes  # SQLite: the two key tiers instead (0013)
    if database.kind == "sqlite":
        for tier in ("event_ids", "event_ids_recent"):
            assert sa.inspect(database.engine).get_pk_constraint(tier)["constrained_columns"] == [
                "id_hash",
                "seq",
            ]
        return
    with database.engine.connect() as connection:
        definition = connection.exec_driver_sql(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = 'ex_events_scoped_id' AND contype = 'x'"
        ).scalar()
    assert definition == (
        "EXCLUDE USING hash (((((((tenant_id)::text || chr(31)) || (mode)::text) || chr(31)) "
        "|| (event_id)::text)) WITH =)"
    )


def test_postgresql_refuses_a_second_event_with_an_id_and_finds_an_id_through_its_index(
    database,
):
    """The exclusion constraint is exact (a hash match compares the full texts), and lookups
    by id (`event_ids.id_matches`, `existing_ids`) are written so the planner uses it."""
    if database.kind != "postgres":
        return
    sessions = make_session_factory(database.engine)
    scope = TenantScope("ten_1", Mode.LIVE)
    row = (
        "INSERT INTO events (tenant_id, mode, event_id, meter_code, customer_ref, occurred_at, "
        "occurred_hour, received_at, properties) VALUES ('ten_1', :mode, :id, 'm', 'c', now(), "
        "0, now(), '{}')"
    )
    with database.engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")  # no tenant row
        for mode, event_id in (("live", "evt_1"), ("test", "evt_1"), ("live", "evt_2")):
            connection.execute(sa.text(row), {"mode": mode, "id": event_id})
    with (
        pytest.raises(sa.exc.IntegrityError, match="ex_events_scoped_id"),
        database.engine.begin() as connection,
    ):
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.execute(sa.text(row), {"mode": "live", "id": "evt_1"})
    with sessions() as session:
        assert event_ids.existing_ids(session, scope, ["evt_1", "evt_3"]) == {"evt_1"}
        # The expression the lookups write is the index's: the planner can take it (which
        # index it prefers in a tiny table full of other tests' events is its own choice).
        by_key = sa.select(EventRow.seq).where(
            event_ids.scoped_id(scope, "evt_2") == event_ids.scoped_id_text
        )
        compiled = by_key.compile(database.engine, compile_kwargs={"literal_binds": True})
        connection = session.connection()
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = " ".join(r[0] for r in connection.exec_driver_sql(f"EXPLAIN {compiled}"))
        assert "ex_events_scoped_id" in plan
        lookup = sa.select(EventRow.seq).where(event_ids.id_matches(session, scope, "evt_2"))
        assert session.scalar(lookup) == session.scalar(by_key) is not None


def test_the_event_log_pages_through_an_index_of_its_scope(database):
    """`GET /v1/events` walks (tenant, mode, seq), not every tenant's events (0011): an index
    beside SQLite's rowid, PostgreSQL's primary key (0018: one B-tree on arrival order)."""
    inspector = sa.inspect(database.engine)
    indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("events")}
    key = inspector.get_pk_constraint("events")["constrained_columns"]
    page = (
        "SELECT seq FROM events WHERE tenant_id = 't' AND mode = 'live' AND seq < 100 "
        "ORDER BY seq DESC LIMIT 10"
    )
    with database.engine.connect() as connection:
        if database.kind == "sqlite":
            assert key == ["seq"]
            assert indexes["ix_events_tenant_id_mode_seq"] == ["tenant_id", "mode", "seq"]
            plan = " ".join(
                str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {page}")
            )
            assert "ix_events_tenant_id_mode_seq" in plan and "TEMP B-TREE" not in plan
        else:
            assert key == ["tenant_id", "mode", "seq"]
            assert indexes.keys() == {
                "ex_events_scoped_id",  # the dedup constraint's hash index (0012)
                "ix_events_tenant_id_mode_customer_id_meter_code_occurred_hour",
            }, "no second index on arrival order"
            connection.exec_driver_sql("SET enable_seqscan = off")  # an empty table
            plan = " ".join(str(r[0]) for r in connection.exec_driver_sql(f"EXPLAIN {page}"))
            assert "pk_events" in plan and "Sort" not in plan, plan


def test_rollups_have_one_index_their_key_carrying_the_values_on_postgresql(database):
    """A merged rollup row updates one index; usage queries still read it alone (0015)."""
    inspector = sa.inspect(database.engine)
    assert inspector.get_pk_constraint("usage_rollups")["constrained_columns"] == list(ROLLUP_KEY)
    assert inspector.get_indexes("usage_rollups") == []
    if database.kind != "sqlite":
        with database.engine.connect() as connection:
            (definition,) = connection.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'usage_rollups' "
                "AND schemaname = current_schema()"
            ).one()
        assert definition.endswith(
            f"({', '.join(ROLLUP_KEY)}) INCLUDE ({', '.join(ROLLUP_VALUES)})"
        )


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


@pytest.mark.parametrize("uri", [False, True])
def test_a_writer_engine_syncs_its_wal_later_and_wal_sync_puts_it_on_disk(
    tmp_path, monkeypatch, uri
):
    """`sync_later`: commits at NORMAL (no fsync under the write lock); `wal_sync` is the fsync
    of the WAL file that FULL would have made in each commit, found however the URL names the
    database, and followed when a new WAL replaces the old one."""
    path = tmp_path / "w.db"
    url = f"sqlite:///file:{path}?uri=true" if uri else f"sqlite:///{path}"
    engine = make_engine(url, Settings(), sync_later=True)
    sync = wal_sync(engine)
    assert sync is not None
    sync()  # before any connection: nothing committed, nothing to sync
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    try:
        with engine.begin() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        sync()
        assert synced == [f"{path}-wal"]
        engine.dispose()  # the last connection closes: checkpointed, the WAL removed
        synced.clear()
        sync()
        assert synced == []
        with engine.begin() as connection:  # a new WAL file
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        sync()
        assert synced == [f"{path}-wal"]
        assert os.readlink(f"/proc/self/fd/{wal_fd(engine)}") == f"{path}-wal"
    finally:
        engine.dispose()


def wal_fd(engine):
    """The descriptor `wal_sync` keeps open on the engine's WAL."""
    from ratecard.adapters.db.engine import _SYNCED_LATER

    return _SYNCED_LATER[engine]._fd


@pytest.mark.parametrize("synchronous", ["NORMAL", "EXTRA"])
def test_sync_later_leaves_other_settings_and_stores_as_they_are(tmp_path, synchronous):
    engine = make_engine(
        f"sqlite:///{tmp_path / 'n.db'}", Settings(sqlite_synchronous=synchronous), sync_later=True
    )
    memory = make_engine("sqlite://", Settings(), sync_later=True)
    try:
        with engine.connect() as connection:
            expected = {"NORMAL": 1, "EXTRA": 3}[synchronous]
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == expected
        assert wal_sync(engine) is None  # nothing deferred: nothing to wait for
        assert wal_sync(memory) is None
        assert wal_sync(make_engine(f"sqlite:///{tmp_path / 'f.db'}", Settings())) is None
    finally:
        engine.dispose()
        memory.dispose()


def test_upgrading_keeps_events_deduplicated_and_merges_stored_rollup_partials(fresh_database):
    """Revisions 0005 (SQLite's id hash) and 0006 (one rollup row per key) on a used store."""
    engine = fresh_database.engine
    migrate(engine, "0004")
    stamp = "2024-01-02T03:00:00.000000+00:00"
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO tenants (id, name, default_currency, timezone, rounding_mode, "
                "proration_convention, net_terms_days, invoice_number_prefix, branding, "
                "created_at) VALUES ('ten_1', 'T', 'USD', 'UTC', 'half_even', 'lago', 30, 'INV', "
                "'{}', :at)"
            ),
            {"at": stamp},
        )
        connection.execute(
            sa.text(
                "INSERT INTO events (tenant_id, mode, seq, event_id, meter_code, customer_ref, "
                "customer_id, occurred_at, received_at, properties) VALUES "
                "('ten_1', 'live', 1, 'evt_1', 'tokens', 'acme', 'cus_1', :at, :at, '{}')"
            ),
            {"at": stamp},
        )
        for count, total, seq in ((2, "1.5", 4), (3, "2.25", 9)):
            connection.execute(
                sa.text(
                    "INSERT INTO usage_rollups (tenant_id, mode, customer_id, meter_code, "
                    "hour_at, group_key, event_count, value_count, value_sum, value_min, "
                    "value_max, latest_value, latest_at, latest_seq) VALUES ('ten_1', 'live', "
                    "'cus_1', 'tokens', :at, '[]', :n, :n, :sum, :sum, :sum, :sum, :at, :seq)"
                ),
                {"at": stamp, "n": count, "sum": total, "seq": seq},
            )
    assert migrate(engine) == head_revision()
    scope = TenantScope("ten_1", Mode.LIVE)
    with make_session_factory(engine)() as session:
        assert event_ids.existing_ids(session, scope, ["evt_1", "evt_2"]) == {"evt_1"}
        # 0017: a tenant from before counts no change to its meters yet
        assert session.scalar(sa.text("SELECT meters_revision FROM tenants")) == 0
        # 0008: the hour the time index is keyed on, filled in; reads find the event through it
        at = datetime(2024, 1, 2, 3, tzinfo=UTC)
        hour = session.scalar(sa.text("SELECT occurred_hour FROM events"))
        assert hour == event_store.hour_number(at) == 473_379
        found = event_reads.read_events(
            session, scope, "cus_1", "tokens", start_at=at, end_at=datetime(2024, 1, 3, tzinfo=UTC)
        )
        assert [(e.timestamp, seq) for e, seq in found] == [(at, 1)]
        rows = rollup_rows.read_rollups(
            session,
            scope,
            "cus_1",
            "tokens",
            from_hour=None,
            to_hour=datetime(2025, 1, 1, tzinfo=UTC),
        )
    assert len(rows) == 1
    (_, group, partial) = rows[0]
    assert group == ()
    assert (partial.event_count, partial.value_sum, partial.latest_seq) == (5, Decimal("3.75"), 9)
    assert (partial.value_min, partial.value_max) == (Decimal("1.5"), Decimal("2.25"))
    # 0012 and 0013 undone and done again: the dedup key as it was, then back in place
    command.downgrade(alembic_config(engine), "0011")
    indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("events")}
    uniques = {uq["name"] for uq in sa.inspect(engine).get_unique_constraints("events")}
    assert ("ix_events_id_hash" in indexes) == (fresh_database.kind == "sqlite")
    assert ("uq_events_tenant_id_mode_event_id" in uniques) == (fresh_database.kind == "postgres")
    assert "event_ids" not in sa.inspect(engine).get_table_names()
    assert migrate(engine) == head_revision()
    with make_session_factory(engine)() as session:
        assert event_ids.existing_ids(session, scope, ["evt_1", "evt_2"]) == {"evt_1"}
        assert (
            session.scalar(
                sa.select(sa.func.count())
                .select_from(EventRow)
                .where(event_ids.id_matches(session, scope, "evt_1"))
            )
            == 1
        )


def test_0007_adds_meter_rounding_keeping_existing_meters_unrounded(fresh_database):
    engine = fresh_database.engine
    assert migrate(engine, "0006") == "0006"
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
    assert migrate(engine, "0007") == "0007"
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
    command.downgrade(alembic_config(engine), "0006")
    columns = {c["name"] for c in sa.inspect(engine).get_columns("meters")}
    assert "rounding_mode" not in columns and "rounding_precision" not in columns


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////var/lib/rc.db", "/var/lib/rc.db"),
        ("sqlite:///./var/rc.db", "./var/rc.db"),
        ("sqlite:///file:/var/lib/rc%20x.db?uri=true", "/var/lib/rc x.db"),
        ("sqlite:///file:/var/lib/rc.db?mode=memory&uri=true", None),
        ("sqlite:///file::memory:?cache=shared&uri=true", None),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql+psycopg://u@h/db", None),
    ],
)
def test_sqlite_file_is_the_path_of_the_database_file(url, path):
    assert sqlite_file(sa.engine.make_url(url)) == path
