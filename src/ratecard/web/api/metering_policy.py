"""The tenant's metering policy (per mode): what happens to unknown, old, future and late events.

    PATCH /v1/metering_policy  {"unknown_customer": "hold", "late_events": "reject",
                                "max_past_seconds": 604800}
    -> 200 {"object": "metering_policy", "unknown_customer": "hold", "unknown_meter": "reject",
            "late_events": "reject", "max_past_seconds": 604800, "max_future_seconds": 300, ...}

``unknown_customer`` and ``unknown_meter``: ``reject`` (default) refuses the event with
``unknown_customer`` / ``unknown_meter``; ``hold`` stores it (deduplicated, counted nothing) and
counts it once the customer, subscription or meter is created. Going back to ``reject`` refuses
new unknown events only: the events already held stay stored (``GET /v1/events?status=held``)
and are still counted when their customer, subscription or meter appears.

``late_events``, for an event whose period is already invoiced: ``adjust`` (default) keeps it
and bills the difference as an adjustment line on the next invoice; ``reject`` refuses it with
``late_event``. Events older than ``max_past_seconds`` (default 35 days, at most 3650 days) or
further ahead than ``max_future_seconds`` (default 300, at most 7 days) are rejected. Admin
and billing keys; every problem is reported at once, and every change is in the audit log
(before and after).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from ratecard.services.common import Input
from ratecard.services.metering.policy import (
    MAX_FUTURE_LIMIT,
    MAX_PAST_LIMIT,
    LateEvents,
    MeteringPolicy,
    Unknown,
    load_policy,
    update_policy,
)
from ratecard.web.deps import BillingWriter
from ratecard.web.routing import Router

router = Router(tags=["metering"])

_SECOND = timedelta(seconds=1)


class MeteringPolicyView(BaseModel):
    object: str = "metering_policy"
    mode: str
    unknown_customer: Unknown
    unknown_meter: Unknown
    late_events: LateEvents
    max_past_seconds: int
    max_future_seconds: int

    @classmethod
    def of(cls, mode: str, policy: MeteringPolicy) -> MeteringPolicyView:
        return cls(
            mode=mode,
            unknown_customer=policy.unknown_customer,
            unknown_meter=policy.unknown_meter,
            late_events=policy.late_events,
            max_past_seconds=policy.max_past // _SECOND,
            max_future_seconds=policy.max_future // _SECOND,
        )


class MeteringPolicyPatch(Input):
    """Fields to change; fields left out keep their values."""

    unknown_customer: Unknown | None = Field(default=None, description="reject or hold")
    unknown_meter: Unknown | None = Field(default=None, description="reject or hold")
    late_events: LateEvents | None = Field(default=None, description="adjust or reject")
    max_past_seconds: Annotated[
        int | None, Field(strict=True, ge=0, le=MAX_PAST_LIMIT // _SECOND)
    ] = Field(default=None, description="How old an event may be")
    max_future_seconds: Annotated[
        int | None, Field(strict=True, ge=0, le=MAX_FUTURE_LIMIT // _SECOND)
    ] = Field(default=None, description="How far ahead of the server's clock")

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:  # only values given are validated: a given null is an error
            raise ValueError("cannot be null")
        return value


@router.get("/v1/metering_policy")
def get_metering_policy(ctx: BillingWriter) -> MeteringPolicyView:
    with ctx.reader() as uow:
        policy = load_policy(uow.session, uow.scope)
    return MeteringPolicyView.of(str(ctx.principal.scope.mode), policy)


@router.patch("/v1/metering_policy")
def update_metering_policy(body: MeteringPolicyPatch, ctx: BillingWriter) -> MeteringPolicyView:
    given = body.model_dump(exclude_unset=True)
    changes: dict[str, Any] = {
        name: value for name, value in given.items() if not name.endswith("_seconds")
    }
    if "max_past_seconds" in given:
        changes["max_past"] = timedelta(seconds=given["max_past_seconds"])
    if "max_future_seconds" in given:
        changes["max_future"] = timedelta(seconds=given["max_future_seconds"])
    with ctx.uow() as uow:
        policy = update_policy(uow, **changes)
    return MeteringPolicyView.of(str(ctx.principal.scope.mode), policy)
