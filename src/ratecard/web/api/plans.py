"""Plans and their versions (``/v1/plans``): every change is a new version.

POST /v1/plans                                 a plan document -> version 1 (draft)
POST /v1/plans/{code}/versions                 the changed document -> version n+1
POST /v1/plans/{code}/versions/{n}/publish     new subscriptions take the latest published
POST /v1/plans/{code}/versions/{n}/archive     no new subscriptions; existing ones run on
POST /v1/plans/{code}/migrate                  move subscriptions to a version, in bulk
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, Field

from ratecard.adapters.db.models import PlanRow, PlanVersionRow
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.subscription_model import Effective
from ratecard.services import catalog, subscriptions
from ratecard.services.common import Input, paginate
from ratecard.web.api.common import Limit, ListPage, StartingAfter, page_of
from ratecard.web.deps import BillingWriter, CatalogWriter, Reader
from ratecard.web.routing import Router

router = Router(prefix="/v1/plans", tags=["plans"])

PlanCode = Annotated[str, Path(max_length=64)]
VersionNumber = Annotated[int, Path(ge=1, le=1_000_000)]


class PlanVersion(BaseModel):
    id: str
    object: str = "plan_version"
    plan_code: str
    version: int
    status: str
    currency: str
    document: dict[str, Any]
    livemode: bool
    created_at: datetime
    published_at: datetime | None

    @classmethod
    def of(cls, row: PlanVersionRow) -> PlanVersion:
        return cls(
            id=row.id,
            plan_code=row.plan_code,
            version=row.version,
            status=row.status,
            currency=row.currency,
            document=row.document,
            livemode=row.mode == "live",
            created_at=row.created_at,
            published_at=row.published_at,
        )


class Plan(BaseModel):
    id: str
    object: str = "plan"
    code: str
    name: str
    latest_version: int | None
    published_version: int | None
    livemode: bool
    created_at: datetime


def _plan(uow: UnitOfWork, row: PlanRow) -> Plan:
    versions = uow.plan_versions.versions(row.code)
    published = [v.version for v in versions if v.status == "published"]
    return Plan(
        id=row.id,
        code=row.code,
        name=row.name,
        latest_version=versions[-1].version if versions else None,
        published_version=published[-1] if published else None,
        livemode=row.mode == "live",
        created_at=row.created_at,
    )


@router.post("", status_code=201)
def create_plan(body: catalog.PlanInput, ctx: CatalogWriter) -> PlanVersion:
    """Create a plan from a plan document; its first version is a draft unless `publish`."""
    with ctx.uow() as uow:
        return PlanVersion.of(catalog.create_plan(uow, body, now=ctx.now()))


@router.get("")
def list_plans(
    ctx: Reader, limit: Limit = 20, starting_after: StartingAfter = None
) -> ListPage[Plan]:
    with ctx.reader() as uow:
        page = paginate(uow.plans, limit=limit, starting_after=starting_after)
        return page_of(page, lambda row: _plan(uow, row))


@router.get("/{plan_code}")
def get_plan(plan_code: PlanCode, ctx: Reader) -> Plan:
    with ctx.reader() as uow:
        return _plan(uow, uow.plans.get_by_code(plan_code))


@router.post("/{plan_code}/versions", status_code=201)
def add_version(plan_code: PlanCode, body: catalog.PlanInput, ctx: CatalogWriter) -> PlanVersion:
    """A new version with the changed document; earlier versions never change."""
    with ctx.uow() as uow:
        return PlanVersion.of(catalog.add_version(uow, plan_code, body, now=ctx.now()))


@router.get("/{plan_code}/versions")
def list_versions(plan_code: PlanCode, ctx: Reader) -> ListPage[PlanVersion]:
    with ctx.reader() as uow:
        uow.plans.get_by_code(plan_code)
        rows = uow.plan_versions.versions(plan_code)
        return ListPage[PlanVersion](
            data=[PlanVersion.of(r) for r in rows], has_more=False, next_cursor=None
        )


@router.get("/{plan_code}/versions/{version}")
def get_version(plan_code: PlanCode, version: VersionNumber, ctx: Reader) -> PlanVersion:
    with ctx.reader() as uow:
        return PlanVersion.of(uow.plan_versions.get_version(plan_code, version))


@router.post("/{plan_code}/versions/{version}/publish")
def publish_version(plan_code: PlanCode, version: VersionNumber, ctx: CatalogWriter) -> PlanVersion:
    with ctx.uow() as uow:
        return PlanVersion.of(catalog.publish_version(uow, plan_code, version, now=ctx.now()))


@router.post("/{plan_code}/versions/{version}/archive")
def archive_version(plan_code: PlanCode, version: VersionNumber, ctx: CatalogWriter) -> PlanVersion:
    with ctx.uow() as uow:
        return PlanVersion.of(catalog.archive_version(uow, plan_code, version))


class MigrateInput(Input):
    to_version: int = Field(ge=1, le=1_000_000)
    from_version: int | None = Field(default=None, ge=1, le=1_000_000)
    when: Effective = Effective.PERIOD_END


class MigrationItem(BaseModel):
    subscription_id: str
    migrated: bool
    code: str | None
    message: str | None


class MigrationReport(BaseModel):
    object: str = "plan_migration"
    plan_code: str
    to_version: int
    migrated: int
    skipped: int
    results: list[MigrationItem]


@router.post("/{plan_code}/migrate")
def migrate_subscriptions(
    plan_code: PlanCode, body: MigrateInput, ctx: BillingWriter
) -> MigrationReport:
    """Move the plan's live subscriptions (optionally only those on `from_version`) to
    `to_version`, at the period end by default; each one is reported."""
    with ctx.uow() as uow:
        results = subscriptions.migrate_plan(  # commits
            uow,
            plan_code,
            to_version=body.to_version,
            from_version=body.from_version,
            when=body.when,
            now=ctx.now(),
        )
    # after the commit: a check before it read the old plan, and what it cached goes here
    for customer_id in sorted({r.customer_id for r in results if r.migrated}):
        ctx.metering.entitlements.invalidate(ctx.principal.scope, customer_id)
    items = [
        MigrationItem(
            subscription_id=r.subscription_id, migrated=r.migrated, code=r.code, message=r.message
        )
        for r in results
    ]
    migrated = sum(1 for r in results if r.migrated)
    return MigrationReport(
        plan_code=plan_code,
        to_version=body.to_version,
        migrated=migrated,
        skipped=len(results) - migrated,
        results=items,
    )
