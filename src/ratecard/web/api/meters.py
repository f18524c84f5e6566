"""Meters: what usage is counted, and how (``/v1/meters``)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from ratecard.adapters.db.models import MeterRow
from ratecard.services import catalog
from ratecard.services.common import paginate
from ratecard.web.api.common import Limit, ListPage, StartingAfter, page_of
from ratecard.web.deps import CatalogWriter, Reader

router = APIRouter(prefix="/v1/meters", tags=["meters"])


class Meter(BaseModel):
    id: str
    object: str = "meter"
    code: str
    name: str
    aggregation: str
    value_field: str | None
    reset: str
    snapshot: bool
    filters: dict[str, str]
    livemode: bool
    created_at: datetime

    @classmethod
    def of(cls, row: MeterRow) -> Meter:
        return cls(
            id=row.id,
            code=row.code,
            name=row.name,
            aggregation=row.aggregation,
            value_field=row.value_field,
            reset=row.reset,
            snapshot=row.snapshot,
            filters={str(k): str(v) for k, v in row.filters.items()},
            livemode=row.mode == "live",
            created_at=row.created_at,
        )


@router.post("", status_code=201)
def create_meter(body: catalog.MeterInput, ctx: CatalogWriter) -> Meter:
    with ctx.uow() as uow:
        return Meter.of(catalog.create_meter(uow, body, now=ctx.now()))


@router.get("")
def list_meters(
    ctx: Reader, limit: Limit = 20, starting_after: StartingAfter = None
) -> ListPage[Meter]:
    with ctx.uow() as uow:
        return page_of(paginate(uow.meters, limit=limit, starting_after=starting_after), Meter.of)


@router.get("/{meter_id}")
def get_meter(meter_id: str, ctx: Reader) -> Meter:
    with ctx.uow() as uow:
        return Meter.of(uow.meters.get(meter_id))
