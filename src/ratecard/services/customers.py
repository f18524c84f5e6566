"""Customer use cases: create, update, and per-customer price overrides.

    >>> data = CustomerInput(external_id="acme", name="Acme")      # doctest: +SKIP
    >>> row = create_customer(uow, data, now=now)
    >>> row.currency, row.timezone          # the tenant's defaults unless given
    ('USD', 'UTC')

A price override replaces some price fields of one charge of one plan for one customer, e.g.
``{"plan_code": "pro", "charge_code": "seats", "price": {"unit_price": "9.00"}}``. It is checked
by building the plan with the override applied, so an override can never make a plan invalid,
and rating applies it the same way (`apply_overrides`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import Field, field_validator

from ratecard.adapters.db.models import CustomerRow, PriceOverrideRow
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.catalog import QuantityRounding
from ratecard.core.errors import Conflict, ErrorCode, Problem, ValidationFailed
from ratecard.services.common import Code, Input, ObjectId, commit_unique, exists, tenant_of
from ratecard.services.documents import ExactDecimal, known_currency, known_zone
from ratecard.services.metering.lifecycle import release_held
from ratecard.services.plan_documents import TierDoc, load_plan

MAX_PARENT_DEPTH = 5


class TaxId(Input):
    type: str = Field(min_length=1, max_length=20, examples=["eu_vat"])
    value: str = Field(min_length=1, max_length=64)


class Address(Input):
    line1: str | None = Field(default=None, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)
    state: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, min_length=2, max_length=2)


def _currency(value: str | None) -> str | None:
    return None if value is None else known_currency(value)


def _timezone(value: str | None) -> str | None:
    return None if value is None else known_zone(value)


def _country(value: str | None) -> str | None:
    if value is not None and not (len(value) == 2 and value.isascii() and value.isalpha()):
        raise ValueError("an ISO 3166-1 alpha-2 code such as 'DE'")
    return None if value is None else value.upper()


class CustomerUpdate(Input):
    name: str | None = Field(default=None, min_length=1, max_length=300)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    billing_address: Address | None = None
    currency: str | None = None
    timezone: str | None = None
    country: str | None = None
    tax_ids: list[TaxId] | None = Field(default=None, max_length=10)
    net_terms_days: int | None = Field(default=None, ge=0, le=365)
    parent_customer_id: ObjectId | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=50)

    _check_currency = field_validator("currency")(_currency)
    _check_timezone = field_validator("timezone")(_timezone)
    _check_country = field_validator("country")(_country)


class CustomerInput(CustomerUpdate):
    external_id: str = Field(min_length=1, max_length=255)
    name: str = Field(min_length=1, max_length=300)


def create_customer(uow: UnitOfWork, data: CustomerInput, *, now: datetime) -> CustomerRow:
    tenant = tenant_of(uow)
    if exists(lambda: uow.customers.get_by_external_id(data.external_id)):
        raise Conflict(
            f"a customer with external_id {data.external_id!r} exists",
            code=ErrorCode.ALREADY_EXISTS,
            field="body.external_id",
        )
    row = CustomerRow(
        external_id=data.external_id,
        name=data.name,
        currency=data.currency or tenant.default_currency,
        timezone=data.timezone or tenant.timezone,
        created_at=now,
    )
    _apply(uow, row, data, fields=data.model_fields_set - {"external_id", "currency", "timezone"})
    uow.customers.add(row)
    commit_unique(uow, f"customer {data.external_id}")
    if release_held(uow):  # events that arrived before their customer
        uow.commit()
    return row


def update_customer(uow: UnitOfWork, customer_id: str, data: CustomerUpdate) -> CustomerRow:
    row = uow.customers.get(customer_id)
    fields = set(data.model_fields_set)
    if "currency" in fields and data.currency != row.currency and _has_subscriptions(uow, row):
        raise ValidationFailed(
            [
                Problem(
                    ErrorCode.CURRENCY_MISMATCH,
                    "the currency of a customer with subscriptions cannot change",
                    "body.currency",
                )
            ]
        )
    _apply(uow, row, data, fields=fields)
    uow.commit()
    return row


def _has_subscriptions(uow: UnitOfWork, row: CustomerRow) -> bool:
    return uow.subscriptions.count(customer_id=row.id) > 0


def _apply(uow: UnitOfWork, row: CustomerRow, data: CustomerUpdate, *, fields: set[str]) -> None:
    for name in ("name", "email", "currency", "timezone", "country", "net_terms_days"):
        if name in fields:
            value = getattr(data, name)
            if value is None and name in ("name", "currency", "timezone"):
                raise ValidationFailed(
                    [Problem(ErrorCode.INVALID_VALUE, "cannot be null", f"body.{name}")]
                )
            setattr(row, name, value)
    if "billing_address" in fields:
        address = data.billing_address
        row.billing_address = {} if address is None else address.model_dump(exclude_none=True)
    if "tax_ids" in fields:
        row.tax_ids = [t.model_dump() for t in data.tax_ids or []]
    if "metadata" in fields:
        row.metadata_ = dict(data.metadata or {})
    if "parent_customer_id" in fields:
        row.parent_customer_id = _parent(uow, row, data.parent_customer_id)


def _parent(uow: UnitOfWork, row: CustomerRow, parent_id: str | None) -> str | None:
    """A parent in this tenant that does not make a cycle (consolidated billing)."""
    if parent_id is None:
        return None
    field = "body.parent_customer_id"
    seen = {row.id} if row.id else set()
    current: str | None = parent_id
    for _ in range(MAX_PARENT_DEPTH):
        if current is None:
            return parent_id
        if current in seen:
            raise ValidationFailed([Problem(ErrorCode.INVALID_VALUE, "a cycle of parents", field)])
        seen.add(current)
        parent = uow.customers.find(current)
        if parent is None:
            raise ValidationFailed(
                [Problem(ErrorCode.INVALID_VALUE, f"no customer {parent_id}", field)]
            )
        current = parent.parent_customer_id
    raise ValidationFailed(
        [Problem(ErrorCode.INVALID_VALUE, f"at most {MAX_PARENT_DEPTH} levels of parents", field)]
    )


# --- price overrides -------------------------------------------------------------------------


class OverridePrice(Input):
    """The price fields of a charge that an override may replace (decimals as strings)."""

    amount: ExactDecimal | None = None
    unit_price: ExactDecimal | None = None
    tiers: list[TierDoc] | None = Field(default=None, max_length=100)
    package_size: ExactDecimal | None = None
    package_rounding: QuantityRounding | None = None
    rate: ExactDecimal | None = None
    fixed_fee_per_event: ExactDecimal | None = None
    min_per_event: ExactDecimal | None = None
    max_per_event: ExactDecimal | None = None
    free_units: ExactDecimal | None = None
    minimum: ExactDecimal | None = None
    maximum: ExactDecimal | None = None


class OverrideInput(Input):
    plan_code: Code
    charge_code: Code
    price: OverridePrice


class Override(Protocol):
    """A price override: a stored per-customer row, or one held by a subscription."""

    @property
    def plan_code(self) -> str: ...
    @property
    def charge_code(self) -> str: ...
    @property
    def price(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class SubscriptionOverride:
    """An override that one subscription carries (on its start, in its timeline)."""

    plan_code: str
    charge_code: str
    price: dict[str, Any]


def apply_overrides(
    document: dict[str, Any], overrides: Sequence[Override]
) -> dict[str, Any] | None:
    """A copy of a plan document with ``overrides`` merged in, in order (a later one wins);
    None when none applies."""
    applicable = [o for o in overrides if o.plan_code == document.get("code")]
    if not applicable:
        return None
    merged = copy.deepcopy(document)
    for override in applicable:
        for charge in merged.get("charges", []):
            if charge.get("code") == override.charge_code:
                charge.update(override.price)
    return merged


def checked_override(uow: UnitOfWork, data: OverrideInput, field: str) -> SubscriptionOverride:
    """``data`` checked against the plan's latest version; problems name ``field``'s parts."""
    versions = uow.plan_versions.versions(data.plan_code)
    if not versions:
        raise ValidationFailed(
            [Problem(ErrorCode.INVALID_VALUE, f"no plan {data.plan_code}", f"{field}.plan_code")]
        )
    price = data.price.model_dump(mode="json", exclude_unset=True)
    override = SubscriptionOverride(data.plan_code, data.charge_code, price)
    latest = versions[-1].document
    codes = [c.get("code") for c in latest.get("charges", [])]
    if data.charge_code not in codes:
        raise ValidationFailed(
            [
                Problem(
                    ErrorCode.INVALID_VALUE,
                    f"plan {data.plan_code} has no charge {data.charge_code}",
                    f"{field}.charge_code",
                )
            ]
        )
    merged = apply_overrides(latest, [override])
    assert merged is not None
    try:
        load_plan(merged)
    except ValidationFailed as failed:
        where = f"charges[{codes.index(data.charge_code)}]"
        raise ValidationFailed(
            [
                Problem(p.code, p.message, (p.field or "").replace(where, f"{field}.price", 1))
                for p in failed.problems
            ]
        ) from None
    return override


def create_override(
    uow: UnitOfWork, customer_id: str, data: OverrideInput, *, now: datetime
) -> PriceOverrideRow:
    uow.customers.get(customer_id)
    checked = checked_override(uow, data, "body")
    existing = [
        o
        for o in uow.price_overrides.for_customer(customer_id)
        if (o.plan_code, o.charge_code) == (data.plan_code, data.charge_code)
    ]
    if existing:
        raise Conflict(
            f"an override of {data.plan_code}/{data.charge_code} exists; delete it first",
            code=ErrorCode.ALREADY_EXISTS,
        )
    row = PriceOverrideRow(
        customer_id=customer_id,
        plan_code=data.plan_code,
        charge_code=data.charge_code,
        price=checked.price,
        created_at=now,
    )
    uow.price_overrides.add(row)
    commit_unique(uow, "price override")
    return row


def delete_override(uow: UnitOfWork, override_id: str) -> None:
    uow.price_overrides.delete(uow.price_overrides.get(override_id))
    uow.commit()
