"""Tenant-scoped repositories: no way to build or query one without a `TenantScope`.

    >>> customers = CustomerRepository(session, TenantScope("ten_1", Mode.LIVE))  # doctest: +SKIP
    >>> customers.get("cus_of_another_tenant")                                     # doctest: +SKIP
    Traceback (most recent call last):
    ratecard.core.errors.NotFound: customer cus_of_another_tenant not found

Every query filters on ``(tenant_id, mode)``. Asking for another tenant's row gives `NotFound`,
exactly as for a row that does not exist, so nothing reveals whether it does.
Repositories add and read; changes are made on the returned rows and saved by the unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

from sqlalchemy import Engine, Select, bindparam, func, select
from sqlalchemy.orm import Session

from ratecard.adapters.db.engine import statement_reader
from ratecard.adapters.db.models import (
    ApiKeyRow,
    CouponRow,
    CustomerRow,
    FeatureRow,
    MeterRow,
    PlanRow,
    PlanVersionRow,
    PriceOverrideRow,
    SubscriptionChangeRow,
    SubscriptionRow,
    TenantRow,
    TenantScoped,
)
from ratecard.adapters.db.scope import Mode, Role, TenantScope, new_id
from ratecard.core.errors import NotFound
from ratecard.core.subscription_model import ACCRUING

RowT = TypeVar("RowT", bound=TenantScoped)

MAX_PAGE = 1000


class Repository(Generic[RowT]):
    """Add, get and list rows of one table within one tenant scope."""

    row_type: ClassVar[type[Any]]
    noun: ClassVar[str]
    id_prefix: ClassVar[str]

    def __init__(self, session: Session, scope: TenantScope) -> None:
        assert isinstance(scope, TenantScope), "a repository is bound to a TenantScope"
        self.session = session
        self.scope = scope

    def _select(self) -> Select[RowT]:
        row_type = self.row_type
        return select(row_type).where(
            row_type.tenant_id == self.scope.tenant_id, row_type.mode == self.scope.mode
        )

    def add(self, row: RowT) -> RowT:
        """Put ``row`` in this scope (its tenant and mode are set here) and give it an id."""
        assert isinstance(row, self.row_type), f"{type(row).__name__} in {type(self).__name__}"
        for name, expected in (("tenant_id", self.scope.tenant_id), ("mode", self.scope.mode)):
            current = getattr(row, name, None)
            assert current in (None, expected), f"row {name} {current!r} is outside {self.scope}"
            setattr(row, name, expected)
        if getattr(row, "id", None) is None:
            row.id = new_id(self.id_prefix)
        self.session.add(row)
        return row

    def find(self, row_id: str) -> RowT | None:
        return self.session.scalars(self._select().where(self.row_type.id == row_id)).one_or_none()

    def get(self, row_id: str) -> RowT:
        row = self.find(row_id)
        if row is None:
            raise NotFound(f"{self.noun} {row_id} not found")
        return row

    def get_for_update(self, row_id: str) -> RowT:
        """Like `get`, locking the row until commit (PostgreSQL; SQLite locks the database)."""
        row = self.session.scalars(
            self._select()
            .where(self.row_type.id == row_id)
            .with_for_update()
            .execution_options(populate_existing=True)  # as locked, not as read before
        ).one_or_none()
        if row is None:
            raise NotFound(f"{self.noun} {row_id} not found")
        return row

    def list(self, *, limit: int = 100, after_id: str | None = None, **equal: Any) -> list[RowT]:
        """Rows ordered by id, ``limit`` at a time after ``after_id``; ``equal`` filters columns."""
        assert 0 < limit <= MAX_PAGE, f"limit must be 1..{MAX_PAGE}"
        statement = self._select()
        for name, value in equal.items():
            statement = statement.where(getattr(self.row_type, name) == value)
        if after_id is not None:
            statement = statement.where(self.row_type.id > after_id)
        return list(self.session.scalars(statement.order_by(self.row_type.id).limit(limit)))

    def count(self, **equal: Any) -> int:
        statement = select(func.count()).select_from(self.row_type)
        statement = statement.where(
            self.row_type.tenant_id == self.scope.tenant_id,
            self.row_type.mode == self.scope.mode,
        )
        for name, value in equal.items():
            statement = statement.where(getattr(self.row_type, name) == value)
        return int(self.session.scalar(statement) or 0)

    def delete(self, row: RowT) -> None:
        assert (row.tenant_id, row.mode) == (self.scope.tenant_id, self.scope.mode)
        self.session.delete(row)

    def _one_by(self, what: str, **equal: Any) -> RowT:
        statement = self._select()
        for name, value in equal.items():
            statement = statement.where(getattr(self.row_type, name) == value)
        row = self.session.scalars(statement).one_or_none()
        if row is None:
            raise NotFound(f"{self.noun} {what} not found")
        return row


class _CodedRepository(Repository[RowT]):
    def get_by_code(self, code: str) -> RowT:
        return self._one_by(code, code=code)


class CustomerRepository(Repository[CustomerRow]):
    row_type = CustomerRow
    noun = "customer"
    id_prefix = "cus"

    def get_by_external_id(self, external_id: str) -> CustomerRow:
        return self._one_by(external_id, external_id=external_id)


class MeterRepository(_CodedRepository[MeterRow]):
    row_type = MeterRow
    noun = "meter"
    id_prefix = "mtr"


class FeatureRepository(_CodedRepository[FeatureRow]):
    row_type = FeatureRow
    noun = "feature"
    id_prefix = "feat"


class PlanRepository(_CodedRepository[PlanRow]):
    row_type = PlanRow
    noun = "plan"
    id_prefix = "plan"


class PlanVersionRepository(Repository[PlanVersionRow]):
    row_type = PlanVersionRow
    noun = "plan version"
    id_prefix = "plv"

    def get_version(self, plan_code: str, version: int) -> PlanVersionRow:
        return self._one_by(f"{plan_code} v{version}", plan_code=plan_code, version=version)

    def versions(self, plan_code: str) -> list[PlanVersionRow]:
        statement = self._select().where(PlanVersionRow.plan_code == plan_code)
        return list(self.session.scalars(statement.order_by(PlanVersionRow.version)))

    def latest_published(self, plan_code: str) -> PlanVersionRow:
        statement = (
            self._select()
            .where(PlanVersionRow.plan_code == plan_code, PlanVersionRow.status == "published")
            .order_by(PlanVersionRow.version.desc())
            .limit(1)
        )
        row = self.session.scalars(statement).one_or_none()
        if row is None:
            raise NotFound(f"plan {plan_code} has no published version")
        return row

    def next_version_number(self, plan_code: str) -> int:
        statement = select(func.max(PlanVersionRow.version)).where(
            PlanVersionRow.tenant_id == self.scope.tenant_id,
            PlanVersionRow.mode == self.scope.mode,
            PlanVersionRow.plan_code == plan_code,
        )
        return int(self.session.scalar(statement) or 0) + 1


class PriceOverrideRepository(Repository[PriceOverrideRow]):
    row_type = PriceOverrideRow
    noun = "price override"
    id_prefix = "ovr"

    def for_customer(self, customer_id: str) -> list[PriceOverrideRow]:
        statement = self._select().where(PriceOverrideRow.customer_id == customer_id)
        return list(self.session.scalars(statement.order_by(PriceOverrideRow.id)))


class CouponRepository(_CodedRepository[CouponRow]):
    row_type = CouponRow
    noun = "coupon"
    id_prefix = "cpn"


class SubscriptionRepository(Repository[SubscriptionRow]):
    row_type = SubscriptionRow
    noun = "subscription"
    id_prefix = "sub"

    def due(self, before: datetime, *, limit: int = 100) -> list[SubscriptionRow]:
        """Active subscriptions whose current period ends at or before ``before``."""
        statement = (
            self._select()
            .where(
                SubscriptionRow.status.in_(ACCRUING),
                SubscriptionRow.current_period_end_at <= before,
            )
            .order_by(SubscriptionRow.current_period_end_at, SubscriptionRow.id)
            .limit(limit)
        )
        return list(self.session.scalars(statement))


class SubscriptionChangeRepository(Repository[SubscriptionChangeRow]):
    """The append-only timeline of a subscription's commands."""

    row_type = SubscriptionChangeRow
    noun = "subscription change"
    id_prefix = "sch"

    def append(
        self,
        subscription_id: str,
        command: str,
        payload: dict[str, Any],
        *,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str,
    ) -> SubscriptionChangeRow:
        """Add the next command; the subscription must exist in this scope."""
        SubscriptionRepository(self.session, self.scope).get(subscription_id)
        last = self.session.scalar(
            select(func.max(SubscriptionChangeRow.seq)).where(
                SubscriptionChangeRow.tenant_id == self.scope.tenant_id,
                SubscriptionChangeRow.mode == self.scope.mode,
                SubscriptionChangeRow.subscription_id == subscription_id,
            )
        )
        row = SubscriptionChangeRow(
            subscription_id=subscription_id,
            seq=int(last or 0) + 1,
            command=command,
            payload=payload,
            effective_at=effective_at,
            recorded_at=recorded_at,
            actor=actor,
        )
        return self.add(row)

    def timeline(self, subscription_id: str) -> Sequence[SubscriptionChangeRow]:
        statement = self._select().where(SubscriptionChangeRow.subscription_id == subscription_id)
        return list(self.session.scalars(statement.order_by(SubscriptionChangeRow.seq)))


class ApiKeyRepository(Repository[ApiKeyRow]):
    """A tenant's own API keys in one mode (create and authenticate via `services.tenancy`)."""

    row_type = ApiKeyRow
    noun = "API key"
    id_prefix = "ak"


class TenantRepository:
    """Unscoped access to tenants, for `AdminUnitOfWork` only."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: TenantRow) -> TenantRow:
        if getattr(row, "id", None) is None:
            row.id = new_id("ten")
        self.session.add(row)
        return row

    def get(self, tenant_id: str) -> TenantRow:
        row = self.session.get(TenantRow, tenant_id)
        if row is None:
            raise NotFound(f"tenant {tenant_id} not found")
        return row

    def list(self, *, limit: int = 100, after_id: str | None = None) -> list[TenantRow]:
        assert 0 < limit <= MAX_PAGE
        statement = select(TenantRow).order_by(TenantRow.id).limit(limit)
        if after_id is not None:
            statement = statement.where(TenantRow.id > after_id)
        return list(self.session.scalars(statement))


class KeyState(NamedTuple):
    """What authentication reads of an API key."""

    id: str
    tenant_id: str
    mode: Mode
    role: Role
    revoked_at: datetime | None
    last_used_at: datetime | None


_KEY_STATE = select(
    ApiKeyRow.id,
    ApiKeyRow.tenant_id,
    ApiKeyRow.mode,
    ApiKeyRow.role,
    ApiKeyRow.revoked_at,
    ApiKeyRow.last_used_at,
).where(ApiKeyRow.secret_hash == bindparam("secret_hash"))


def key_state(engine: Engine, secret_hash: str) -> KeyState | None:
    """The key whose secret hashes to `secret_hash`, read in one statement outside any unit of
    work (`statement_reader`): every request of the API does this."""
    reader = statement_reader(engine)
    with reader.connect() as connection:
        row = connection.execute(_KEY_STATE, {"secret_hash": secret_hash}).first()
    return None if row is None else KeyState(*row)


class KeyLookup:
    """API keys across tenants, found by id or by the hash of their secret."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: ApiKeyRow) -> ApiKeyRow:
        assert row.tenant_id and row.mode, "an API key belongs to a tenant and a mode"
        if getattr(row, "id", None) is None:
            row.id = new_id("ak")
        self.session.add(row)
        return row

    def by_secret_hash(self, secret_hash: str) -> ApiKeyRow | None:
        statement = select(ApiKeyRow).where(ApiKeyRow.secret_hash == secret_hash)
        return self.session.scalars(statement).one_or_none()

    def list_for(
        self, tenant_id: str, modes: tuple[Mode, ...], *, limit: int, after_id: str | None
    ) -> list[ApiKeyRow]:
        assert 0 < limit <= MAX_PAGE and modes
        statement = (
            select(ApiKeyRow)
            .where(ApiKeyRow.tenant_id == tenant_id, ApiKeyRow.mode.in_(modes))
            .order_by(ApiKeyRow.id)
            .limit(limit)
        )
        if after_id is not None:
            statement = statement.where(ApiKeyRow.id > after_id)
        return list(self.session.scalars(statement))

    def get(self, tenant_id: str, key_id: str) -> ApiKeyRow:
        row = self.session.get(ApiKeyRow, key_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(f"API key {key_id} not found")
        return row
