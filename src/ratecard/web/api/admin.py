"""Tenant administration (admin keys only): API keys, tenant settings and the test clock.

    POST /v1/api_keys  {"name": "ci", "role": "billing", "mode": "test"}
    -> 201 {"id": "ak_...", "secret": "rk_test_...", "prefix": "rk_test_Ab3dEf", ...}

The secret is in that one response only (an idempotent replay shows ``"secret": null``); lists
show the prefix. A revoked key is refused (401) from its next request on. A test-mode admin key
manages only test-mode keys; a live one manages both.

``GET/PATCH /v1/tenant`` read and change the settings (every problem reported at once; every
change audited). ``/v1/test_clock`` exists for test-mode keys only (404 for live keys): test mode's
"now" is that clock, which only moves forward.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from ratecard.adapters.db.models import ApiKeyRow, TenantRow
from ratecard.adapters.db.repositories import ApiKeyRepository
from ratecard.adapters.db.scope import Mode, Role
from ratecard.core.errors import ErrorCode, NotFound, Problem, ValidationFailed
from ratecard.core.money import RoundingMode
from ratecard.services.common import Input, check_cursor
from ratecard.services.documents import CurrencyCode, TimeZoneName
from ratecard.services.tenancy import PRORATION_CONVENTIONS, TenantSettings
from ratecard.web.api.common import Limit, ListPage, StartingAfter
from ratecard.web.deps import Admin, BillingWriter, Ctx, Reader
from ratecard.web.routing import Router

router = Router(tags=["administration"])

KeyId = Annotated[str, Path(max_length=40)]


def _modes(ctx: Ctx) -> tuple[Mode, ...]:
    """The modes whose keys this admin key manages."""
    return (Mode.LIVE, Mode.TEST) if ctx.principal.mode is Mode.LIVE else (Mode.TEST,)


class ApiKey(BaseModel):
    id: str
    object: str = "api_key"
    name: str
    role: Role
    mode: Mode
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiKeyRow) -> ApiKey:
        return cls(
            id=row.id,
            name=row.name,
            role=row.role,
            mode=row.mode,
            prefix=row.prefix,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )


class NewApiKey(ApiKey):
    secret: str | None = Field(
        description="The key itself, shown once (null when an idempotent request is replayed)"
    )


class ApiKeyInput(Input):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    mode: Mode | None = Field(default=None, description="Default: the calling key's mode")


@router.post("/v1/api_keys", status_code=201)
def create_api_key(body: ApiKeyInput, ctx: Admin) -> NewApiKey:
    mode = body.mode or ctx.principal.mode
    if mode not in _modes(ctx):
        raise ValidationFailed(
            [
                Problem(
                    ErrorCode.INVALID_VALUE, "a test-mode key creates test keys only", "body.mode"
                )
            ]
        )
    tenancy = ctx.wiring.tenancy
    issued = tenancy.create_api_key(
        ctx.principal.tenant_id, mode, body.role, actor=ctx.principal.actor, name=body.name
    )
    row = tenancy.get_api_key(ctx.principal.tenant_id, issued.key_id)
    return NewApiKey(**ApiKey.of(row).model_dump(), secret=issued.secret)


@router.get("/v1/api_keys")
def list_api_keys(
    ctx: Admin, *, limit: Limit = 20, starting_after: StartingAfter = None
) -> ListPage[ApiKey]:
    check_cursor(ApiKeyRepository.id_prefix, starting_after)
    rows = ctx.wiring.tenancy.list_api_keys(
        ctx.principal.tenant_id, _modes(ctx), limit=limit + 1, after_id=starting_after
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return ListPage[ApiKey](
        data=[ApiKey.of(r) for r in rows],
        has_more=more,
        next_cursor=rows[-1].id if more and rows else None,
    )


@router.post("/v1/api_keys/{api_key_id}/revoke")
def revoke_api_key(api_key_id: KeyId, ctx: Admin) -> ApiKey:
    row = ctx.wiring.tenancy.revoke_api_key(
        ctx.principal.tenant_id, api_key_id, actor=ctx.principal.actor, modes=_modes(ctx)
    )
    return ApiKey.of(row)


# --- tenant settings -------------------------------------------------------------------------


class Tenant(BaseModel):
    id: str
    object: str = "tenant"
    name: str
    default_currency: str
    timezone: str
    rounding_mode: RoundingMode
    proration_convention: str
    net_terms_days: int
    invoice_number_prefix: str
    branding: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, row: TenantRow) -> Tenant:
        return cls(
            id=row.id,
            name=row.name,
            default_currency=row.default_currency,
            timezone=row.timezone,
            rounding_mode=RoundingMode(row.rounding_mode),
            proration_convention=row.proration_convention,
            net_terms_days=row.net_terms_days,
            invoice_number_prefix=row.invoice_number_prefix,
            branding=dict(row.branding),
            created_at=row.created_at,
        )


class TenantPatch(Input):
    """Settings to change; fields left out keep their values."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    default_currency: CurrencyCode | None = Field(default=None, min_length=3, max_length=3)
    timezone: TimeZoneName | None = Field(default=None, min_length=1, max_length=64)
    rounding_mode: RoundingMode | None = None
    proration_convention: str | None = Field(
        default=None, max_length=20, description=f"One of {', '.join(PRORATION_CONVENTIONS)}"
    )
    net_terms_days: int | None = Field(default=None, ge=0, le=365)
    invoice_number_prefix: str | None = Field(
        default=None, min_length=1, max_length=20, pattern=r"^[A-Za-z0-9-]+$"
    )
    branding: dict[str, Annotated[str, Field(max_length=500)]] | None = Field(
        default=None, max_length=20, description="e.g. logo_url, primary_color, footer"
    )

    @field_validator("proration_convention")
    @classmethod
    def _convention(cls, value: str | None) -> str | None:
        if value is not None and value not in PRORATION_CONVENTIONS:
            raise ValueError(f"must be one of {', '.join(PRORATION_CONVENTIONS)}")
        return value


@router.get("/v1/tenant")
def get_tenant(ctx: Admin) -> Tenant:
    return Tenant.of(ctx.wiring.tenancy.get_tenant(ctx.principal.tenant_id))


@router.patch("/v1/tenant")
def update_tenant(body: TenantPatch, ctx: Admin) -> Tenant:
    tenancy = ctx.wiring.tenancy
    tenant_id = ctx.principal.tenant_id
    changed = body.model_dump(exclude_unset=True)
    for name, value in changed.items():
        if value is None:
            raise ValidationFailed(
                [Problem(ErrorCode.INVALID_VALUE, "cannot be null", f"body.{name}")]
            )
    current = TenantSettings.of(tenancy.get_tenant(tenant_id))
    fields = {k: v for k, v in changed.items() if k != "name"}
    settings = TenantSettings(**{**_settings_dict(current), **fields})
    tenancy.update_settings(
        tenant_id, settings, actor=ctx.principal.actor, name=changed.get("name")
    )
    return Tenant.of(tenancy.get_tenant(tenant_id))


def _settings_dict(settings: TenantSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in TenantSettings.__dataclass_fields__}


# --- the test clock --------------------------------------------------------------------------


class TestClock(BaseModel):
    object: str = "test_clock"
    now_at: datetime = Field(description="What test mode takes for now")
    frozen: bool = Field(description="False until first advanced: it follows the real clock")


class AdvanceInput(Input):
    to: AwareDatetime = Field(
        description="An RFC 3339 instant, or Unix seconds (an integer); never before the clock"
    )

    @field_validator("to", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        if isinstance(value, bool | float):
            raise ValueError("an RFC 3339 string or whole Unix seconds")
        if isinstance(value, int) and not 0 <= value <= 253_402_300_799:
            raise ValueError("Unix seconds between 1970 and 9999")
        return value

    def instant(self) -> datetime:
        return self.to.astimezone(UTC)


def _test_mode(ctx: Ctx) -> None:
    if ctx.principal.mode is not Mode.TEST:
        raise NotFound("the test clock exists in test mode only")


@router.get("/v1/test_clock")
def get_test_clock(ctx: Reader) -> TestClock:
    _test_mode(ctx)
    frozen = ctx.wiring.tenancy.get_tenant(ctx.principal.tenant_id).test_clock_at
    return TestClock(now_at=ctx.now(), frozen=frozen is not None)


@router.post("/v1/test_clock/advance")
def advance_test_clock(body: AdvanceInput, ctx: BillingWriter) -> TestClock:
    _test_mode(ctx)
    at = ctx.wiring.tenancy.advance_test_clock(
        ctx.principal.tenant_id, body.instant(), actor=ctx.principal.actor
    )
    return TestClock(now_at=at, frozen=True)
