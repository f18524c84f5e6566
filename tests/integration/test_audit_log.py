"""The audit log: every change recorded with before/after, in a per-tenant hash chain."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ratecard.adapters.db.models import AuditEntryRow
from ratecard.cli_admin import app as admin_app
from ratecard.services import audit

from .factories import customer, tenant_scope, uow

AUDIT = AuditEntryRow.__table__


@pytest.fixture
def history(sessions, clock):
    """A tenant with six audit entries: tenant created, 3 customers, 1 update, 1 delete."""
    scope = tenant_scope(sessions, clock)
    with uow(sessions, scope, clock) as work:
        for n in range(3):
            work.customers.add(customer(f"c{n}", clock.now()))
        work.commit()
    with uow(sessions, scope, clock) as work:
        first = work.customers.get_by_external_id("c0")
        first.name = "Renamed"
        work.customers.delete(work.customers.get_by_external_id("c2"))
        work.commit()
    return scope


def _tamper(engine, statement):
    with engine.begin() as connection:
        connection.execute(statement)


def test_changes_are_recorded_with_actor_before_and_after(sessions, history):
    entries = audit.entries(sessions, history.tenant_id)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert [e.action for e in entries] == [
        "tenant.created",
        "customer.created",
        "customer.created",
        "customer.created",
        "customer.updated",
        "customer.deleted",
    ]
    updated = entries[4]
    assert updated.actor == "user:test" and updated.mode == "live"
    assert updated.before is not None and updated.after is not None
    assert (updated.before["name"], updated.after["name"]) == ("Customer c0", "Renamed")
    assert updated.after["created_at"] == "2024-01-31T12:00:00.000000+00:00"
    assert entries[5].after is None and entries[5].before["external_id"] == "c2"
    assert audit.verify(sessions, history.tenant_id).ok


def test_a_rolled_back_change_leaves_no_entry(sessions, clock, history):
    with uow(sessions, history, clock) as work:
        work.customers.add(customer("ghost", clock.now()))
        work.session.flush()
    assert len(audit.entries(sessions, history.tenant_id)) == 6


def test_verify_detects_an_edited_row(engine, sessions, history):
    _tamper(
        engine,
        sa.update(AUDIT)
        .where(AUDIT.c.tenant_id == history.tenant_id, AUDIT.c.seq == 5)
        .values(after={"name": "Innocent"}),
    )
    report = audit.verify(sessions, history.tenant_id)
    assert (report.ok, report.broken_seq, report.reason, report.checked) == (False, 5, "edited", 4)


def test_verify_detects_a_deleted_row(engine, sessions, history):
    _tamper(
        engine, sa.delete(AUDIT).where(AUDIT.c.tenant_id == history.tenant_id, AUDIT.c.seq == 3)
    )
    report = audit.verify(sessions, history.tenant_id)
    assert (report.ok, report.broken_seq, report.reason) == (False, 3, "missing")


def test_verify_detects_a_deleted_row_renumbered_to_hide_the_gap(engine, sessions, history):
    tid = history.tenant_id
    _tamper(engine, sa.delete(AUDIT).where(AUDIT.c.tenant_id == tid, AUDIT.c.seq == 3))
    for seq in (4, 5, 6):
        _tamper(
            engine,
            sa.update(AUDIT)
            .where(AUDIT.c.tenant_id == tid, AUDIT.c.seq == seq)
            .values(seq=seq - 1),
        )
    report = audit.verify(sessions, tid)
    assert (report.ok, report.broken_seq) == (False, 3)


def test_verify_detects_a_deleted_tail(engine, sessions, history):
    _tamper(
        engine, sa.delete(AUDIT).where(AUDIT.c.tenant_id == history.tenant_id, AUDIT.c.seq == 6)
    )
    report = audit.verify(sessions, history.tenant_id)
    assert (report.ok, report.broken_seq, report.reason) == (False, 6, "truncated")


def test_verify_detects_reordered_rows(engine, sessions, history):
    tid = history.tenant_id

    def move(src, dst):
        _tamper(
            engine,
            sa.update(AUDIT).where(AUDIT.c.tenant_id == tid, AUDIT.c.seq == src).values(seq=dst),
        )

    move(2, 100)
    move(3, 2)
    move(100, 3)
    report = audit.verify(sessions, tid)
    assert (report.ok, report.broken_seq) == (False, 2)


def test_verify_reports_the_first_broken_link(engine, sessions, history):
    for seq in (5, 3):
        _tamper(
            engine,
            sa.update(AUDIT)
            .where(AUDIT.c.tenant_id == history.tenant_id, AUDIT.c.seq == seq)
            .values(actor="someone-else"),
        )
    report = audit.verify(sessions, history.tenant_id)
    assert (report.broken_seq, report.reason) == (3, "edited")
    assert "BROKEN at seq 3" in str(report)


def test_chains_are_per_tenant(engine, sessions, clock, history):
    other = tenant_scope(sessions, clock, "Other")
    _tamper(
        engine, sa.delete(AUDIT).where(AUDIT.c.tenant_id == history.tenant_id, AUDIT.c.seq == 2)
    )
    assert audit.verify(sessions, other.tenant_id).ok
    assert not audit.verify(sessions, history.tenant_id).ok


def test_cli_audit_verify_exits_non_zero_on_a_broken_chain(database, engine, history):
    runner = CliRunner()
    args = ["audit", "verify", "--tenant", history.tenant_id, "--database-url", database.url]
    ok = runner.invoke(admin_app, args)
    assert ok.exit_code == 0, ok.output
    assert "OK (6 entries)" in ok.output
    _tamper(
        engine,
        sa.update(AUDIT)
        .where(AUDIT.c.tenant_id == history.tenant_id, AUDIT.c.seq == 4)
        .values(action="customer.nothing"),
    )
    broken = runner.invoke(admin_app, args)
    assert broken.exit_code == 1
    assert "BROKEN at seq 4: edited" in broken.output


def test_concurrent_writers_keep_one_unbroken_chain(sessions, clock):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    scope = tenant_scope(sessions, clock)
    writers = 12
    barrier = threading.Barrier(writers)

    def write(n: int) -> None:
        barrier.wait()
        with uow(sessions, scope, clock) as work:
            work.customers.add(customer(f"w{n}", clock.now()))
            work.commit()

    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(write, range(writers)))
    report = audit.verify(sessions, scope.tenant_id)
    assert report.ok, str(report)
    assert report.checked == writers + 1
