"""Tax math: exclusive and inclusive tax, line- or invoice-level rounding, VAT decisions.

Worked example — three lines of 6.99 EUR at 20% VAT (exclusive), rounded half-up::

    >>> from ratecard.core.money import currency
    >>> eur = currency("EUR")
    >>> vat = TaxRate("VAT-FR", "France VAT", D("20"))
    >>> lines, half_up = [Money(699, eur)] * 3, RoundingMode.HALF_UP
    >>> [t.amount_minor for t in tax_lines(lines, [vat] * 3, TaxRounding.LINE, half_up).taxes]
    [140, 140, 140]
    >>> tax_lines(lines, [vat] * 3, TaxRounding.INVOICE, half_up).total.amount_minor
    419

Line-level rounding rounds each line's tax (1.398 -> 1.40, total 4.20); invoice-level rounding
rounds the sum of exact taxes once per rate (4.194 -> 4.19) and spreads it back over the lines so
the per-line taxes still sum to the total. Both are in use; the caller chooses.

Inclusive rates: the price already holds the tax, `tax = price - price / (1 + rate)`
(600.00 at 10% inclusive -> tax 54.55, net 545.45); exclusive rates add `price x rate`.

`decide_vat()` is the EU VAT place-of-supply decision for B2B and B2C sales (reverse charge, OSS,
outside scope) over the built-in table of standard rates; it returns the rate and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.core.money import (
    Currency,
    D,
    Money,
    RoundingMode,
    quantize,
    round_to_minor,
)

__all__ = [
    "BUILTIN_RATES",
    "EU_MEMBER_STATES",
    "RateEntry",
    "TaxDecision",
    "TaxLines",
    "TaxRate",
    "TaxRounding",
    "TaxTreatment",
    "TaxedAmount",
    "credit_note_tax",
    "decide_vat",
    "exact_tax_minor",
    "round_line",
    "round_minor",
    "standard_rate",
    "stripe_amount_minor",
    "tax_amount",
    "tax_lines",
]


@dataclass(frozen=True, slots=True)
class TaxRate:
    """A named tax rate in percent (`D("20")` is 20%); `inclusive` when prices hold the tax."""

    code: str
    name: str
    rate_percent: Decimal
    inclusive: bool = False

    def __post_init__(self) -> None:
        assert self.code, "a tax rate needs a code"
        assert isinstance(self.rate_percent, Decimal), self.rate_percent
        if not D(0) <= self.rate_percent <= D(100):
            raise RatecardError(
                f"tax rate {self.rate_percent}% is outside 0..100", code=ErrorCode.INVALID_VALUE
            )

    @property
    def ratio(self) -> Fraction:
        return Fraction(self.rate_percent) / 100


class TaxRounding(StrEnum):
    LINE = "line"  # round each line's tax, total = sum of rounded lines
    INVOICE = "invoice"  # round the sum of exact taxes once per rate


def round_minor(exact_minor: Fraction, mode: RoundingMode) -> int:
    """Round an exact count of minor units to an integer with an explicit mode."""
    return int(quantize(exact_minor, 0, mode))


def exact_tax_minor(amount_minor: int, rate: TaxRate) -> Fraction:
    """The unrounded tax in minor units: `a x r` exclusive, `a - a / (1 + r)` inclusive."""
    if rate.inclusive:
        return amount_minor - amount_minor / (1 + rate.ratio)
    return amount_minor * rate.ratio


@dataclass(frozen=True, slots=True)
class TaxedAmount:
    net: Money
    tax: Money
    gross: Money

    def __post_init__(self) -> None:
        assert self.net + self.tax == self.gross


def tax_amount(amount: Money, rate: TaxRate, mode: RoundingMode) -> TaxedAmount:
    """Tax of one amount: exclusive adds to the amount, inclusive is carved out of it."""
    tax = Money(round_minor(exact_tax_minor(amount.amount_minor, rate), mode), amount.currency)
    if rate.inclusive:
        return TaxedAmount(net=amount - tax, tax=tax, gross=amount)
    return TaxedAmount(net=amount, tax=tax, gross=amount + tax)


@dataclass(frozen=True, slots=True)
class TaxLines:
    """Per-line taxes and their total; `exact` keeps the unrounded minor units for display."""

    taxes: tuple[Money, ...]
    exact: tuple[Fraction, ...]
    total: Money

    def __post_init__(self) -> None:
        assert sum(t.amount_minor for t in self.taxes) == self.total.amount_minor


def tax_lines(
    amounts: Sequence[Money],
    rates: Sequence[TaxRate | None],
    rounding: TaxRounding,
    mode: RoundingMode,
) -> TaxLines:
    """Tax each line (a `None` rate is untaxed) with line- or invoice-level rounding."""
    assert amounts and len(amounts) == len(rates)
    cur = amounts[0].currency
    exact = [
        Fraction(0) if rate is None else exact_tax_minor(a.amount_minor, rate)
        for a, rate in zip(amounts, rates, strict=True)
    ]
    rounded = [round_minor(e, mode) for e in exact]
    if rounding is TaxRounding.INVOICE:
        groups: dict[TaxRate, list[int]] = {}
        for i, rate in enumerate(rates):
            if rate is not None:
                groups.setdefault(rate, []).append(i)
        for members in groups.values():
            group_total = round_minor(sum((exact[i] for i in members), Fraction(0)), mode)
            _spread(group_total, members, exact, rounded)
    taxes = tuple(Money(r, cur) for r in rounded)
    return TaxLines(taxes, tuple(exact), Money(sum(rounded), cur))


def _spread(target: int, members: list[int], exact: list[Fraction], rounded: list[int]) -> None:
    """Nudge line-rounded taxes by a cent at a time, where rounding moved them most."""
    diff = target - sum(rounded[i] for i in members)
    step = 1 if diff > 0 else -1
    by_residual = sorted(members, key=lambda i: (-step * (exact[i] - rounded[i]), i))
    assert abs(diff) <= len(members)
    for i in by_residual[: abs(diff)]:
        rounded[i] += step
    assert sum(rounded[i] for i in members) == target


def credit_note_tax(
    credited: Sequence[Money],
    rates: Sequence[TaxRate | None],
    rounding: TaxRounding,
    mode: RoundingMode,
) -> TaxLines:
    """Tax on credited items: the credited pre-tax amounts taxed at the invoice's rates.

    Credit note amounts are positive (the note reverses them); Lago rounds each credited
    item's tax half-up: 193.33 at 25% -> 48.3325 -> 48.33.
    """
    assert all(c.amount_minor >= 0 for c in credited), "credited amounts are positive"
    return tax_lines(credited, rates, rounding, mode)


# --- line rounding options ---------------------------------------------------------------


def round_line(
    value: Decimal | Fraction, cur: Currency, mode: RoundingMode, *, minimum_charge: bool
) -> int:
    """Round a line amount (major units) to minor units; with `minimum_charge` a positive
    amount below one minor unit becomes one minor unit (0.001 USD -> 0.01, ComputeNext)."""
    minor = round_to_minor(value, cur, mode)
    if minimum_charge and minor == 0 and value > 0:
        return 1
    return minor


def stripe_amount_minor(amount: Money, mode: RoundingMode) -> int:
    """The amount Stripe accepts: three-decimal currencies need a multiple of ten minor units
    (5.124 KWD -> 5120 half-up); other currencies pass unchanged."""
    if amount.currency.exponent != 3:
        return amount.amount_minor
    return round_minor(Fraction(amount.amount_minor, 10), mode) * 10


# --- built-in standard rates ---------------------------------------------------------------

#: EU member states by ISO 3166-1 alpha-2 code (Greece is GR here, EL in VAT ids).
EU_MEMBER_STATES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)


@dataclass(frozen=True, slots=True)
class RateEntry:
    """A country's standard rate from `effective_on`; the table keeps no history before it."""

    country: str
    rate: TaxRate
    effective_on: date


_TRACKED_FROM = date(2000, 1, 1)  # "as far back as this table knows", not a legal date
_STANDARD: tuple[tuple[str, str, str, str, date], ...] = (
    # country, tax name, rate percent, scheme, effective from
    ("AT", "Austria", "20", "VAT", _TRACKED_FROM),
    ("BE", "Belgium", "21", "VAT", _TRACKED_FROM),
    ("BG", "Bulgaria", "20", "VAT", _TRACKED_FROM),
    ("CY", "Cyprus", "19", "VAT", _TRACKED_FROM),
    ("CZ", "Czechia", "21", "VAT", _TRACKED_FROM),
    ("DE", "Germany", "19", "VAT", _TRACKED_FROM),
    ("DK", "Denmark", "25", "VAT", _TRACKED_FROM),
    ("EE", "Estonia", "22", "VAT", _TRACKED_FROM),
    ("EE", "Estonia", "24", "VAT", date(2025, 7, 1)),
    ("ES", "Spain", "21", "VAT", _TRACKED_FROM),
    ("FI", "Finland", "24", "VAT", _TRACKED_FROM),
    ("FI", "Finland", "25.5", "VAT", date(2024, 9, 1)),
    ("FR", "France", "20", "VAT", _TRACKED_FROM),
    ("GR", "Greece", "24", "VAT", _TRACKED_FROM),
    ("HR", "Croatia", "25", "VAT", _TRACKED_FROM),
    ("HU", "Hungary", "27", "VAT", _TRACKED_FROM),
    ("IE", "Ireland", "23", "VAT", _TRACKED_FROM),
    ("IT", "Italy", "22", "VAT", _TRACKED_FROM),
    ("LT", "Lithuania", "21", "VAT", _TRACKED_FROM),
    ("LU", "Luxembourg", "17", "VAT", _TRACKED_FROM),
    ("LV", "Latvia", "21", "VAT", _TRACKED_FROM),
    ("MT", "Malta", "18", "VAT", _TRACKED_FROM),
    ("NL", "Netherlands", "21", "VAT", _TRACKED_FROM),
    ("PL", "Poland", "23", "VAT", _TRACKED_FROM),
    ("PT", "Portugal", "23", "VAT", _TRACKED_FROM),
    ("RO", "Romania", "19", "VAT", _TRACKED_FROM),
    ("RO", "Romania", "21", "VAT", date(2025, 8, 1)),
    ("SE", "Sweden", "25", "VAT", _TRACKED_FROM),
    ("SI", "Slovenia", "22", "VAT", _TRACKED_FROM),
    ("SK", "Slovakia", "20", "VAT", _TRACKED_FROM),
    ("SK", "Slovakia", "23", "VAT", date(2025, 1, 1)),
    ("GB", "United Kingdom", "20", "VAT", _TRACKED_FROM),
    ("NO", "Norway", "25", "VAT", _TRACKED_FROM),
    ("CH", "Switzerland", "7.7", "VAT", _TRACKED_FROM),
    ("CH", "Switzerland", "8.1", "VAT", date(2024, 1, 1)),
    ("AU", "Australia", "10", "GST", _TRACKED_FROM),
    ("NZ", "New Zealand", "15", "GST", _TRACKED_FROM),
    ("CA", "Canada", "5", "GST", _TRACKED_FROM),  # federal GST only; HST/PST are configured
    ("JP", "Japan", "10", "JCT", _TRACKED_FROM),
    ("US", "United States", "0", "sales tax", _TRACKED_FROM),  # 0 unless configured
)

BUILTIN_RATES: tuple[RateEntry, ...] = tuple(
    RateEntry(c, TaxRate(f"{scheme}-{c}-STD".replace(" ", "_"), f"{n} {scheme}", D(r)), since)
    for c, n, r, scheme, since in _STANDARD
)


def standard_rate(
    country: str, on: date, overrides: Mapping[str, TaxRate] | None = None
) -> TaxRate:
    """The standard rate of `country` on date `on`; a tenant's `overrides` win."""
    code = country.strip().upper()
    if overrides and code in overrides:
        return overrides[code]
    current = [e for e in BUILTIN_RATES if e.country == code and e.effective_on <= on]
    if not current:
        raise RatecardError(
            f"no tax rate for country {country!r} on {on.isoformat()}",
            code=ErrorCode.UNKNOWN_TAX_JURISDICTION,
            field="country",
        )
    return max(current, key=lambda e: e.effective_on).rate


class TaxTreatment(StrEnum):
    DOMESTIC = "domestic"  # seller and buyer in the same country
    REVERSE_CHARGE = "reverse_charge"  # EU B2B cross-border: the buyer accounts for VAT
    OSS = "oss"  # EU B2C cross-border: buyer country's rate, declared via One-Stop Shop
    OUTSIDE_SCOPE = "outside_scope"  # place of supply outside the seller's tax territory


@dataclass(frozen=True, slots=True)
class TaxDecision:
    rate: TaxRate
    treatment: TaxTreatment
    note: str


REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT to be accounted for by the recipient (Art. 196 VAT Directive)"
)
OUTSIDE_SCOPE_NOTE = "Outside the scope of {seller} VAT: place of supply is {buyer}"


def decide_vat(
    *,
    seller_country: str,
    buyer_country: str,
    buyer_vat_id: str | None,
    on: date,
    overrides: Mapping[str, TaxRate] | None = None,
) -> TaxDecision:
    """Which rate applies to a sale of services, and why (EU place-of-supply rules).

    - same country: the domestic standard rate;
    - seller in the EU, buyer in another EU state with a VAT id: 0% reverse charge;
    - seller in the EU, consumer in another EU state: the buyer country's rate (OSS; the
      EUR 10,000 micro-business threshold is not applied);
    - buyer outside the seller's territory otherwise: 0% outside scope.

    The VAT id is taken as given: validating it (VIES, checksums) is an adapter's job.
    """
    seller, buyer = seller_country.strip().upper(), buyer_country.strip().upper()
    if seller == buyer:
        rate = standard_rate(seller, on, overrides)
        return TaxDecision(rate, TaxTreatment.DOMESTIC, f"{rate.name} {rate.rate_percent}%")
    both_eu = seller in EU_MEMBER_STATES and buyer in EU_MEMBER_STATES
    if both_eu and buyer_vat_id and buyer_vat_id.strip():
        zero = TaxRate(f"VAT-{buyer}-RC", f"{buyer} reverse charge", D(0))
        return TaxDecision(zero, TaxTreatment.REVERSE_CHARGE, REVERSE_CHARGE_NOTE)
    if both_eu:
        rate = standard_rate(buyer, on, overrides)
        note = f"{rate.name} {rate.rate_percent}% (OSS, consumer in {buyer})"
        return TaxDecision(rate, TaxTreatment.OSS, note)
    zero = TaxRate(f"NONE-{buyer}", "outside scope", D(0))
    note = OUTSIDE_SCOPE_NOTE.format(seller=seller, buyer=buyer)
    return TaxDecision(zero, TaxTreatment.OUTSIDE_SCOPE, note)
