"""Shapes every router shares: pages, pagination parameters, expand, invoice lines.

Lists are cursor-paginated: ``?limit=20&starting_after=cus_...`` gives
``{"data": [...], "has_more": true, "next_cursor": "cus_..."}``; pass ``next_cursor`` as the
next ``starting_after``. Amounts are decimal strings with the currency's places, never numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from ratecard.adapters.db.models import TenantScoped
from ratecard.core.billing import Draft
from ratecard.core.invoicing import InvoiceLine
from ratecard.services.common import MAX_LIMIT, Page

T = TypeVar("T")
R = TypeVar("R", bound=TenantScoped)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
StartingAfter = Annotated[
    str | None,
    Query(max_length=40, description="The `next_cursor` of the previous page"),
]
Expand = Annotated[
    str | None,
    Query(max_length=100, description="Comma-separated related objects to embed"),
]


class ListPage(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool
    next_cursor: str | None


def page_of(page: Page[R], view: Callable[[R], T]) -> ListPage[T]:
    return ListPage[T](
        data=[view(row) for row in page.rows], has_more=page.has_more, next_cursor=page.next_cursor
    )


def expansions(expand: str | None, allowed: Sequence[str]) -> set[str]:
    from ratecard.core.errors import ErrorCode, Problem, ValidationFailed

    names = {part.strip() for part in (expand or "").split(",") if part.strip()}
    unknown = sorted(names - set(allowed))
    if unknown:
        raise ValidationFailed(
            [
                Problem(
                    ErrorCode.INVALID_VALUE,
                    f"cannot expand {', '.join(unknown)}; one of {', '.join(allowed)}",
                    "query.expand",
                )
            ]
        )
    return names


class PeriodView(BaseModel):
    start_at: datetime
    end_at: datetime


class ProrationView(BaseModel):
    fraction: str
    used: str
    of: str
    convention: str


class LineView(BaseModel):
    kind: str
    description: str
    charge_code: str | None
    amount: str
    currency: str
    quantity: str
    unit_price: str | None
    period: PeriodView | None
    plan_code: str | None
    plan_version: int | None
    proration: ProrationView | None

    @classmethod
    def of(cls, line: InvoiceLine) -> LineView:
        proration = line.proration
        return cls(
            kind=str(line.kind),
            description=line.description,
            charge_code=line.charge_code,
            amount=line.amount.format(),
            currency=line.amount.currency.code,
            quantity=format(line.quantity, "f"),
            unit_price=None if line.unit_price is None else format(line.unit_price, "f"),
            period=None
            if line.period is None
            else PeriodView(start_at=line.period.start_at, end_at=line.period.end_at),
            plan_code=line.plan_code,
            plan_version=line.plan_version,
            proration=None
            if proration is None
            else ProrationView(
                fraction=str(proration.fraction),
                used=proration.used,
                of=proration.of,
                convention=proration.convention,
            ),
        )


class DraftView(BaseModel):
    at: datetime
    reason: str
    period: PeriodView | None
    lines: list[LineView]

    @classmethod
    def of(cls, draft: Draft) -> DraftView:
        return cls(
            at=draft.at,
            reason=str(draft.reason),
            period=None
            if draft.period is None
            else PeriodView(start_at=draft.period.start_at, end_at=draft.period.end_at),
            lines=[LineView.of(line) for line in draft.lines],
        )
