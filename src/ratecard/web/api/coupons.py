"""Coupons: percent or amount off, once, for some periods, or forever (``/v1/coupons``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from ratecard.adapters.db.models import CouponRow
from ratecard.core.money import Money, currency
from ratecard.services import catalog
from ratecard.services.common import paginate
from ratecard.web.api.common import Limit, ListPage, StartingAfter, page_of
from ratecard.web.deps import CatalogWriter, Reader
from ratecard.web.routing import Router

router = Router(prefix="/v1/coupons", tags=["coupons"])


class Coupon(BaseModel):
    id: str
    object: str = "coupon"
    code: str
    name: str
    percent_off: str | None
    amount_off: str | None
    currency: str | None
    duration: str
    duration_periods: int | None
    max_redemptions: int | None
    redeem_by: datetime | None
    livemode: bool
    created_at: datetime

    @classmethod
    def of(cls, row: CouponRow) -> Coupon:
        amount_off = None
        if row.amount_off_minor is not None and row.currency is not None:
            amount_off = Money(row.amount_off_minor, currency(row.currency)).format()
        return cls(
            id=row.id,
            code=row.code,
            name=row.name,
            percent_off=None if row.percent_off is None else format(row.percent_off, "f"),
            amount_off=amount_off,
            currency=row.currency,
            duration=row.duration,
            duration_periods=row.duration_periods,
            max_redemptions=row.max_redemptions,
            redeem_by=row.redeem_by,
            livemode=row.mode == "live",
            created_at=row.created_at,
        )


@router.post("", status_code=201)
def create_coupon(body: catalog.CouponInput, ctx: CatalogWriter) -> Coupon:
    with ctx.uow() as uow:
        return Coupon.of(catalog.create_coupon(uow, body, now=ctx.now()))


@router.get("")
def list_coupons(
    ctx: Reader, limit: Limit = 20, starting_after: StartingAfter = None
) -> ListPage[Coupon]:
    with ctx.reader() as uow:
        page = paginate(uow.coupons, limit=limit, starting_after=starting_after)
        return page_of(page, Coupon.of)


@router.get("/{coupon_id}")
def get_coupon(coupon_id: str, ctx: Reader) -> Coupon:
    with ctx.reader() as uow:
        return Coupon.of(uow.coupons.get(coupon_id))
