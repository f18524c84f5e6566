"""Units of work: one transaction, bound to a tenant and mode, that rolls back unless committed.

    >>> with UnitOfWork(sessions, TenantScope("ten_1", Mode.LIVE), actor="key:ak_1", clock=clock):
    ...     customer = uow.customers.get("cus_1")          # doctest: +SKIP
    ...     customer.name = "Acme GmbH"
    ...     uow.commit()

What a unit of work guarantees:
- every ORM query in it is filtered to its ``(tenant_id, mode)`` (the repositories filter
  explicitly, and a ``with_loader_criteria`` hook filters anything else that slips through);
- every row it adds belongs to its scope, and rows of ``APPEND_ONLY`` tables are never
  updated or deleted (an ``AssertionError``: that is a bug, not a user error);
- every change to an audited row becomes an audit entry (who, what, before, after), chained
  onto the tenant's log in the same transaction at ``commit()``;
- leaving the ``with`` block without ``commit()`` rolls everything back.

`AdminUnitOfWork` is the unscoped variant for what happens before a tenant is known (creating a
tenant, authenticating an API key); only `services.tenancy` uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from types import TracebackType
from typing import Any, Self

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria

from ratecard.adapters.clock import Clock
from ratecard.adapters.db import audit_log
from ratecard.adapters.db import repositories as repos
from ratecard.adapters.db.engine import read_only as engine_read_only
from ratecard.adapters.db.models import (
    APPEND_ONLY,
    AuditEntryRow,
    AuditHeadRow,
    Base,
    IdempotencyKeyRow,
    TenantRow,
    TenantScoped,
)
from ratecard.adapters.db.scope import Mode, TenantScope

#: Rows whose changes are not themselves audited (the log itself, and request bookkeeping).
UNAUDITED: tuple[type[Base], ...] = (AuditEntryRow, AuditHeadRow, IdempotencyKeyRow)


class _UnitOfWorkBase:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        actor: str,
        clock: Clock,
        read_only: bool = False,
    ) -> None:
        assert actor, "every change has an actor"
        # A reading unit of work takes no write lock on SQLite (`engine.read_only`); it cannot
        # commit.
        self._sessions = engine_read_only(sessions) if read_only else sessions
        self.read_only = read_only
        self.actor = actor
        self.clock = clock
        self._session: Session | None = None
        self._pending: list[audit_log.PendingEntry] = []

    @property
    def session(self) -> Session:
        assert self._session is not None, "use the unit of work inside `with uow:`"
        return self._session

    def __enter__(self) -> Self:
        assert self._session is None, "a unit of work is not re-entrant"
        self._session = self._sessions()
        self._pending = []
        event.listen(self._session, "before_flush", self._before_flush)
        event.listen(self._session, "after_flush", self._after_flush)
        self._open(self._session)
        return self

    def _open(self, session: Session) -> None:
        """Hook for subclasses: bind repositories to the new session."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Closing ends the transaction with a rollback (nothing uncommitted survives). On a
        # clean exit rows stay readable, detached; after an error they are expired too.
        try:
            if exc_type is not None:
                self.rollback()
        finally:
            self._pending = []
            self.session.close()
            self._session = None

    def commit(self) -> None:
        """Flush, chain the audit entries of everything changed, and commit."""
        assert not self.read_only, "a read-only unit of work does not commit"
        session = self.session
        session.flush()
        if self._pending:
            audit_log.append(session, self._pending, self.clock.now())
            self._pending = []
        session.commit()

    def rollback(self) -> None:
        self._pending = []
        self.session.rollback()

    def record(
        self,
        tenant_id: str,
        action: str,
        object_type: str,
        object_id: str | None,
        *,
        mode: Mode | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Add an explicit audit entry (e.g. a denied attempt); written at ``commit()``."""
        self._pending.append(
            audit_log.PendingEntry(
                tenant_id, mode, self.actor, action, object_type, object_id, before, after
            )
        )

    def _check_row(self, row: object, session: Session) -> None:
        """Subclasses assert that a new or changed row is theirs to write."""

    def _before_flush(self, session: Session, _context: Any, _instances: Any) -> None:
        # On PostgreSQL a read-only session runs without a transaction: a flushed change
        # would be kept at once, with nothing to roll it back.
        assert not self.read_only or not (session.new or session.dirty or session.deleted), (
            "a read-only unit of work writes nothing"
        )
        for row in session.new:
            self._check_row(row, session)
        for row in session.dirty:
            assert not isinstance(row, APPEND_ONLY) or not session.is_modified(row), (
                f"{type(row).__name__} is append-only"
            )
            self._check_row(row, session)
        for row in session.deleted:
            assert not isinstance(row, APPEND_ONLY), f"{type(row).__name__} is append-only"
            self._check_row(row, session)

    def _after_flush(self, session: Session, _context: Any) -> None:
        # Pre-flush state and attribute history are still visible here; ids are assigned.
        for row in session.new:
            self._capture(row, "created", None, _snapshot(row, current=True))
        for row in session.dirty:
            if isinstance(row, Base) and session.is_modified(row):
                before, after = _snapshot(row, current=False), _snapshot(row, current=True)
                if before != after:
                    self._capture(row, "updated", before, after)
        for row in session.deleted:
            self._capture(row, "deleted", _snapshot(row, current=True), None)

    def _capture(
        self, row: object, verb: str, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> None:
        if not isinstance(row, Base) or isinstance(row, UNAUDITED):
            return
        if isinstance(row, TenantRow):
            tenant_id, mode = row.id, None
        else:
            assert isinstance(row, TenantScoped), f"{type(row).__name__} has no tenant"
            tenant_id, mode = row.tenant_id, row.mode
        object_type = _object_type(row)
        object_id = inspect(row).identity  # type: ignore[attr-defined]
        self._pending.append(
            audit_log.PendingEntry(
                tenant_id=tenant_id,
                mode=mode,
                actor=self.actor,
                action=f"{object_type}.{verb}",
                object_type=object_type,
                object_id=None if object_id is None else "/".join(str(k) for k in object_id),
                before=before,
                after=after,
            )
        )


#: Told after a commit which (customer id, meter code) pairs' usage changed.
UsageListener = Callable[[TenantScope, frozenset[tuple[str, str]]], None]


class UnitOfWork(_UnitOfWorkBase):
    """A transaction bound to one tenant and mode, with its repositories.

    Code that changes usage outside ingestion (releasing held events) reports it with
    `usage_changed`; after the commit the `usage_listeners` hear it (the entitlement cache,
    the alerts), as they hear ingestion's batches. Nothing is heard of a rollback.
    """

    customers: repos.CustomerRepository
    meters: repos.MeterRepository
    features: repos.FeatureRepository
    plans: repos.PlanRepository
    plan_versions: repos.PlanVersionRepository
    price_overrides: repos.PriceOverrideRepository
    coupons: repos.CouponRepository
    subscriptions: repos.SubscriptionRepository
    subscription_changes: repos.SubscriptionChangeRepository
    api_keys: repos.ApiKeyRepository

    def __init__(
        self,
        sessions: sessionmaker[Session],
        scope: TenantScope,
        *,
        actor: str,
        clock: Clock,
        usage_listeners: Sequence[UsageListener] = (),
        read_only: bool = False,
    ) -> None:
        assert isinstance(scope, TenantScope), "a unit of work is bound to a TenantScope"
        super().__init__(sessions, actor=actor, clock=clock, read_only=read_only)
        self.scope = scope
        self.usage_listeners = tuple(usage_listeners)
        self._usage_changed: set[tuple[str, str]] = set()

    def usage_changed(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Usage of these (customer id, meter code) pairs changes when this commits."""
        self._usage_changed.update(pairs)

    def commit(self) -> None:
        super().commit()
        changed, self._usage_changed = frozenset(self._usage_changed), set()
        if changed:
            for listener in self.usage_listeners:
                listener(self.scope, changed)

    def rollback(self) -> None:
        self._usage_changed = set()
        super().rollback()

    def _open(self, session: Session) -> None:
        scope = self.scope
        self._usage_changed = set()
        session.info["scope"] = scope
        event.listen(session, "do_orm_execute", _scope_filter(scope))
        self.customers = repos.CustomerRepository(session, scope)
        self.meters = repos.MeterRepository(session, scope)
        self.features = repos.FeatureRepository(session, scope)
        self.plans = repos.PlanRepository(session, scope)
        self.plan_versions = repos.PlanVersionRepository(session, scope)
        self.price_overrides = repos.PriceOverrideRepository(session, scope)
        self.coupons = repos.CouponRepository(session, scope)
        self.subscriptions = repos.SubscriptionRepository(session, scope)
        self.subscription_changes = repos.SubscriptionChangeRepository(session, scope)
        self.api_keys = repos.ApiKeyRepository(session, scope)

    def _check_row(self, row: object, session: Session) -> None:
        if isinstance(row, TenantScoped):
            assert (row.tenant_id, row.mode) == (self.scope.tenant_id, self.scope.mode), (
                f"{type(row).__name__} outside the unit of work's scope {self.scope}"
            )
        elif isinstance(row, TenantRow):
            assert row.id == self.scope.tenant_id, "a unit of work touches only its own tenant"

    def audit(
        self,
        action: str,
        object_type: str,
        object_id: str | None,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Add an explicit audit entry in this scope; written at ``commit()``."""
        self.record(
            self.scope.tenant_id,
            action,
            object_type,
            object_id,
            mode=self.scope.mode,
            before=before,
            after=after,
        )

    @property
    def tenant(self) -> TenantRow:
        """This unit of work's own tenant row (settings)."""
        row = self.session.get(TenantRow, self.scope.tenant_id)
        assert row is not None, f"tenant {self.scope.tenant_id} vanished"
        return row

    def scope_now(self) -> datetime:
        """ "Now" in this scope: the clock in live mode; in test mode the tenant's test clock,
        once moved (as `TenancyService.now_for` reads it for a request)."""
        if self.scope.mode is Mode.LIVE:
            return self.clock.now()
        return self.tenant.test_clock_at or self.clock.now()


class AdminUnitOfWork(_UnitOfWorkBase):
    """Unscoped: tenants and API keys across tenants. For `services.tenancy` only."""

    tenants: repos.TenantRepository
    keys: repos.KeyLookup

    def _open(self, session: Session) -> None:
        self.tenants = repos.TenantRepository(session)
        self.keys = repos.KeyLookup(session)


def _scope_filter(scope: TenantScope) -> Any:
    tenant_id, mode = scope.tenant_id, scope.mode

    def add_criteria(state: ORMExecuteState) -> None:
        if state.is_select or state.is_update or state.is_delete:
            state.statement = state.statement.options(
                with_loader_criteria(
                    TenantScoped,
                    lambda cls: (cls.tenant_id == tenant_id) & (cls.mode == mode),
                    include_aliases=True,
                )
            )

    return add_criteria


def _object_type(row: Base) -> str:
    name = str(type(row).__tablename__)
    singular = {
        "subscription_changes": "subscription_change",
        "plan_versions": "plan_version",
        "metering_policies": "metering_policy",
    }
    return singular.get(name, name.removesuffix("s"))


def _snapshot(row: Base, *, current: bool) -> dict[str, Any]:
    """The row's audited columns as JSON values (``current=False``: as loaded, before changes)."""
    state = inspect(row)
    values: dict[str, Any] = {}
    for column_attr in state.mapper.column_attrs:
        column = column_attr.columns[0]
        if column.info.get("audit", True) is False:
            continue
        attr = state.attrs[column_attr.key]
        value = attr.value
        if not current:
            history = attr.history
            if history.deleted:
                value = history.deleted[0]
        values[column.name] = _jsonable(value)
    return values


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return audit_log.instant_text(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
