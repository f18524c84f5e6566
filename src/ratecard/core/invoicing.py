"""Invoice values and line assembly: every line rounded once, with its breakdown.

A line is the unit of rounding (DESIGN.md): its exact amount is computed from the charge model,
the proration fraction and the quantity, then rounded once with the tenant's mode. The breakdown
keeps every step visible::

    >>> from ratecard.core.money import currency, RoundingMode, D
    >>> line = make_line(
    ...     kind=LineKind.CHARGE, description="Pro plan", charge_code="base",
    ...     exact=D("100") * 17 / 31, currency=currency("USD"), mode=RoundingMode.HALF_UP,
    ...     period=None, quantity=D("1"),
    ... )
    >>> line.amount.format(), line.rounding.exact[:10]
    ('54.84', '54.8387096')

Totals are sums of rounded lines; discounts, tax and credits are applied by
`core.discounts.compute_totals` in the tenant's order of operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from ratecard.core.money import Currency, Money, RoundingMode, quantize, to_decimal
from ratecard.core.periods import Period


class LineKind(StrEnum):
    CHARGE = "charge"  # a fee for a period (in advance or in arrears)
    USAGE = "usage"  # a metered charge
    PRORATION_CREDIT = "proration_credit"  # unused time of what was billed
    PRORATION_DEBIT = "proration_debit"  # remaining time of what replaced it
    COMMITMENT_TRUE_UP = "commitment_true_up"
    ADJUSTMENT = "adjustment"


@dataclass(frozen=True, slots=True)
class Rounding:
    """How a line's exact amount became its amount."""

    exact: str
    mode: RoundingMode
    rounded: str


@dataclass(frozen=True, slots=True)
class ProrationInfo:
    fraction: Fraction
    used: str  # e.g. "17 days" or "864000 s"
    of: str  # e.g. "31 days"
    convention: str


@dataclass(frozen=True, slots=True)
class TierUse:
    description: str
    quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    kind: LineKind
    description: str
    charge_code: str | None
    amount: Money
    quantity: Decimal
    unit_price: Decimal | None = None
    period: Period | None = None
    plan_code: str | None = None
    plan_version: int | None = None
    tiers: tuple[TierUse, ...] = ()
    proration: ProrationInfo | None = None
    rounding: Rounding | None = None
    discount: Money | None = None
    tax: Money | None = None
    tax_rate_percent: Decimal | None = None


def make_line(
    *,
    kind: LineKind,
    description: str,
    charge_code: str | None,
    exact: Decimal | Fraction,
    currency: Currency,
    mode: RoundingMode,
    period: Period | None,
    quantity: Decimal,
    unit_price: Decimal | None = None,
    plan_code: str | None = None,
    plan_version: int | None = None,
    tiers: tuple[TierUse, ...] = (),
    proration: ProrationInfo | None = None,
) -> InvoiceLine:
    """Round the exact amount once, in the named mode, and keep how it was done."""
    rounded = quantize(exact, currency.exponent, mode)
    amount = Money(int(rounded.scaleb(currency.exponent)), currency)
    exact_text = _exact_text(exact)
    return InvoiceLine(
        kind=kind,
        description=description,
        charge_code=charge_code,
        amount=amount,
        quantity=quantity,
        unit_price=unit_price,
        period=period,
        plan_code=plan_code,
        plan_version=plan_version,
        tiers=tiers,
        proration=proration,
        rounding=Rounding(exact_text, mode, amount.format()),
    )


def _exact_text(value: Decimal | Fraction) -> str:
    if isinstance(value, Fraction):
        as_decimal = to_decimal(value)
        text = format(as_decimal.normalize(), "f")
        if Fraction(as_decimal) != value:
            # A repeating decimal: show 20 places and say so.
            text = f"{quantize(value, 20, RoundingMode.DOWN).normalize():f}…"
        return text
    return format(value.normalize(), "f") if value != 0 else "0"


class InvoiceReason(StrEnum):
    SUBSCRIPTION_START = "subscription_start"
    SUBSCRIPTION_CYCLE = "subscription_cycle"
    SUBSCRIPTION_CHANGE = "subscription_change"
    SUBSCRIPTION_END = "subscription_end"


@dataclass(frozen=True, slots=True)
class InvoiceTotalsView:
    subtotal: Money
    discount: Money
    taxable: Money
    tax: Money
    total: Money
    credit_notes_applied: Money
    prepaid_applied: Money
    amount_due: Money


@dataclass(frozen=True, slots=True)
class Invoice:
    number: str
    customer_id: str
    subscription_id: str
    currency: Currency
    issued_at: datetime
    reason: InvoiceReason
    period: Period | None
    lines: tuple[InvoiceLine, ...]
    totals: InvoiceTotalsView
    notes: tuple[str, ...] = field(default=())
    timezone: str = "UTC"  # the customer's: where the invoice's dates are read
