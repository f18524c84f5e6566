"""Features: what entitlements grant (``/v1/features``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from ratecard.adapters.db.models import FeatureRow
from ratecard.services import catalog
from ratecard.services.common import paginate
from ratecard.web.api.common import Limit, ListPage, StartingAfter, page_of
from ratecard.web.deps import CatalogWriter, Reader
from ratecard.web.routing import Router

router = Router(prefix="/v1/features", tags=["features"])


class Feature(BaseModel):
    id: str
    object: str = "feature"
    code: str
    name: str
    kind: str
    meter_code: str | None
    livemode: bool
    created_at: datetime

    @classmethod
    def of(cls, row: FeatureRow) -> Feature:
        return cls(
            id=row.id,
            code=row.code,
            name=row.name,
            kind=row.kind,
            meter_code=row.meter_code,
            livemode=row.mode == "live",
            created_at=row.created_at,
        )


@router.post("", status_code=201)
def create_feature(body: catalog.FeatureInput, ctx: CatalogWriter) -> Feature:
    with ctx.uow() as uow:
        return Feature.of(catalog.create_feature(uow, body, now=ctx.now()))


@router.get("")
def list_features(
    ctx: Reader, limit: Limit = 20, starting_after: StartingAfter = None
) -> ListPage[Feature]:
    with ctx.reader() as uow:
        page = paginate(uow.features, limit=limit, starting_after=starting_after)
        return page_of(page, Feature.of)


@router.get("/{feature_id}")
def get_feature(feature_id: str, ctx: Reader) -> Feature:
    with ctx.reader() as uow:
        return Feature.of(uow.features.get(feature_id))
