"""Per-customer price overrides (``/v1/customers/{id}/price_overrides``, ``/v1/price_overrides``).

An override replaces price fields of one charge of one plan for one customer, in every version
of the plan that has that charge; rating applies it (`services.customers.apply_overrides`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path, Response
from pydantic import BaseModel

from ratecard.adapters.db.models import PriceOverrideRow
from ratecard.services import customers
from ratecard.web.api.common import ListPage
from ratecard.web.deps import BillingWriter, Reader
from ratecard.web.routing import Router

router = Router(tags=["price overrides"])

ObjectPathId = Annotated[str, Path(max_length=40)]


class PriceOverride(BaseModel):
    id: str
    object: str = "price_override"
    customer_id: str
    plan_code: str
    charge_code: str
    price: dict[str, Any]
    livemode: bool
    created_at: datetime

    @classmethod
    def of(cls, row: PriceOverrideRow) -> PriceOverride:
        return cls(
            id=row.id,
            customer_id=row.customer_id,
            plan_code=row.plan_code,
            charge_code=row.charge_code,
            price=dict(row.price),
            livemode=row.mode == "live",
            created_at=row.created_at,
        )


@router.post("/v1/customers/{customer_id}/price_overrides", status_code=201)
def create_override(
    customer_id: ObjectPathId, body: customers.OverrideInput, ctx: BillingWriter
) -> PriceOverride:
    with ctx.uow() as uow:
        return PriceOverride.of(customers.create_override(uow, customer_id, body, now=ctx.now()))


@router.get("/v1/customers/{customer_id}/price_overrides")
def list_overrides(customer_id: ObjectPathId, ctx: Reader) -> ListPage[PriceOverride]:
    with ctx.reader() as uow:
        uow.customers.get(customer_id)
        rows = uow.price_overrides.for_customer(customer_id)
        return ListPage[PriceOverride](
            data=[PriceOverride.of(r) for r in rows], has_more=False, next_cursor=None
        )


@router.get("/v1/price_overrides/{override_id}")
def get_override(override_id: ObjectPathId, ctx: Reader) -> PriceOverride:
    with ctx.reader() as uow:
        return PriceOverride.of(uow.price_overrides.get(override_id))


@router.delete("/v1/price_overrides/{override_id}", status_code=204)
def delete_override(override_id: ObjectPathId, ctx: BillingWriter) -> Response:
    with ctx.uow() as uow:
        customers.delete_override(uow, override_id)
    return Response(status_code=204)
