"""The catalog as values: plans, charges, tiers, entitlements and commitments.

Pricing is data. A plan document (JSON or YAML, see `services/plan_documents.py`) is validated and
turned into these frozen values; the pricing models in `core/pricing/` and invoice assembly in
`core/invoicing.py` only ever read them.

    >>> from ratecard.core.money import D
    >>> api = Charge(
    ...     code="api_calls", model=ChargeModel.VOLUME, source=QuantitySource.METER,
    ...     meter_code="api_calls", timing=BillingTiming.IN_ARREARS,
    ...     price=PriceSpec(tiers=(Tier(D("100000"), D("0.0005")), Tier(None, D("0.0003")))),
    ... )

Tier bounds: `up_to` is inclusive (Stripe) and a tier holds the units above the previous tier's
`up_to`, so integer tiers 1–5, 6–10 and Lago's adjacent decimal ranges 0–0.1, 0.1–1 are both
`up_to=5, up_to=10` / `up_to=0.1, up_to=1`. The last tier has `up_to=None` (unbounded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from ratecard.core.periods import Interval


class ChargeModel(StrEnum):
    FLAT = "flat"
    PER_UNIT = "per_unit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"
    STAIRCASE = "staircase"
    PERCENTAGE = "percentage"
    GRADUATED_PERCENTAGE = "graduated_percentage"


class BillingTiming(StrEnum):
    IN_ADVANCE = "in_advance"
    IN_ARREARS = "in_arrears"


class QuantitySource(StrEnum):
    METER = "meter"  # aggregated usage of `meter_code` over the period
    SEATS = "seats"  # the subscription's quantity
    FIXED = "fixed"  # `fixed_quantity` (1 by default)


class QuantityRounding(StrEnum):
    UP = "up"
    DOWN = "down"
    NEAREST = "nearest"  # half-up


@dataclass(frozen=True, slots=True)
class Transform:
    """Divide the raw quantity before pricing, e.g. minutes into started hours."""

    divide_by: Decimal
    rounding: QuantityRounding = QuantityRounding.UP

    def __post_init__(self) -> None:
        assert self.divide_by > 0


@dataclass(frozen=True, slots=True)
class Tier:
    """One band of a tier table. `up_to` inclusive, None for the last (unbounded) tier.

    `unit_price` is per unit for graduated/volume, unused for staircase; `flat_fee` is charged once
    when the tier is reached (graduated) or when it holds the quantity (volume, staircase);
    `rate` is a percent (1.5 means 1.5 %) for graduated_percentage.
    """

    up_to: Decimal | None
    unit_price: Decimal = Decimal(0)
    flat_fee: Decimal = Decimal(0)
    rate: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class PriceSpec:
    """The numbers of a charge. Which fields apply depends on the model:

    - flat: `amount` per period
    - per_unit: `unit_price`
    - graduated / volume / staircase / graduated_percentage: `tiers`
    - package: `amount` per started (or completed, by `package_rounding`) `package_size`
    - percentage: `rate` (percent), `fixed_fee_per_event`, `min_per_event`, `max_per_event`,
      `free_events`, `free_amount`

    Common to all: `free_units` (subtracted before pricing), `transform`, and a per-period
    `minimum_amount` / `maximum_amount` for the charge.
    """

    amount: Decimal | None = None
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    package_rounding: QuantityRounding = QuantityRounding.UP
    rate: Decimal | None = None
    fixed_fee_per_event: Decimal | None = None
    min_per_event: Decimal | None = None
    max_per_event: Decimal | None = None
    free_units: Decimal = Decimal(0)
    free_events: int = 0
    free_amount: Decimal = Decimal(0)
    transform: Transform | None = None
    minimum_amount: Decimal | None = None
    maximum_amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    code: str
    model: ChargeModel
    price: PriceSpec
    source: QuantitySource = QuantitySource.FIXED
    meter_code: str | None = None
    fixed_quantity: Decimal = Decimal(1)
    timing: BillingTiming = BillingTiming.IN_ADVANCE
    prorate: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        assert (self.source is QuantitySource.METER) == (self.meter_code is not None), self.code


class EntitlementKind(StrEnum):
    BOOLEAN = "boolean"
    LIMIT = "limit"
    METERED = "metered"


class ExceedAction(StrEnum):
    DENY = "deny"  # hard limit
    ALLOW_AND_NOTIFY = "allow_and_notify"  # soft limit
    THROTTLE_AND_NOTIFY = "throttle_and_notify"


@dataclass(frozen=True, slots=True)
class Entitlement:
    feature: str
    kind: EntitlementKind
    enabled: bool = True
    limit: Decimal | None = None
    meter_code: str | None = None
    on_exceed: ExceedAction = ExceedAction.DENY
    fail_open: bool = True  # when the entitlement store is unreachable


@dataclass(frozen=True, slots=True)
class Commitment:
    """A minimum spend per billing period, trued up on the invoice."""

    minimum_amount: Decimal
    prorate: bool = True


@dataclass(frozen=True, slots=True)
class Plan:
    code: str
    currency: str
    interval: Interval
    charges: tuple[Charge, ...]
    name: str = ""
    version: int = 1
    trial_days: int = 0
    entitlements: tuple[Entitlement, ...] = ()
    commitments: tuple[Commitment, ...] = ()
    metadata: tuple[tuple[str, str], ...] = field(default=())

    def charge(self, code: str) -> Charge:
        for charge in self.charges:
            if charge.code == code:
                return charge
        raise KeyError(code)
