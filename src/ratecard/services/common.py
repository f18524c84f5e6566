"""What every use-case handler shares: input models, pages, the tenant's settings, unique writes.

    >>> page = paginate(uow.customers, limit=2, starting_after=None)   # doctest: +SKIP
    >>> page.has_more, page.next_cursor
    (True, 'cus_0f3a...')

Handlers take a `UnitOfWork` (bound to one tenant and mode) and plain inputs, commit once, and
return rows; the web layer turns rows into responses. No HTTP here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from ratecard.adapters.db.models import TenantRow, TenantScoped
from ratecard.adapters.db.repositories import Repository
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.billing import BillingConventions
from ratecard.core.errors import Conflict, ErrorCode, Problem, ValidationFailed
from ratecard.core.money import RoundingMode
from ratecard.core.proration import ProrationMethod, ProrationPolicy

RowT = TypeVar("RowT", bound=TenantScoped)

#: A catalog code: letters, digits and ``_ . : -``.
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: An object id as the API shows it (``cus_3f9a...``).
ObjectId = Annotated[str, Field(min_length=1, max_length=40)]

MAX_LIMIT = 100


class Input(BaseModel):
    """A request document: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Page(Generic[RowT]):
    rows: list[RowT]
    has_more: bool

    @property
    def next_cursor(self) -> str | None:
        return str(self.rows[-1].id) if self.has_more and self.rows else None  # type: ignore[attr-defined]


def check_cursor(prefix: str, starting_after: str | None) -> None:
    """Refuse a cursor that is no id of the list's kind (``cus_…`` for customers): a typo
    would otherwise page from wherever it sorts. An id of a deleted object still pages."""
    if starting_after is not None and not starting_after.startswith(f"{prefix}_"):
        raise refuse(f"a cursor of this list is an id {prefix}_…", "query.starting_after")


def paginate(
    repository: Repository[RowT], *, limit: int, starting_after: str | None, **equal: Any
) -> Page[RowT]:
    """One page of ``repository`` ordered by id, after the cursor ``starting_after``."""
    assert 0 < limit <= MAX_LIMIT
    check_cursor(repository.id_prefix, starting_after)
    filters = {name: value for name, value in equal.items() if value is not None}
    rows = repository.list(limit=limit + 1, after_id=starting_after, **filters)
    return Page(rows[:limit], len(rows) > limit)


def tenant_of(uow: UnitOfWork) -> TenantRow:
    tenant = uow.session.get(TenantRow, uow.scope.tenant_id)
    assert tenant is not None, "a unit of work is bound to an existing tenant"
    return tenant


_PRORATION_METHODS = {
    "daily": ProrationMethod.DAY,
    "calendar": ProrationMethod.DAY,
    "by_second": ProrationMethod.SECOND,
    "monthly": ProrationMethod.MONTHLY,
}


def conventions_of(tenant: TenantRow) -> BillingConventions:
    """The tenant's billing conventions, every option spelled out (no silent defaults)."""
    rounding = RoundingMode(tenant.rounding_mode)
    method = _PRORATION_METHODS[tenant.proration_convention]
    return BillingConventions(rounding=rounding, proration=ProrationPolicy(rounding, method))


def commit_unique(uow: UnitOfWork, what: str) -> None:
    """Commit; a unique key taken meanwhile (a concurrent create) is a `Conflict`, not a 500."""
    try:
        uow.commit()
    except IntegrityError:
        uow.rollback()
        raise Conflict(f"{what} already exists", code=ErrorCode.ALREADY_EXISTS) from None


def refuse(message: str, field: str, code: ErrorCode = ErrorCode.INVALID_VALUE) -> ValidationFailed:
    return ValidationFailed([Problem(code, message, field)])


def exists(check: Callable[[], object]) -> bool:
    from ratecard.core.errors import NotFound

    try:
        check()
    except NotFound:
        return False
    return True
