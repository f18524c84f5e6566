"""Meters: what usage is counted, and how (``/v1/meters``).

    POST  /v1/meters        {"code": "storage", "aggregation": "max", "value_field": "gb",
                             "filters": {"tier": "hot"}, "group_by": ["region"],
                             "rounding": {"mode": "up", "precision": 0}}
    PATCH /v1/meters/{id}   {"rounding": {"mode": "half_up", "precision": 2}} or
                            {"rounding": null}
    PATCH /v1/meters/{id}   {"aggregation": "sum", "filters": {}, "group_by": ["region", "zone"]}

A meter's definition is its ``aggregation`` (``count``, ``sum``, ``max``, ``min``,
``unique_count``, ``latest``, ``average``, ``weighted_sum``; all but ``count`` need
``value_field``, the event property that carries the value), ``filters`` (``{property: value}``,
every one must match) and ``group_by`` (up to 10 distinct property names: the usage API shows
one quantity per combination of their values, under ``groups``, beside the total).

``rounding`` (optional) rounds the period's quantity — the total and each group, each from its
exact value — before pricing, with a named mode (``half_up``, ``half_even``, ``half_down``, ``up``,
``down``, ``ceiling``, ``floor``) to ``precision`` decimal places (0 to 18). Raw events keep every
digit: the usage API, invoice drafts, entitlements and alerts read the rounded quantity at once.

PATCH changes the name, the rounding, and any part of the definition; a part left out keeps its
value, and ``code``, ``reset`` and ``snapshot`` never change. A new definition is checked whole
(a refused PATCH changes nothing) and then re-aggregates the meter from its raw events: its
rollups are rebuilt inside the request, in the same transaction, so the usage API, invoice
drafts, entitlements and alerts read the new definition as soon as it answers — and it answers
later the longer the meter's history (every raw event of the meter is read once). Open periods
then bill as the new definition counts; issued invoices stay as they are, and a redefinition is
not late usage (an adjustment compares a closed period's usage before and after under one
definition).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel

from ratecard.adapters.db.models import MeterRow
from ratecard.services import meter_catalog
from ratecard.services.common import paginate
from ratecard.web.api.common import Limit, ListPage, StartingAfter, page_of
from ratecard.web.deps import CatalogWriter, Reader
from ratecard.web.routing import Router

MeterId = Annotated[str, Path(max_length=40)]

router = Router(prefix="/v1/meters", tags=["meters"])


class MeterRoundingView(BaseModel):
    mode: str
    precision: int


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
    group_by: list[str]
    rounding: MeterRoundingView | None
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
            group_by=[str(g) for g in row.group_by],
            rounding=None
            if row.rounding_mode is None or row.rounding_precision is None
            else MeterRoundingView(mode=row.rounding_mode, precision=row.rounding_precision),
            livemode=row.mode == "live",
            created_at=row.created_at,
        )


@router.post("", status_code=201)
def create_meter(body: meter_catalog.MeterInput, ctx: CatalogWriter) -> Meter:
    with ctx.uow() as uow:
        return Meter.of(meter_catalog.create_meter(uow, body, now=ctx.now()))


@router.get("")
def list_meters(
    ctx: Reader, limit: Limit = 20, starting_after: StartingAfter = None
) -> ListPage[Meter]:
    with ctx.reader() as uow:
        return page_of(paginate(uow.meters, limit=limit, starting_after=starting_after), Meter.of)


@router.get("/{meter_id}")
def get_meter(meter_id: MeterId, ctx: Reader) -> Meter:
    with ctx.reader() as uow:
        return Meter.of(uow.meters.get(meter_id))


@router.patch("/{meter_id}")
def update_meter(meter_id: MeterId, body: meter_catalog.MeterUpdate, ctx: CatalogWriter) -> Meter:
    """Rename the meter, change its rounding (``null`` removes it) or its definition
    (``aggregation``, ``value_field``, ``filters``, ``group_by``: re-aggregated from raw events
    before it answers); read at once by usage, drafts, entitlements and alerts."""
    with ctx.uow() as uow:
        return Meter.of(meter_catalog.update_meter(uow, meter_id, body))
