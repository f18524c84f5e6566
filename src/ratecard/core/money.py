"""Money: integer minor units with an ISO 4217 currency, exact decimals, explicit rounding.

Worked example — 17 of 31 days of a 100.00 USD plan, rounded once, half-up::

    >>> usd = currency("USD")
    >>> from fractions import Fraction
    >>> Money.from_decimal(D("100") * Decimal(17) / Decimal(31), usd, RoundingMode.HALF_UP)
    Money(amount_minor=5484, currency=Currency(code='USD', exponent=2))
    >>> str(_)
    '54.84 USD'

Rules held here:
- an *amount* is an `int` of minor units plus a `Currency`; unit prices and quantities that need
  more places are `Decimal` (at most `MAX_PRICE_PLACES` places); ratios are `Fraction`;
- rounding always names its mode; there is no implicit default anywhere in `core/`;
- `allocate()` splits an amount by weights with largest remainders and the parts always sum to
  the whole;
- floats are refused at the door (`D(0.1)` raises).
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from ratecard.core.errors import ErrorCode, RatecardError

MAX_PRICE_PLACES = 12
# Enough precision for 12-place prices times 18-digit quantities without inexact results.
_CONTEXT = decimal.Context(
    prec=60, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.FloatOperation]
)

_ZERO_EXPONENT = ("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF").split()
_THREE_EXPONENT = ("BHD IQD JOD KWD LYD OMR TND").split()
_FOUR_EXPONENT = ("CLF UYW").split()
_TWO_EXPONENT = (
    "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR "
    "FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR "
    "KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV "
    "MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR "
    "SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH "
    "USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
).split()

#: Every active ISO 4217 currency code and its exponent (digits after the decimal point).
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO_EXPONENT, 2),
    **dict.fromkeys(_ZERO_EXPONENT, 0),
    **dict.fromkeys(_THREE_EXPONENT, 3),
    **dict.fromkeys(_FOUR_EXPONENT, 4),
}


class RoundingMode(StrEnum):
    """How to round; always passed explicitly. Half-up is the billing default."""

    HALF_UP = "half_up"  # ties away from zero
    HALF_EVEN = "half_even"  # banker's rounding, used by some tax engines
    HALF_DOWN = "half_down"
    UP = "up"  # away from zero
    DOWN = "down"  # towards zero (truncate)
    CEILING = "ceiling"
    FLOOR = "floor"

    @property
    def decimal_mode(self) -> str:
        return _DECIMAL_MODES[self]


_DECIMAL_MODES = {
    RoundingMode.HALF_UP: decimal.ROUND_HALF_UP,
    RoundingMode.HALF_EVEN: decimal.ROUND_HALF_EVEN,
    RoundingMode.HALF_DOWN: decimal.ROUND_HALF_DOWN,
    RoundingMode.UP: decimal.ROUND_UP,
    RoundingMode.DOWN: decimal.ROUND_DOWN,
    RoundingMode.CEILING: decimal.ROUND_CEILING,
    RoundingMode.FLOOR: decimal.ROUND_FLOOR,
}


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    exponent: int

    def __post_init__(self) -> None:
        assert len(self.code) == 3 and self.code.isupper(), self.code
        assert 0 <= self.exponent <= 4, self.exponent

    @property
    def quantum(self) -> Decimal:
        """The smallest unit as a Decimal: 0.01 for USD, 1 for JPY, 0.001 for KWD."""
        return Decimal(1).scaleb(-self.exponent)


def currency(code: str) -> Currency:
    """Look up an active ISO 4217 currency by code (case-insensitive)."""
    upper = code.strip().upper() if isinstance(code, str) else ""
    if upper not in CURRENCY_EXPONENTS:
        raise RatecardError(f"unknown currency {code!r}", code=ErrorCode.UNKNOWN_CURRENCY)
    return Currency(upper, CURRENCY_EXPONENTS[upper])


def D(value: str | int | Decimal) -> Decimal:
    """Parse an exact decimal. Floats are refused: `D(0.1)` is a bug, `D("0.1")` is not."""
    if isinstance(value, bool | float):
        raise RatecardError(
            f"floats are not accepted for exact values: {value!r}; pass a decimal string",
            code=ErrorCode.FLOAT_NOT_ALLOWED,
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise RatecardError(
                f"not a decimal number: {value!r}", code=ErrorCode.INVALID_VALUE
            ) from None
    else:
        raise RatecardError(f"not a decimal number: {value!r}", code=ErrorCode.INVALID_TYPE)
    if not result.is_finite():
        raise RatecardError(f"not a finite number: {value!r}", code=ErrorCode.INVALID_VALUE)
    return result


def to_decimal(value: Fraction | Decimal | int) -> Decimal:
    """An exact Decimal for a Fraction whose denominator divides a power of ten, else 60 digits."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    return _CONTEXT.divide(Decimal(value.numerator), Decimal(value.denominator))


def quantize(value: Decimal | Fraction | int, places: int, mode: RoundingMode) -> Decimal:
    """Round to `places` digits after the point with an explicit mode.

    Fractions are rounded exactly (no intermediate decimal), so 1/3 and 2/3 round correctly.
    """
    if isinstance(value, Fraction):
        return _round_fraction(value, places, mode)
    exp = Decimal(1).scaleb(-places)
    return Decimal(value).quantize(exp, rounding=mode.decimal_mode, context=_CONTEXT)


def _round_fraction(value: Fraction, places: int, mode: RoundingMode) -> Decimal:
    scaled = value * (10**places)
    floor = scaled.numerator // scaled.denominator
    remainder = scaled - floor
    if remainder == 0:
        units = floor
    else:
        half = Fraction(1, 2)
        negative = scaled < 0
        away = floor + 1 if not negative else floor  # magnitude grows
        towards = floor if not negative else floor + 1
        frac_mag = remainder if not negative else 1 - remainder  # distance from towards-zero
        if mode is RoundingMode.UP:
            units = away
        elif mode is RoundingMode.DOWN:
            units = towards
        elif mode is RoundingMode.CEILING:
            units = floor + 1
        elif mode is RoundingMode.FLOOR:
            units = floor
        elif frac_mag > half:
            units = away
        elif frac_mag < half:
            units = towards
        elif mode is RoundingMode.HALF_UP:
            units = away
        elif mode is RoundingMode.HALF_DOWN:
            units = towards
        else:  # HALF_EVEN
            units = floor if floor % 2 == 0 else floor + 1
    return Decimal(units).scaleb(-places)


def round_to_minor(value: Decimal | Fraction | int, cur: Currency, mode: RoundingMode) -> int:
    """Round a major-unit amount to an integer count of minor units."""
    q = quantize(value, cur.exponent, mode)
    minor = q.scaleb(cur.exponent)
    assert minor == minor.to_integral_value()
    return int(minor)


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An amount of a currency in integer minor units."""

    amount_minor: int
    currency: Currency

    def __post_init__(self) -> None:
        assert isinstance(self.amount_minor, int) and not isinstance(self.amount_minor, bool)

    @classmethod
    def zero(cls, cur: Currency) -> Money:
        return cls(0, cur)

    @classmethod
    def from_decimal(
        cls, value: Decimal | Fraction | int, cur: Currency, mode: RoundingMode
    ) -> Money:
        return cls(round_to_minor(value, cur, mode), cur)

    @classmethod
    def parse(cls, text: str, cur: Currency) -> Money:
        """Parse an exact amount string; more places than the currency allows is an error."""
        value = D(text)
        if value != value.quantize(cur.quantum, context=_CONTEXT):
            raise RatecardError(
                f"{text!r} has more than {cur.exponent} decimal places for {cur.code}",
                code=ErrorCode.INVALID_VALUE,
            )
        return cls(round_to_minor(value, cur, RoundingMode.HALF_UP), cur)

    def to_decimal(self) -> Decimal:
        return Decimal(self.amount_minor).scaleb(-self.currency.exponent)

    def format(self) -> str:
        """The amount as a plain decimal string with exactly the currency's places."""
        return f"{self.to_decimal():.{self.currency.exponent}f}"

    def __str__(self) -> str:
        return f"{self.format()} {self.currency.code}"

    def _check(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise RatecardError(
                f"currency mismatch: {self.currency.code} and {other.currency.code}",
                code=ErrorCode.CURRENCY_MISMATCH,
            )

    def __add__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        self._check(other)
        return self.amount_minor <= other.amount_minor

    def __gt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount_minor > other.amount_minor

    def __ge__(self, other: Money) -> bool:
        self._check(other)
        return self.amount_minor >= other.amount_minor

    def is_zero(self) -> bool:
        return self.amount_minor == 0


def total(amounts: Sequence[Money], cur: Currency) -> Money:
    """Sum of amounts of one currency (an empty sum is zero of `cur`)."""
    result = Money.zero(cur)
    for amount in amounts:
        result = result + amount
    return result


def allocate(total_minor: int, weights: Sequence[int | Decimal | Fraction]) -> list[int]:
    """Split `total_minor` in proportion to `weights` by largest remainder.

    The parts always sum to the total; ties in the remainders go to the earliest weight.
    A negative total is split as the negation of splitting its magnitude.

    >>> allocate(12, [200, 100])
    [8, 4]
    >>> allocate(100, [1, 1, 1])
    [34, 33, 33]
    """
    assert weights, "allocate needs at least one weight"
    fractions = [Fraction(w) for w in weights]
    assert all(f >= 0 for f in fractions), "weights must not be negative"
    weight_sum = sum(fractions, Fraction(0))
    if total_minor < 0:
        return [-part for part in allocate(-total_minor, weights)]
    if weight_sum == 0:
        # Nothing to weigh by: split evenly.
        fractions = [Fraction(1)] * len(fractions)
        weight_sum = Fraction(len(fractions))
    exact = [total_minor * f / weight_sum for f in fractions]
    parts = [int(e.numerator // e.denominator) for e in exact]
    short = total_minor - sum(parts)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:short]:
        parts[i] += 1
    assert sum(parts) == total_minor
    return parts
