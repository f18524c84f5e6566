"""Customers (``/v1/customers``): who is billed, where, in which currency and time zone."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel

from ratecard.adapters.db.models import CustomerRow
from ratecard.services import customers
from ratecard.services.common import paginate
from ratecard.web.api.common import Expand, Limit, ListPage, StartingAfter, expansions, page_of
from ratecard.web.deps import BillingWriter, Reader
from ratecard.web.routing import Router

router = Router(prefix="/v1/customers", tags=["customers"])

CustomerId = Annotated[str, Path(max_length=40)]


class Customer(BaseModel):
    id: str
    object: str = "customer"
    external_id: str
    name: str
    email: str | None
    billing_address: dict[str, Any]
    currency: str
    timezone: str
    country: str | None
    tax_ids: list[dict[str, Any]]
    net_terms_days: int | None
    parent_customer_id: str | None
    parent: Customer | None = None
    metadata: dict[str, Any]
    livemode: bool
    created_at: datetime

    @classmethod
    def of(cls, row: CustomerRow) -> Customer:
        return cls(
            id=row.id,
            external_id=row.external_id,
            name=row.name,
            email=row.email,
            billing_address=dict(row.billing_address),
            currency=row.currency,
            timezone=row.timezone,
            country=row.country,
            tax_ids=list(row.tax_ids),
            net_terms_days=row.net_terms_days,
            parent_customer_id=row.parent_customer_id,
            metadata=dict(row.metadata_),
            livemode=row.mode == "live",
            created_at=row.created_at,
        )


@router.post("", status_code=201)
def create_customer(body: customers.CustomerInput, ctx: BillingWriter) -> Customer:
    with ctx.uow() as uow:
        return Customer.of(customers.create_customer(uow, body, now=ctx.now()))


@router.get("")
def list_customers(
    ctx: Reader,
    *,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    external_id: Annotated[str | None, Query(max_length=255)] = None,
    parent_customer_id: Annotated[str | None, Query(max_length=40)] = None,
    currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
) -> ListPage[Customer]:
    with ctx.reader() as uow:
        page = paginate(
            uow.customers,
            limit=limit,
            starting_after=starting_after,
            external_id=external_id,
            parent_customer_id=parent_customer_id,
            currency=None if currency is None else currency.upper(),
        )
        return page_of(page, Customer.of)


@router.get("/{customer_id}")
def get_customer(customer_id: CustomerId, ctx: Reader, expand: Expand = None) -> Customer:
    embed = expansions(expand, ["parent"])
    with ctx.reader() as uow:
        row = uow.customers.get(customer_id)
        view = Customer.of(row)
        if "parent" in embed and row.parent_customer_id is not None:
            view.parent = Customer.of(uow.customers.get(row.parent_customer_id))
        return view


@router.patch("/{customer_id}")
def update_customer(
    customer_id: CustomerId, body: customers.CustomerUpdate, ctx: BillingWriter
) -> Customer:
    """Change the given fields; the others keep their values."""
    with ctx.uow() as uow:
        return Customer.of(customers.update_customer(uow, customer_id, body))
